"""Depth → width (Table 6) on the micro preset: block captures hold the sequential pair, the [I, I] merge starts at
it, stage 1 per pair goes through the one stage-1 loop, the fused pair equals the eager pair, the lr halvings are
part of ``finetune``, and the table6 target runs end to end through the driver and resumes a killed stage 2."""
import copy
import dataclasses
import json

import pytest
import torch

from graft_core.stages import depth_width as dw
from graft_core.stages.capture import capture_activations, load_capture, load_conditioning
from graft_core.grafting.restructure import ParallelPair, to_parallel_pairs

BLOCKS = [(0, "block"), (1, "block")]


@pytest.fixture(scope="module")
def captures(micro_teacher, micro_preset, tmp_path_factory):
    root = tmp_path_factory.mktemp("blocks")
    return {split: capture_activations(micro_teacher, micro_preset, split=split, root=root, dtype="float32",
                                       pairs=BLOCKS, device="cpu") for split in ("stage1", "heldout")}


def boundary(folder):
    """(input of block 0, output of block 1, timesteps, labels) of a block capture."""
    cond = load_conditioning(folder, 0, "block")
    return load_capture(folder, 0, "block")[0], load_capture(folder, 1, "block")[1], cond["timesteps"], cond["labels"]


def rel_error_of_delta(pair, folder):
    """‖pair(h) − h_seq‖ / ‖h_seq − h‖ on a captured pair boundary (relative to the delta, not to h)."""
    h_in, h_out, t, y = boundary(folder)
    with torch.no_grad():
        pred = pair(h_in, timestep=t, class_labels=y)
    return ((pred - h_out).norm() / (h_out - h_in).norm()).item()


def test_block_captures_reproduce_the_sequential_pair(micro_teacher, captures):
    h_in, h_out, t, y = boundary(captures["stage1"])
    a, b = micro_teacher.transformer_blocks[0], micro_teacher.transformer_blocks[1]
    with torch.no_grad():
        seq = b(a(h_in, timestep=t, class_labels=y), timestep=t, class_labels=y)
    torch.testing.assert_close(seq, h_out)
    torch.testing.assert_close(load_capture(captures["stage1"], 1, "block")[0], a(h_in, timestep=t, class_labels=y))


def test_identity_merge_starts_close_to_the_sequential_pair(micro_teacher, captures):
    """W = [I, I] matches the sequential pair to first order: smaller error than averaging or dropping a block."""
    pair = dw.pair_module(micro_teacher, 0).eval()
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


def test_stage1_pair_distillation_is_deterministic_reused_and_does_not_get_worse(micro_teacher, micro_preset,
                                                                                 captures, tmp_path):
    s1 = dataclasses.replace(micro_preset.stage1, objective=dw.PAIR_OBJECTIVE, lr=dw.PAIR_LR)
    runs = [dw.distill_pair(micro_teacher, 0, captures["stage1"], captures["heldout"], stage1=s1,
                            out_dir=tmp_path / name, device=torch.device("cpu")) for name in ("a", "b")]
    (m1, m2) = runs
    states = [torch.load(tmp_path / name / "operator.pt") for name in ("a", "b")]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0]) and m1["train_mse"] == m2["train_mse"]
    assert m1["objective"] == "l1" and m1["lr"] == 1e-4 and m1["train_mse"] <= m1["initial_train_mse"]
    assert m1["val_mse"] is not None and m1["blocks"] == [0, 1]
    (tmp_path / "a" / "operator.pt").touch()
    again = dw.distill_pair(micro_teacher, 0, captures["stage1"], captures["heldout"], stage1=s1,
                            out_dir=tmp_path / "a", device=torch.device("cpu"))
    assert again["seconds"] == m1["seconds"]  # the finished result is returned, not retrained
    # the student built from it carries exactly those weights in pair 0
    model = dw.assemble_pairs(micro_teacher, {0: tmp_path / "a"})
    assert all(torch.equal(v, states[0][k]) for k, v in model.transformer_blocks[0].state_dict().items())


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


