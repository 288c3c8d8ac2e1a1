"""Online stage 1: every grafted layer's operator trained from one frozen-teacher forward per batch, nothing stored.

Why: at PixArt-Σ 2K (16,384 tokens × width 1152) one layer's capture of 8k pairs is ~604 GB (fp16 inputs and
targets), 14 layers 8.5 TB per split, and 200 epochs re-read each capture 200 times. Here the teacher runs once per
batch of the stage-1 pairs, forward hooks (``capture.record_sites``) take each grafted layer's operator input and
ungated output from that forward, and each layer's operator takes one step of the one stage-1 training step
(``distill.OperatorTrainer``: objective, AdamW, clipping, lr schedule, MSE checks, best weights, early stopping) on
its own pair. It is the capture's data, not a new sampling: the same pairs, timesteps and noise (``capture.
teacher_inputs`` with the same seed), only never written to disk — what differs from the captured path is the batch
order (one order shared by every layer, seeded with ``stage1.seed``, where a per-layer run uses ``stage1.seed +
layer``) and the precision of the targets (the teacher's own, where a capture rounds them to fp16).

MSE checks (every ``stage1.eval_every`` epochs) run the teacher over all stage-1 pairs and all held-out pairs in
eval mode. A batch larger than the GPU allows is split into ``accumulation`` micro-batches (one teacher forward
each, gradients accumulated: the same step, an execution setting chosen by ``benchmark.resources``).

Output: ``out_dir/layer_XXX/`` per layer with ``operator.pt`` and ``metrics.json`` exactly as ``distill.
distill_layer`` writes them (``assemble`` / ``build_student`` read them unchanged), and ``out_dir/checkpoints/
step_XXXXXXXX.pt`` every ``checkpoint_every`` steps (every operator, optimiser, schedule, history and best weights,
the batch-order generator, the RNGs and the position): a killed or requeued job resumes from the newest and ends
with the same weights and metrics as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from torch import nn

from graft_core.config import stable_hash, to_jsonable
from graft_core.presets import Preset, Stage1Config
from graft_core.stages.capture import record_sites, teacher_inputs
from graft_core.stages.distill import OperatorTrainer, finished, mse_over, save_result
from graft_core.stages.finetune import (rng_state, set_rng_state, load_latest_checkpoint, micro_batches,
                                        write_checkpoint)

CHECKPOINT_EVERY = 50  # optimiser steps between checkpoints (paper: ~one teacher forward of 64 × 16,384 tokens each)


def layer_dir(out_dir: Path, layer: int) -> Path:
    """The per-layer result folder (``operator.pt`` + ``metrics.json``, as ``distill_layer`` writes)."""
    return Path(out_dir) / f"layer_{int(layer):03d}"


class _Split:
    """One split's teacher inputs: ``x_in`` (noised as the capture would), timesteps and labels, on the CPU."""

    def __init__(self, preset: Preset, data, seed: int, capture_input: str):
        self.x_in, self.timesteps = teacher_inputs(preset, data.x0, seed, capture_input)
        self.labels = torch.as_tensor(data.labels)

    def __len__(self) -> int:
        return len(self.labels)


class _Teacher:
    """The frozen teacher's forward on a set of rows, yielding each grafted layer's (input, ungated output)."""

    def __init__(self, teacher: nn.Module, pairs: list[tuple[int, str]], device: torch.device, bf16: bool):
        self.teacher, self.pairs, self.device, self.bf16 = teacher, pairs, device, bf16

    def __call__(self, split: _Split, rows: torch.Tensor) -> dict:
        """``{(layer, site): (input, ungated output)}`` of the forward on ``rows`` of ``split``."""
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with torch.no_grad(), autocast, record_sites(self.teacher, pairs=self.pairs) as record:
            self.teacher(split.x_in[rows].to(self.device), timestep=split.timesteps[rows].to(self.device),
                         class_labels=split.labels[rows].to(self.device), return_dict=False)
            return dict(record)


def _spec(plan, *, stage1, dim, num_heads, seq_len, bf16, data: dict, layer: int) -> dict:
    """A layer's spec (its ``metrics.json``'s ``spec_hash``): what ``distill_layer``'s holds, the online data feed
    in place of the capture names."""
    return {"layer": layer, "site": plan.site, "operator": plan.operator, "options": plan.option_dict,
            "stage1": stage1, "dim": dim, "num_heads": num_heads, "seq_len": seq_len, "bf16": bf16,
            "online": data}


