"""One identity and cache for trained artefacts (``graft_core.runtime.artefacts``): teacher, PixArt teacher, classifier."""
from __future__ import annotations

import json

import pytest

from graft_core.runtime.artefacts import TrainedArtefact
from graft_core.runtime.cache import sha256_file
from graft_core.config import stable_hash
from graft_core.errors import MissingWeightsError
from graft_core.presets import get_preset


def test_the_three_artefacts_keep_their_published_keys():
    """The keys name shipped assets and enter run ids: config + training data, or the config alone when it names a
    pretrained checkpoint (the formula each module had before they shared one)."""
    from graft_core.metrics.classifier import CLASSIFIER
    from graft_core.text_to_image.pixart import PIXART, pixart_config
    from graft_core.models.teacher_id import TEACHER

    tiny, paper = get_preset("tiny"), get_preset("paper")
    assert TEACHER.key(tiny.teacher, tiny.data) == stable_hash({"teacher": tiny.teacher, "data": tiny.data})
    assert TEACHER.key(paper.teacher, paper.data) == stable_hash({"teacher": paper.teacher})
    pix = pixart_config(tiny)
    assert PIXART.key(pix, tiny.data) == stable_hash({"pixart": pix, "data": tiny.data})
    assert CLASSIFIER.key(tiny.classifier, tiny.data) == stable_hash({"classifier": tiny.classifier,
                                                                        "data": tiny.data})
    for artefact in (TEACHER, PIXART, CLASSIFIER):  # the shipped tiny artefacts are found under those keys
        cfg = pixart_config(tiny) if artefact is PIXART else getattr(tiny, artefact.name)
        found = artefact.find(artefact.key(cfg, tiny.data))
        assert found is not None and "assets" in found.parts, artefact.kind


def test_found_trained_once_refused_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAFTBENCH_CACHE", str(tmp_path / "cache"))
    art = TrainedArtefact(kind="things", name="thing", weights_file="w.bin", meta_file="thing.json", what="thing",
                          command="graft_core.thing")
    key = art.key({"a": 1}, {"d": 2})
    assert art.find(key) is None
    with pytest.raises(MissingWeightsError, match="no trained thing .*; run `python -m graft_core.thing --preset p`"):
        art.folder(key, lambda tmp: None, preset="p", train_if_missing=False)
    builds = []

    def build(tmp):
        builds.append(tmp)
        (tmp / "w.bin").write_bytes(b"weights")
        (tmp / "thing.json").write_text(json.dumps({"sha256": sha256_file(tmp / "w.bin")}))

    folder = art.folder(key, build, preset="p")
    assert art.folder(key, build, preset="p") == folder == art.find(key) and len(builds) == 1
    assert art.verified_meta(folder)["sha256"] == sha256_file(folder / "w.bin")
    (folder / "w.bin").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="corrupt"):
        art.verified_meta(folder)
    (folder / "thing.json").write_text("{")
    with pytest.raises(ValueError, match="thing.json is not valid JSON.*to retrain the thing"):
        art.read_meta(folder)
