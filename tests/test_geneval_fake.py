"""``graft_core.text_to_image.text.geneval_score`` end to end against the GenEval-structured checkout of
``benchmark.fakes.prerequisites.make_geneval``: GenEval's folder layout, its evaluator's CLI in a subprocess, the summary. The
fake evaluator's detector is a fixed rule (mean intensity above a threshold), so the score is known in advance."""
import json
import math

import numpy as np

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
