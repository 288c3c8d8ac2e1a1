"""``graft_core.text_to_image.text.geneval_score`` end to end against the GenEval-structured checkout of
``benchmark.fakes.prerequisites.make_geneval``: GenEval's folder layout, its evaluator's CLI in a subprocess, the summary. The
fake evaluator's detector is a fixed rule (mean intensity above a threshold), so the score is known in advance."""
import json
import math

import numpy as np
import pytest

from benchmark.fakes import prerequisites as fakes
from graft_core.text_to_image import text


def test_geneval_score_runs_against_the_fake_checkout(tmp_path, monkeypatch):
    root = fakes.make_geneval(tmp_path / "geneval")
    monkeypatch.setenv(text.GENEVAL_ENV, str(root))
    monkeypatch.setenv(text.GENEVAL_DETECTOR_ENV, str(root / "models"))
    monkeypatch.delenv(text.GENEVAL_PYTHON_ENV, raising=False)
    metadata = text.geneval_metadata(root)
    assert len({m["tag"] for m in metadata}) >= 2 and all(m["prompt"] and "include" in m for m in metadata)
    calls = []

    def generate(prompts, seed):  # prompt index = seed: odd prompts bright (correct), even ones dark
        calls.append((prompts, seed))
        value = 200 if seed % 2 else 40
        return np.full((len(prompts), 16, 16, 3), value, dtype=np.uint8)

    out = tmp_path / "eval"
    scores = text.geneval_score(generate, out_dir=out, images_per_prompt=2)
    assert [s for _, s in calls] == list(range(len(metadata)))
    assert all(p == [m["prompt"]] * 2 for (p, _), m in zip(calls, metadata))
    assert scores["geneval_images"] == 2 * len(metadata)
    expected = {}
    for i, m in enumerate(metadata):
        expected.setdefault(m["tag"], []).append(100.0 * (i % 2))
    expected = {tag: sum(v) / len(v) for tag, v in expected.items()}
    assert scores["geneval_tasks"] == expected
    assert math.isfinite(scores["geneval_overall"])
    assert scores["geneval_overall"] == sum(expected.values()) / len(expected)
    # the evaluator wrote GenEval's per-image fields from GenEval's layout
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {"filename", "tag", "prompt", "correct"} <= set(rows[0])
    assert sorted(r["filename"] for r in rows) == sorted(str(p) for p in (out / "images").glob("*/samples/*.png"))
    # resumable: images and results on disk are not made again
    assert text.geneval_score(generate, out_dir=out, images_per_prompt=2) == scores
    assert len(calls) == len(metadata)


def test_fake_geneval_evaluator_needs_the_detector(tmp_path):
    import subprocess
    import sys

    root = fakes.make_geneval(tmp_path / "geneval")
    (tmp_path / "images").mkdir()
    p = subprocess.run([sys.executable, str(root / "evaluation" / "evaluate_images.py"), str(tmp_path / "images"),
                        "--outfile", str(tmp_path / "r.jsonl"), "--model-path", str(tmp_path / "nodetector")],
                       capture_output=True, text=True, cwd=root)
    assert p.returncode != 0 and "detector checkpoint" in p.stderr


def test_geneval_sampling_array_resumes_and_equals_one_process(tmp_path, monkeypatch):
    """GenEval's sampling array: two tasks in their own folders, one killed half-way and requeued, give the same
    images and the same score as one uninterrupted process; the killed task redoes only its unfinished shard."""
    root = fakes.make_geneval(tmp_path / "geneval")
    monkeypatch.setenv(text.GENEVAL_ENV, str(root))
    monkeypatch.setenv(text.GENEVAL_DETECTOR_ENV, str(root / "models"))
    monkeypatch.delenv(text.GENEVAL_PYTHON_ENV, raising=False)
    n = len(text.geneval_metadata(root))
    calls = []

    def generate(prompts, seed, kill_at=None):
        if kill_at is not None and len(calls) == kill_at:
            raise KeyboardInterrupt("killed")  # the task dies between two prompts
        calls.append(seed)
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, size=(len(prompts), 8, 8, 3), dtype=np.uint8)

    whole = text.geneval_score(generate, out_dir=tmp_path / "one", images_per_prompt=2)
    calls.clear()
    tasks = [tmp_path / "task0", tmp_path / "task1"]
    try:
        text.geneval_sample_shards(lambda p, s: generate(p, s, kill_at=1), out_dir=tasks[0], rank=0, world_size=2,
                                   shard_size=1, images_per_prompt=2)
    except KeyboardInterrupt:
        pass
    assert calls == [0]  # shard 0 done, shard 2 interrupted
    again = text.geneval_sample_shards(generate, out_dir=tasks[0], rank=0, world_size=2, shard_size=1,
                                       images_per_prompt=2)
    assert again["skipped"] == [0] and again["sampled"] == list(range(2, n, 2))
    with pytest.raises(FileNotFoundError, match="GenEval shard 1"):
        text.geneval_evaluate(tasks, out_dir=tmp_path / "eval", shard_size=1)
    text.geneval_sample_shards(generate, out_dir=tasks[1], rank=1, world_size=2, shard_size=1, images_per_prompt=2)
    assert sorted(calls) == list(range(n))  # every prompt once, the interrupted one redone
    scores = text.geneval_evaluate(tasks, out_dir=tmp_path / "eval", shard_size=1)
    assert scores == whole
    for png in (tmp_path / "one" / "images").glob("*/samples/*.png"):
        rel = png.relative_to(tmp_path / "one")
        assert (tmp_path / "eval" / rel).read_bytes() == png.read_bytes()
    with pytest.raises(Exception, match="other settings"):  # another seed in the same folder
        text.geneval_sample_shards(generate, out_dir=tasks[1], rank=1, world_size=2, shard_size=1,
                                   images_per_prompt=2, seed=5)
