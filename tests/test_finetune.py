"""Stage 2: the loss, the data stream, exact resume, LoRA, gradient accumulation, and DDP equivalence (2 gloo
processes)."""
import dataclasses
import os

import pytest
import torch

from graft_core.runtime import distributed
from graft_core.stages import finetune as ft
from graft_core.models.diffusion import diffusion_loss, make_train_scheduler


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("learned_sigma", [False, True])
def test_given_draws_equal_drawn_ones(micro_teacher, micro_preset, learned_sigma):
    """Stage 2 passes each rank its share of the global batch's t and ε: the loss is the one drawn from a generator."""
    cfg = micro_preset.teacher
    model = micro_teacher
    if learned_sigma:  # DiT-XL/2's case: 2·C output channels, loss = ε-MSE + vb
        from graft_core.models.teacher import build_dit

        cfg = dataclasses.replace(cfg, out_channels=2 * cfg.in_channels)
        model = build_dit(cfg).eval()
    sched = make_train_scheduler(cfg)
    x0 = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 10])
    t = torch.tensor([0, 10, 500, 999])
    ref = diffusion_loss(model, sched, x0, y, t=t, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(diffusion_loss(model, sched, x0, y, t=t, noise=noise), ref)


def test_batch_indices_are_epoch_permutations():
    n, b = 10, 4
    seen = torch.cat([ft.batch_indices(s, b, n, seed=1) for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(ft.batch_indices(3, b, n, seed=1), ft.batch_indices(3, b, n, seed=1))
    assert not torch.equal(ft.batch_indices(0, b, n, seed=1), ft.batch_indices(0, b, n, seed=2))


def test_global_batch_applies_label_dropout(micro_preset):
    st = dataclasses.replace(micro_preset.stage2, batch_size=256, label_dropout=0.5)
    images, labels = torch.zeros(300, 1, 8, 8), torch.zeros(300, dtype=torch.long)
    batch = ft.global_batch(0, images, labels, stage2=st, null_id=10, num_timesteps=1000)
    frac = (batch["labels"] == 10).float().mean().item()
    assert 0.35 < frac < 0.65
    assert batch["noise"].shape == (256, 1, 8, 8) and batch["t"].max() < 1000


def test_resume_after_interruption_matches_uninterrupted_run(micro_teacher, micro_preset, tmp_path):
    st = micro_preset.stage2  # 6 steps, checkpoint every 3
    full_model, full = ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path / "full", progress=False)
    assert full["complete"] and full["steps"] == st.steps and full["resumed_from"] is None
    # interrupted after step 4: the newest checkpoint is step 3
    _, part = ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path / "cut", progress=False, stop_after=4)
    assert not part["complete"] and part["steps"] == 4
    assert ft.latest_checkpoint(tmp_path / "cut").name == "step_00000003.pt"
    assert not ft.is_finished(tmp_path / "cut")
    resumed_model, resumed = ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path / "cut", progress=False)
    assert resumed["resumed_from"] == 3 and resumed["steps"] == st.steps and resumed["complete"]
    assert _states_equal(full_model.state_dict(), resumed_model.state_dict())  # EMA weights, bit for bit
    a = torch.load(ft.checkpoint_path(tmp_path / "full", st.steps), weights_only=False)
    b = torch.load(ft.checkpoint_path(tmp_path / "cut", st.steps), weights_only=False)
    assert _states_equal(a["model"], b["model"])
    assert a["history"] == b["history"]
    # the teacher passed in is not modified, and the EMA moved away from it
    assert not _states_equal(full_model.state_dict(), micro_teacher.state_dict())


def test_finished_run_is_loaded_not_retrained(micro_teacher, micro_preset, tmp_path, monkeypatch):
    model, metrics = ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path, progress=False)
    monkeypatch.setattr(ft.Finetune, "_train", lambda *a, **k: pytest.fail("retrained a finished run"))
    again, metrics2 = ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path, progress=False)
    assert _states_equal(model.state_dict(), again.state_dict())
    assert metrics2["steps"] == metrics["steps"]


def test_resume_refuses_another_config(micro_teacher, micro_preset, tmp_path):
    ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path, progress=False, stop_after=3)
    other = dataclasses.replace(micro_preset.stage2, lr=1e-2)
    with pytest.raises(ValueError, match="another Stage2Config"):
        ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path, stage2=other, progress=False)


