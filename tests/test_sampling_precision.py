"""Sampling precision follows the config, never the device (audit C7): fp32 with TF32 matmuls on CUDA by default (the
official DiT protocol), bf16 only when ``eval.bf16`` is set; the record says which ran."""
import dataclasses
import types

import pytest
import torch

from graft_core.presets import get_preset
from graft_core.evaluation.sampler import precision


def test_precision_names_what_runs():
    assert precision(True, "cpu") == "bf16" and precision(True, torch.device("cuda")) == "bf16"
    assert precision(False, "cpu") == "fp32"
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert precision(False, torch.device("cuda", 0)) == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = False
        assert precision(False, torch.device("cuda", 0)) == "fp32"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("bf16", [False, True])
def test_a_cuda_sampling_job_runs_in_the_configured_precision(bf16, monkeypatch, tmp_path):
    """``run_sample`` on a (monkeypatched) CUDA device: bf16 exactly when the config says so, recorded."""
    from benchmark.families import dit

    seen = {}
    p = get_preset("micro")
    p = p.replace(eval=dataclasses.replace(p.eval, bf16=bf16))
    monkeypatch.setattr(dit, "job_device", lambda: torch.device("cuda", 0))
    monkeypatch.setattr(dit, "load_model", lambda ctx, spec: (torch.nn.Linear(1, 1), None))
    monkeypatch.setattr(dit, "_source", lambda p: types.SimpleNamespace(pixel_space=True))
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # as job_device sets it on CUDA

    def sample_shards(model, teacher, out, **kw):
        seen.update(kw)
        return {"sampled": 1, "skipped": 0, "seconds": 0.0}

    monkeypatch.setattr("graft_core.evaluation.sample_at_scale.sample_shards", sample_shards)
    ctx = types.SimpleNamespace(preset=lambda: p, config={"model": {"source": "teacher"}, "task": 0, "tasks": 1},
                                run=types.SimpleNamespace(out=tmp_path), progress=False)
    try:
        record = dit.run_sample(ctx)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen["bf16"] is bf16
    assert record["sampling_precision"] == ("bf16" if bf16 else "tf32")


def test_the_paper_default_is_fp32():
    assert get_preset("paper").eval.bf16 is False and get_preset("paper-smoke").eval.bf16 is False