def test_warmup_then_halvings_are_part_of_finetune(micro_teacher, micro_preset, tmp_path):
    from graft_core.stages.finetune import Warmup, finetune

    sched = Warmup(4, (10, 20))
    assert [sched(s) for s in (0, 3, 9, 10, 19, 20, 50)] == [0.25, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    s2 = dataclasses.replace(micro_preset.stage2, steps=30, warmup_steps=2, lr_milestones=(10, 20),
                             checkpoint_every=30)
    _, metrics = finetune(to_parallel_pairs(copy.deepcopy(micro_teacher)), micro_preset, out_dir=tmp_path, stage2=s2,
                          progress=False)
    lrs = {h["step"]: h["lr"] for h in metrics["history"]}
    assert lrs[10] == pytest.approx(s2.lr * 0.5) and lrs[20] == pytest.approx(s2.lr * 0.25)
    assert metrics["stage2"]["lr_milestones"] == [10, 20]
    # at their default the halvings stay out of the config's canonical form: earlier run ids are unchanged
    from graft_core.config import to_jsonable

    assert "lr_milestones" not in to_jsonable(micro_preset.stage2)


def test_table6_runs_through_the_driver_and_a_killed_stage2_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """micro table6 through ``python -m benchmark.run``: the first stage 2 of the parallel model dies after its step-3
    checkpoint; the relaunch resumes it there, every row finishes with finite metrics and a speed-up, and a third
    launch runs nothing."""
    from benchmark import steps
    from benchmark.run import main
    from graft_core.stages import finetune as ft

    killed = []

    def crash_once(ctx):
        if ctx.kind == "stage2" and ctx.config["plan"] is not None and not killed:
            killed.append(ctx.run.run_id)
            with monkeypatch.context() as m:
                m.setattr(ft.Finetune, "__init__", _stopping_init(ft.Finetune.__init__, 3))
                steps.execute(ctx)
            raise RuntimeError("simulated kill after the step-3 checkpoint")
        return steps.execute(ctx)

    args = ["table6", "--preset", "micro", "--executor", "debug", "--results-dir", str(tmp_path), "--quiet"]
    assert main(args, execute=crash_once) == 1
    assert main(args) == 0
    s2 = json.loads((tmp_path / "micro" / "runs" / "stage2" / killed[0] / "metrics.json").read_text())
    assert s2["resumed_from"] == 3 and s2["steps"] == 6 and s2["complete"]
    summary = json.loads((tmp_path / "micro" / "table6" / "summary.json").read_text())
    rows = {r["row"]: r for r in summary["rows"]}
    assert set(rows) == {"baseline", "parallel-depth1", "parallel-depth1-stage1", "control-teacher-stage2"}
    assert all(r["status"] == "done" and r["metrics"]["fid"] > 0 for r in rows.values())
    parallel = rows["parallel-depth1"]["extra"]
    assert parallel["depth"] == 1 and parallel["teacher_depth"] == 2 and parallel["speedup"] > 0
    assert parallel["lr_halvings"] == [3, 5] and parallel["stage1_val_mse"] is not None
    assert (tmp_path / "micro" / "tables" / "table6.tex").exists()
    def records():
        return {str(p): p.stat().st_mtime_ns for p in (tmp_path / "micro" / "runs").rglob("metrics.json")}

    before = records()
    assert main(args) == 0
    assert records() == before and len(before) >= 11  # one per run, plus stage-1/stage-2 outputs


def _stopping_init(init, stop_after):
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.stop_after = stop_after
    return patched


def test_fused_tolerance_scales_with_the_output_and_tf32():
    """Table 6's latency check: rounding of a large output or under TF32 passes, a wrong fusion does not."""
    small, large = torch.full((2, 2), 0.5), torch.full((2, 2), 300.0)
    assert dw.fused_tolerance(small, "cpu") == pytest.approx(1e-3)
    assert dw.fused_tolerance(large, "cpu") == pytest.approx(0.3)  # 1e-3 of the output's scale
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert dw.fused_tolerance(small, torch.device("cuda", 0)) == pytest.approx(1e-2)
        torch.backends.cuda.matmul.allow_tf32 = False
        assert dw.fused_tolerance(small, torch.device("cuda", 0)) == pytest.approx(1e-3)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def test_a_wrong_fusion_exceeds_the_tolerance_and_a_right_one_does_not(micro_teacher, micro_preset):
    wide = to_parallel_pairs(copy.deepcopy(micro_teacher)).eval()
    with torch.no_grad():
        for pair in wide.transformer_blocks:
            pair.merge.weight.add_(0.05 * torch.randn_like(pair.merge.weight))
    fast = dw.fused(wide)
    eager_call = dw.dit_forward_fn(wide, micro_preset.teacher, 3)
    with torch.no_grad():
        eager = eager_call()
        tol = dw.fused_tolerance(eager, "cpu")
        assert (dw.dit_forward_fn(fast, micro_preset.teacher, 3)() - eager).abs().max() <= tol
        p = next(fast.transformer_blocks[0].parameters())
        p.mul_(1.05)  # a fused weight 5 % off
        assert (dw.dit_forward_fn(fast, micro_preset.teacher, 3)() - eager).abs().max() > tol


@pytest.mark.parametrize("visible, expected", [(8, 3), (1, 0)])
def test_the_cuda_device_is_the_local_rank_only_when_the_task_sees_it(visible, expected, monkeypatch):
    """One GPU bound per task (CUDA_VISIBLE_DEVICES of one device): local rank 3 uses cuda:0, not a missing cuda:3."""
    from graft_core.runtime import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    info = distributed.DistInfo(rank=3, world_size=8, local_rank=3)
    assert distributed.device_index(info) == expected
    assert distributed.default_device(info) == torch.device("cuda", expected)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: None)
    for k, v in {"WORLD_SIZE": "8", "RANK": "3", "LOCAL_RANK": "3", "MASTER_ADDR": "x", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    distributed.init_from_env("nccl")
    assert chosen == [expected]