def test_lora_trains_only_adapter_weights(micro_teacher, micro_preset, tmp_path):
    st = dataclasses.replace(micro_preset.stage2, lora_rank=2, lr=1e-2)
    merged, metrics = ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path, stage2=st, progress=False)
    ckpt = torch.load(ft.checkpoint_path(tmp_path, st.steps), weights_only=False)
    base = micro_teacher.state_dict()
    lora_keys = [k for k in ckpt["model"] if "lora_" in k]
    assert lora_keys and metrics["trainable_params"] == sum(ckpt["model"][k].numel() for k in lora_keys)
    for key, value in ckpt["model"].items():
        if "lora_" in key:
            continue
        plain = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(value, base[plain]), key  # every base parameter unchanged
    assert any(ckpt["model"][k].abs().sum() > 0 for k in lora_keys if "lora_B" in k)  # B starts at 0 and moved
    # sampling model: adapters merged, plain architecture, weights moved where LoRA applies
    assert merged.state_dict().keys() == base.keys()
    assert not torch.equal(merged.state_dict()["transformer_blocks.0.attn1.to_q.weight"],
                           base["transformer_blocks.0.attn1.to_q.weight"])
    assert torch.equal(merged.state_dict()["pos_embed.proj.weight"], base["pos_embed.proj.weight"])


# ---------------------------------------------------------------------------------------------------------------------
# Gradient accumulation: an execution setting with the results of one batch
# ---------------------------------------------------------------------------------------------------------------------


def _assert_same_training(got: torch.nn.Module, ref: torch.nn.Module, preset, atol: float = 1e-5) -> None:
    """EMA weights equal up to float summation order. The attention key biases are checked through the outputs
    instead: softmax is invariant to them, so their true gradient is 0 and Adam turns its round-off into ±lr steps
    that differ between summation orders yet change nothing the model computes."""
    from graft_core.models.diffusion import model_output

    ref_state, got_state = ref.state_dict(), got.state_dict()
    assert got_state.keys() == ref_state.keys()
    for name, value in ref_state.items():
        if not name.endswith("attn1.to_k.bias"):
            torch.testing.assert_close(got_state[name], value, rtol=0, atol=atol, msg=name)
    t = preset.teacher
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, t.in_channels, t.sample_size, t.sample_size, generator=gen)
    steps, labels = torch.tensor([0, 10, 200, 500, 800, 999]), torch.tensor([0, 1, 2, 3, 4, 10])
    with torch.no_grad():
        out_got, out_ref = model_output(got.eval(), x, steps, labels), model_output(ref.eval(), x, steps, labels)
    torch.testing.assert_close(out_got, out_ref, rtol=0, atol=atol)


def test_micro_batches_cover_the_share_with_size_weights():
    for n, k in ((8, 1), (8, 2), (8, 3), (32, 4), (5, 5)):
        parts = ft.micro_batches(n, k)
        assert len(parts) == k and parts[0][0].start == 0 and parts[-1][0].stop == n
        assert all(a.stop == b.start for (a, _), (b, _) in zip(parts, parts[1:]))
        assert max(s.stop - s.start for s, _ in parts) - min(s.stop - s.start for s, _ in parts) <= 1
        assert sum(w for _, w in parts) == pytest.approx(1.0)
        assert all(w == (s.stop - s.start) / n for s, w in parts)
    assert ft.micro_batches(8, 1) == [(slice(0, 8), 1.0)]  # k = 1 is today's step, weight exactly 1
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="integer >= 1"):
            ft.micro_batches(8, bad)
    with pytest.raises(ValueError, match="exceeds the per-GPU batch of 8"):
        ft.micro_batches(8, 9)


@pytest.mark.parametrize("learned_sigma", [False, True])
def test_accumulation_gives_the_results_of_one_batch(micro_teacher, micro_preset, tmp_path, learned_sigma):
    """k micro-batches (2, uneven 3, 4 of the micro batch of 8) vs k = 1: same losses and EMA weights up to float
    summation order; k is recorded in the metrics, not in the stage-2 config."""
    model = micro_teacher
    if learned_sigma:  # DiT-XL/2's case: the vb term is a per-sample mean too
        from graft_core.models.teacher import build_dit

        torch.manual_seed(0)
        model = build_dit(dataclasses.replace(micro_preset.teacher,
                                              out_channels=2 * micro_preset.teacher.in_channels))
    ref_model, ref = ft.finetune(model, micro_preset, out_dir=tmp_path / "k1", progress=False)
    assert ref["grad_accumulation"] == 1 and ref["micro_batch_size"] == micro_preset.stage2.batch_size
    for k, micro in ((2, 4), (3, 3), (4, 2)):
        got_model, got = ft.finetune(model, micro_preset, out_dir=tmp_path / f"k{k}", progress=False,
                                     accumulation=k)
        assert got["grad_accumulation"] == k and got["micro_batch_size"] == micro
        assert got["stage2"] == ref["stage2"] and "accumulation" not in str(got["stage2"])
        _assert_same_training(got_model, ref_model, micro_preset)
        assert [h["step"] for h in got["history"]] == [h["step"] for h in ref["history"]]
        for a, b in zip(got["history"], ref["history"]):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["lr"] == b["lr"]


def test_resume_with_accumulation_matches_uninterrupted_run(micro_teacher, micro_preset, tmp_path):
    full_model, full = ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path / "full", progress=False,
                                   accumulation=2)
    ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path / "cut", progress=False, stop_after=4, accumulation=2)
    resumed_model, resumed = ft.finetune(micro_teacher, micro_preset, out_dir=tmp_path / "cut", progress=False,
                                         accumulation=2)
    assert resumed["resumed_from"] == 3 and resumed["complete"] and resumed["grad_accumulation"] == 2
    assert _states_equal(full_model.state_dict(), resumed_model.state_dict())  # bit for bit
    assert resumed["history"] == full["history"]