def distill_online(teacher: nn.Module, preset: Preset, plan, *, stage1: Stage1Config, train_data, heldout_data,
                   dim: int, num_heads: int, seq_len: int, out_dir: Path, seed: int, capture_input: str = "noised", bf16: bool = False, forward_bf16: bool | None = None,
                   accumulation: int = 1, checkpoint_every: int = CHECKPOINT_EVERY,
                   device: torch.device | str | None = None, progress: bool = False) -> dict:
    """Stage 1 of every layer of ``plan`` (a ``GraftPlan``) from one teacher forward per batch; see the module doc.

    ``teacher``: a diffusers DiT / PixArt (or ``TextConditioned``) with the DiT call signature; ``preset``: its
    engine preset (noise schedule). ``train_data`` / ``heldout_data``: ``x0`` and ``labels`` of the stage-1 and
    held-out pairs (a ``Subset`` or ``SyntheticSubset``, whose ``identity`` enters each layer's spec); their draws
    come from ``seed`` as in a capture. ``bf16`` autocasts the operators (as ``distill_layer``);
    ``forward_bf16`` the teacher's forward (default: on CUDA, as the capture). Returns the run's record: per-layer
    summaries and the mean train / held-out MSE.
    """
    from tqdm.auto import tqdm

    from graft_core import operators
    from graft_core.models.teacher import use_fast_operator_attention

    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    forward_bf16 = device.type == "cuda" if forward_bf16 is None else bool(forward_bf16)
    out_dir = Path(out_dir)
    layers = [int(layer) for layer in plan.layers]
    seq_len = plan.seq_len or seq_len
    data = {"train": getattr(train_data, "identity", None), "heldout": getattr(heldout_data, "identity", None),
            "seed": seed, "capture_input": capture_input, "forward_bf16": forward_bf16,
            "num_train": len(train_data.labels), "num_heldout": len(heldout_data.labels), "layers": layers}
    specs = {layer: _spec(plan, stage1=stage1, dim=dim, num_heads=num_heads, seq_len=seq_len, bf16=bf16, data=data,
                          layer=layer) for layer in layers}
    done = {layer: finished(layer_dir(out_dir, layer), stable_hash(specs[layer])) for layer in layers}
    if all(m is not None for m in done.values()):
        return _record(done)

    trainers = {}
    for layer in layers:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stage1.seed + layer)  # as distill_layer and surgery.graft(seed=stage1.seed)
            op = operators.build(plan.operator, dim, num_heads=num_heads, seq_len=seq_len, **plan.option_dict)
        use_fast_operator_attention(op, seq_len, device)
        trainers[layer] = OperatorTrainer(op, stage1=stage1, site=plan.site, device=device, bf16=bf16, has_val=True)
    train, held = _Split(preset, train_data, seed, capture_input), _Split(preset, heldout_data, seed, capture_input)
    n, batch = len(train), stage1.batch_size
    steps_per_epoch = -(-n // batch)
    home, was_training = next(teacher.parameters()).device, teacher.training
    teacher.to(device).eval()
    forward = _Teacher(teacher, [(layer, plan.site) for layer in layers], device, forward_bf16)
    micro = max(1, min(batch, -(-batch // max(1, int(accumulation)))))  # rows per teacher forward

    def mses(split: _Split, var: dict | None = None) -> dict[int, float]:
        """Each active layer's MSE over a whole split (``mse_over`` per forward, summed); with ``var`` also the
        targets' sum and sum of squares (their variance, as ``moments`` of a capture)."""
        sse = {layer: 0.0 for layer, t in trainers.items() if t.active}
        count = 0
        for lo in range(0, len(split), micro):
            record = forward(split, torch.arange(lo, min(len(split), lo + micro)))
            for layer in sse:
                x, y = record[(layer, plan.site)]
                sse[layer] += mse_over(trainers[layer].op, x, y, device=device, bf16=bf16) * y.numel()
                if var is not None:
                    y64 = y.double()
                    var[layer] = [var[layer][0] + y64.sum().item(), var[layer][1] + (y64 * y64).sum().item(),
                                  var[layer][2] + y.numel()]
            count += record[(layers[0], plan.site)][1].numel()
        return {layer: s / max(1, count) for layer, s in sse.items()}

    gen = torch.Generator().manual_seed(stage1.seed)  # one batch order for every layer
    step, epoch, next_batch, gen_state, target_var, seconds = 0, 1, 0, gen.get_state(), {}, 0.0
    path, ckpt = load_latest_checkpoint(out_dir)
    spec_hash = stable_hash(specs)
    if ckpt is not None and ckpt.get("spec_hash") == spec_hash:
        for layer, t in trainers.items():
            t.load_state_dict(ckpt["trainers"][str(layer)])
        step, epoch, next_batch, gen_state = ckpt["step"], ckpt["epoch"], ckpt["next_batch"], ckpt["gen_state"]
        target_var, seconds = {int(k): v for k, v in ckpt["target_var"].items()}, ckpt["seconds"]
        set_rng_state(ckpt["rng"])
        print(f"stage 1 online: resumed from {path.name} (epoch {epoch}, batch {next_batch})", flush=True)
    elif ckpt is not None:
        raise ValueError(f"{out_dir}: its checkpoints belong to another stage-1 run (spec differs); use another "
                         f"out_dir or delete {out_dir / 'checkpoints'}")
    else:
        sums = {layer: [0.0, 0.0, 0] for layer in layers}
        train_mse = mses(train, sums)
        val_mse = mses(held)
        for layer, t in trainers.items():
            total, total_sq, count = sums[layer]
            mean = total / count
            target_var[layer] = max(0.0, total_sq / count - mean * mean)
            t.start(train_mse[layer], val_mse[layer])

    def checkpoint(at_epoch: int, at_batch: int) -> None:
        state = {"step": step, "epoch": at_epoch, "next_batch": at_batch, "gen_state": gen_state,
                 "trainers": {str(layer): t.state_dict() for layer, t in trainers.items()},
                 "target_var": {str(k): v for k, v in target_var.items()}, "rng": rng_state(),
                 "seconds": seconds + time.time() - begin, "spec_hash": spec_hash, "spec": to_jsonable(specs)}
        write_checkpoint(out_dir, step, state)

    begin = time.time()
    try:
        bar = tqdm(total=stage1.epochs * steps_per_epoch, initial=step, desc=f"stage1 online {len(layers)} layers",
                   disable=not progress, mininterval=5)
        while epoch <= stage1.epochs and any(t.active for t in trainers.values()):
            gen.set_state(gen_state)
            perm = torch.randperm(n, generator=gen)
            active = [t for t in trainers.values() if t.active]
            if next_batch == 0:
                for t in active:
                    t.begin_epoch()
            for b in range(next_batch, steps_per_epoch):
                rows = perm[b * batch:(b + 1) * batch]
                active = [(layer, t) for layer, t in trainers.items() if t.active]
                for _, t in active:
                    t.begin_step()
                for part, weight in micro_batches(len(rows), -(-len(rows) // micro)):
                    record = forward(train, rows[part])
                    for layer, t in active:
                        t.accumulate(*record[(layer, plan.site)], weight)
                    del record
                for _, t in active:
                    t.end_step(epoch)
                step += 1
                bar.update(1)
                if step % checkpoint_every == 0:
                    checkpoint(epoch, b + 1)
            active = [layer for layer, t in trainers.items() if t.active]
            check = any(trainers[layer].is_check(epoch) for layer in active)
            train_mse, val_mse = (mses(train), mses(held)) if check and active else ({}, {})
            for layer in active:
                trainers[layer].end_epoch(epoch, (train_mse[layer], val_mse[layer]) if check else None)
            epoch, next_batch, gen_state = epoch + 1, 0, gen.get_state()
        bar.close()
    finally:
        teacher.to(home).train(was_training)
    seconds += time.time() - begin
    results = {}
    for layer, t in trainers.items():
        state, metrics = t.result(num_samples=n, seed=stage1.seed, target_var=target_var[layer], seconds=seconds)
        metrics.update(layer=layer, site=plan.site, operator=plan.operator, options=plan.option_dict,
                       num_params=sum(p.numel() for p in t.op.parameters()), online=True, steps=step,
                       seconds_shared=True)  # ``seconds``: the whole job's, shared by its layers
        results[layer] = save_result(layer_dir(out_dir, layer), state, metrics, specs[layer])
    return _record(results)


def _record(results: dict[int, dict]) -> dict:
    """The run's record: each layer's summary, and the mean MSEs (``benchmark.summary.stage1_val_mse`` reads
    ``val_mse``)."""
    keys = ("train_mse", "val_mse", "initial_train_mse", "initial_val_mse", "train_rel_mse", "best_epoch",
            "stopped_at_epoch", "diverged_at_epoch")
    layers = {str(layer): {k: m.get(k) for k in keys} for layer, m in sorted(results.items())}
    mean = {k: sum(m[k] for m in results.values()) / len(results) for k in ("train_mse", "val_mse")}
    first = next(iter(results.values()))
    return {**mean, "layers": layers, "num_layers": len(results), "steps": first.get("steps"),
            "seconds": first.get("seconds"), "folders": {str(layer): layer_dir(Path("."), layer).name
                                                         for layer in sorted(results)}}
