"""evaluate_model and its two control rows on the micro preset (default classifier path: trained into the cache)."""
import dataclasses
import math

import pytest
import torch

from graft_core.evaluation.evaluate import evaluate_model, metric_floor, noise_control

METRIC_KEYS = {"is", "is_std", "fid", "fid_std", "fid_lo", "fid_hi", "fid_clean", "sfid", "kid", "kid_std", "precision",
               "recall", "class_acc"}
ROW_KEYS = METRIC_KEYS | {"num_samples", "seed", "extractor", "sample_seconds", "metric_seconds"}


def test_evaluate_model_row_is_complete_and_deterministic(micro_teacher, micro_preset):
    row = evaluate_model(micro_teacher, micro_preset, num_samples=20)
    assert set(row) == ROW_KEYS
    assert row["num_samples"] == 20 and row["extractor"] == "digits" and row["sample_seconds"] > 0
    assert all(math.isfinite(row[k]) for k in METRIC_KEYS)
    again = evaluate_model(micro_teacher, micro_preset, num_samples=20)
    assert {k: again[k] for k in METRIC_KEYS} == {k: row[k] for k in METRIC_KEYS}


def test_controls_have_the_same_shape_and_bracket_the_metrics(micro_preset):
    floor = metric_floor(micro_preset)
    noise = noise_control(micro_preset, num_samples=100)
    assert set(floor) == set(noise) == ROW_KEYS
    assert floor["num_samples"] == 200 and noise["num_samples"] == 100
    assert noise["fid"] > 20 * floor["fid"] and noise["sfid"] > floor["sfid"]
    assert noise["precision"] < floor["precision"] and noise["class_acc"] < 0.3


def test_decode_hook_is_applied_to_model_outputs(micro_teacher, micro_preset):
    calls = []

    def decode(z: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(z.shape))
        return z.clamp(-1, 1)

    row = evaluate_model(micro_teacher, micro_preset, num_samples=30, decode=decode)
    assert calls == [(20, 1, 8, 8), (10, 1, 8, 8)]  # in chunks of preset.eval.batch_size
    assert row["num_samples"] == 30


def test_latent_presets_need_decode_and_prepared_data(micro_teacher, micro_preset, tmp_path, monkeypatch):
    from graft_core.errors import NotPrepared

    latent = micro_preset.replace(data=dataclasses.replace(micro_preset.data, name="imagenet"))
    with pytest.raises(ValueError, match="decode="):
        evaluate_model(micro_teacher, latent, num_samples=4)
    monkeypatch.setenv("GRAFTBENCH_IMAGENET", str(tmp_path))
    with pytest.raises(NotPrepared, match="no subsets are prepared"):
        metric_floor(latent)