# ---------------------------------------------------------------------------------------------------------------------
# DDP: 2 gloo processes vs one process
# ---------------------------------------------------------------------------------------------------------------------


def _ddp_worker(rank, world, port, model, preset, out_dir, result_dir):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # (1) gradients of one step: DDP-averaged shard gradients
    info = distributed.init_from_env()
    from torch.nn.parallel import DistributedDataParallel as DDP

    st = preset.stage2
    images, labels, _ = ft.stage2_subset(preset, st)
    batch = ft.global_batch(0, images, labels, stage2=st, null_id=10, num_timesteps=1000)
    part = {k: v[distributed.shard_slice(st.batch_size, info)] for k, v in batch.items()}
    net = DDP(model.train())
    loss = diffusion_loss(net, make_train_scheduler(preset.teacher), part["x0"], part["labels"], t=part["t"],
                          noise=part["noise"])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.save(grads, os.path.join(result_dir, f"grads_{rank}.pt"))
    model.zero_grad(set_to_none=True)
    # (2) a whole (short) finetune under DDP; it finds the process group initialised and leaves it alone
    ema_model, metrics = ft.finetune(model, preset, out_dir=out_dir, progress=False)
    # (3) the same with 2 micro-batches per rank (no_sync on the first): still the single-process run
    acc_model, acc = ft.finetune(model, preset, out_dir=out_dir + "-acc2", progress=False, accumulation=2)
    if rank == 0:
        torch.save({"ema": ema_model.state_dict(), "metrics": metrics, "acc_ema": acc_model.state_dict(),
                    "acc_metrics": acc}, os.path.join(result_dir, "finetune.pt"))
    distributed.cleanup(info)


def test_ddp_two_processes_match_single_process(micro_teacher, micro_preset, tmp_path):
    import copy

    import torch.multiprocessing as mp

    preset = micro_preset.replace(stage2=dataclasses.replace(micro_preset.stage2, steps=3))
    model = copy.deepcopy(micro_teacher)
    mp.spawn(_ddp_worker, args=(2, distributed.free_port(), model, preset, str(tmp_path / "ddp"), str(tmp_path)),
             nprocs=2, join=True)
    # single-process full-batch gradient
    st = preset.stage2
    images, labels, _ = ft.stage2_subset(preset, st)
    batch = ft.global_batch(0, images, labels, stage2=st, null_id=10, num_timesteps=1000)
    single = copy.deepcopy(micro_teacher).train()
    diffusion_loss(single, make_train_scheduler(preset.teacher), batch["x0"], batch["labels"], t=batch["t"],
                   noise=batch["noise"]).backward()
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads_{rank}.pt")
        assert grads.keys() == {n for n, p in single.named_parameters() if p.grad is not None}
        for name, p in single.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-5, msg=name)
    # whole finetune: same EMA weights as one process (up to float summation order)
    ddp = torch.load(tmp_path / "finetune.pt", weights_only=False)
    assert ddp["metrics"]["world_size"] == 2
    ref_model, ref = ft.finetune(micro_teacher, preset, out_dir=tmp_path / "single", progress=False)
    assert ref["world_size"] == 1
    assert ddp["acc_metrics"]["grad_accumulation"] == 2 and ddp["acc_metrics"]["micro_batch_size"] == 2
    for name, value in ref_model.state_dict().items():
        torch.testing.assert_close(ddp["ema"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    acc_model = copy.deepcopy(ref_model)
    acc_model.load_state_dict(ddp["acc_ema"])
    _assert_same_training(acc_model, ref_model, preset)
    for a, b, c in zip(ddp["metrics"]["history"], ref["history"], ddp["acc_metrics"]["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and c["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(micro_teacher, micro_preset, tmp_path):
    """A kill or a full disk can leave the newest checkpoint unreadable: the resume sets it aside and continues
    from the previous one, ending bit-identical to an uninterrupted run (before: every retry failed on it)."""
    import dataclasses

    p = micro_preset.replace(stage2=dataclasses.replace(micro_preset.stage2, steps=8, checkpoint_every=2))
    full_model, _ = ft.finetune(micro_teacher, p, out_dir=tmp_path / "full", progress=False)
    _, part = ft.finetune(micro_teacher, p, out_dir=tmp_path / "cut", progress=False, stop_after=5)
    newest = ft.latest_checkpoint(tmp_path / "cut")
    assert newest.name == "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    resumed_model, resumed = ft.finetune(micro_teacher, p, out_dir=tmp_path / "cut", progress=False)
    assert resumed["resumed_from"] == 2 and resumed["complete"]
    assert (newest.parent / "step_00000004.pt.corrupt").exists()
    assert _states_equal(full_model.state_dict(), resumed_model.state_dict())
