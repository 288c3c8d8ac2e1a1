"""Depth → width (Table 6) on the micro preset: the [I, I] merge starts at the sequential pair, stage 1 per pair,
the fused pair equals the eager pair, the lr halvings reach finetune, and the row runs end to end and resumes."""
import copy
import json

import pytest
import torch

from graft_core import depth_width as dw
from graft_core.restructure import ParallelPair, to_parallel_pairs


@pytest.fixture(scope="module")
def captures(micro_teacher, micro_preset):
    return {split: dw.capture_boundaries(micro_teacher, micro_preset, split) for split in ("stage1", "heldout")}


def rel_error_of_delta(pair, capture, index=0):
    """‖pair(h) − h_seq‖ / ‖h_seq − h‖ on a captured pair boundary (relative to the delta, not to h)."""
    h_in, h_out, t, y = capture["h"][index], capture["h"][index + 1], capture["t"], capture["y"]
    with torch.no_grad():
        pred = pair(h_in, timestep=t, class_labels=y)
    return ((pred - h_out).norm() / (h_out - h_in).norm()).item()


def test_capture_boundaries_reproduce_the_sequential_pair(micro_teacher, captures):
    cap = captures["stage1"]
    assert cap["h"].shape[0] == len(micro_teacher.transformer_blocks) // 2 + 1
    a, b = micro_teacher.transformer_blocks[0], micro_teacher.transformer_blocks[1]
    with torch.no_grad():
        seq = b(a(cap["h"][0], timestep=cap["t"], class_labels=cap["y"]), timestep=cap["t"], class_labels=cap["y"])
    torch.testing.assert_close(seq, cap["h"][1])


def test_identity_merge_starts_close_to_the_sequential_pair(micro_teacher, captures):
    """W = [I, I] matches the sequential pair to first order: smaller error than averaging or dropping a block."""
    blocks = micro_teacher.transformer_blocks
    pair = ParallelPair(copy.deepcopy(blocks[0]), copy.deepcopy(blocks[1]), blocks[0].attn1.to_q.in_features).eval()
    errors = {"identity": rel_error_of_delta(pair, captures["stage1"])}
    d = pair.merge.out_features
    eye = torch.eye(d)
    for name, weight in (("average", torch.cat([eye / 2, eye / 2], 1)), ("first_only", torch.cat([eye, 0 * eye], 1))):
        alt = copy.deepcopy(pair)
        with torch.no_grad():
            alt.merge.weight.copy_(weight)
        errors[name] = rel_error_of_delta(alt, captures["stage1"])
    assert errors["identity"] < 0.15, errors
    assert errors["identity"] < 0.5 * min(errors["average"], errors["first_only"]), errors


def test_stage1_pair_distillation_is_deterministic_and_does_not_get_worse(micro_teacher, micro_preset, captures):
    cfg = dw.depth_width_config(micro_preset)
    results = []
    for _ in range(2):
        pair = to_parallel_pairs(copy.deepcopy(micro_teacher)).transformer_blocks[0]
        state, metrics = dw.distill_pair(pair, captures["stage1"], captures["heldout"], 0, preset=micro_preset,
                                         cfg=cfg, bf16=False)
        results.append((state, metrics))
    (s1, m1), (s2, m2) = results
    assert all(torch.equal(s1[k], s2[k]) for k in s1) and m1["train_mse"] == m2["train_mse"]
    assert m1["objective"] == "l1" and m1["train_mse"] <= m1["initial_train_mse"]
    assert m1["val_mse"] is not None and m1["blocks"] == [0, 1]


def test_fused_pairs_equal_eager_pairs(micro_teacher, micro_preset):
    wide = to_parallel_pairs(copy.deepcopy(micro_teacher)).eval()
    with torch.no_grad():  # a merge away from [I, I], so both deltas matter separately
        for pair in wide.transformer_blocks:
            pair.merge.weight.add_(0.05 * torch.randn_like(pair.merge.weight))
    fast = dw.fused(wide)
    assert all(isinstance(b, dw.FusedPair) for b in fast.transformer_blocks)
    call_eager = dw.dit_forward_fn(wide, micro_preset.teacher, 3)
    call_fused = dw.dit_forward_fn(fast, micro_preset.teacher, 3)
    with torch.no_grad():
        torch.testing.assert_close(call_fused(), call_eager(), rtol=1e-5, atol=1e-5)


def test_warmup_then_halvings_and_the_schedule_check():
    sched = dw.WarmupHalvings(4, (10, 20))
    assert [sched(s) for s in (0, 3, 9, 10, 19, 20, 100)] == [0.25, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    import graft_core.finetune as ft

    original = ft.Warmup
    with dw.lr_halvings((10,)):
        assert ft.Warmup(4)(12) == 0.5
    assert ft.Warmup is original
    from graft_core.presets import Stage2Config

    s2 = Stage2Config(lr=1e-3, warmup_steps=2)
    dw.check_schedule([{"step": 10, "lr": 1e-3}, {"step": 20, "lr": 5e-4}], s2, (15,))
    with pytest.raises(RuntimeError, match="halving schedule was not applied"):
        dw.check_schedule([{"step": 20, "lr": 1e-3}], s2, (15,))


def test_run_row_micro_end_to_end_and_resume(micro_preset, tmp_path):
    out = dw.run_row({}, preset=micro_preset, out_dir=tmp_path, progress=False)
    assert {"is", "fid", "sfid", "precision", "recall", "class_acc"} <= set(out["metrics"])
    assert out["depth"] == 1 and out["teacher_depth"] == 2 and out["iters"] == 6 and out["stage2_data"] == 25.0
    d = micro_preset.teacher.hidden_size
    assert round((out["params_m"] - out["teacher_params_m"]) * 1e6) == 2 * d * d + d  # one merge per pair
    assert out["speedup"] > 0 and out["speedup_eager"] > 0 and out["latency"]["fused_max_abs_diff"] < 1e-4
    assert out["stage1_only_metrics"] is not None and len(out["stage1_pairs"]) == 1
    assert "fid" in out["control_teacher_stage2_metrics"]  # the teacher through the identical stage 2
    assert (tmp_path / "stage1" / "pair_00" / "pair.pt").exists() and (tmp_path / "eval_final.json").exists()
    again = dw.run_row({}, preset=micro_preset, out_dir=tmp_path, progress=False)
    assert again["metrics"] == out["metrics"] and again["stage1_pairs"] == out["stage1_pairs"]
    assert json.dumps(out)
