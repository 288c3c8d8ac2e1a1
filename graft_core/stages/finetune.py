"""Stage 2 — lightweight end-to-end finetuning of the grafted student with the diffusion loss (paper §3.2).

What one step does (global batch ``stage2.batch_size`` from the class-stratified ``stage2.data_fraction`` subset):
label dropout with ``stage2.label_dropout`` (once per batch, ours — diffusers' per-block dropout is switched off),
``t ~ U{0..999}``, ε-MSE plus the variational-bound term when σ is learned (``graft_core.models.diffusion``), bf16 autocast
when ``stage2.bf16``, AdamW, gradient clipping, linear warm-up then constant lr (halved at ``stage2.lr_milestones``),
EMA update. The EMA weights are the ones returned for sampling.

Determinism and exact resume. Every random draw of step ``k`` (batch indices, dropped labels, timesteps, noise) comes
from generators derived from ``(stage2.seed, k)`` — a shuffled epoch permutation for the indices — so the data stream
has no hidden state: resuming at step ``k`` replays exactly what an uninterrupted run does. Checkpoints
(``out_dir/checkpoints/step_XXXXXXXX.pt``, written atomically every ``checkpoint_every`` steps, the newest two kept)
hold the model, EMA, optimizer, lr scheduler, step, loss history and the process's Python / NumPy / torch RNG states
(the latter only matter for operators with dropout). A call with the same ``out_dir`` resumes from the newest one.

Distributed data parallel: with ``WORLD_SIZE > 1`` in the environment the process group is initialised from it
(``graft_core.runtime.distributed``), every rank draws the same global batch and keeps its contiguous shard, DDP averages the
gradients — so a step equals the single-process step on the whole batch up to float summation order. Only rank 0
writes checkpoints and the final weights.

Gradient accumulation (``accumulation=k``, from the Slurm profile's ``stage2.grad_accumulation``): when a rank's
share does not fit in GPU memory it is cut into ``k`` micro-batches (``micro_batches``), each micro-batch's loss
weighted by its size / the share's size, gradients summed locally (DDP's all-reduce skipped with ``no_sync`` on all
but the last) and the optimizer steps once. The random stream is still drawn for the whole global batch and sliced,
so a run with ``k`` equals the run with ``k = 1`` up to float summation order: ``k`` is an execution setting, not
part of ``Stage2Config`` or the run id (a run may even resume with another ``k``). Metrics record ``k`` and the
micro-batch size.

LoRA (``stage2.lora_rank``): peft ``LoraConfig(r=rank, lora_alpha=rank, target_modules=<every nn.Linear inside the
blocks' attn1 / ff, grafted operators included>)``; the base weights are frozen, only the adapters train (and are
EMA-averaged). For sampling the EMA adapters are **merged** into the base weights (``merge_and_unload``), so the
returned model has the student's plain architecture and the saved final weights load into it directly.

Preemption is the caller's business: calling ``finetune`` again with the same ``out_dir`` resumes from the newest
periodic checkpoint (at most ``checkpoint_every`` steps are redone). The driver's job (``benchmark.jobs.RunUnit``, a
submitit ``Checkpointable``) is requeued on preemption and does exactly that; the engine knows no scheduler. ``model``
may be a zero-argument callable (e.g. ``functools.partial(assemble, ...)``) so that a pickled ``Finetune`` does not
carry the weights.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import pickle
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from graft_core.runtime import distributed
from graft_core.config import to_jsonable
from graft_core.models.diffusion import (diffusion_loss, disable_builtin_label_dropout, drop_labels, make_train_scheduler,
                                  null_class_id)
from graft_core.models.ema import EMA
from graft_core.runtime.paths import atomic_torch_save, atomic_write_bytes, atomic_write_json
from graft_core.presets import Preset, Stage2Config

CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
KEEP_CHECKPOINTS = 2
LOG_EVERY = 10  # steps per entry of the loss history
# Fault injection for the crash tests (tests/test_crash_resume.py): a process whose environment names a step kills
# itself with SIGKILL right after that step's checkpoint is on disk, as a lost node would, so that a test can check
# that the same command resumes from it and ends with the metrics of an uninterrupted run. Unset: no effect.
KILL_AFTER_CHECKPOINT_ENV = "GRAFTBENCH_KILL_AFTER_CHECKPOINT"


# --------------------------------------------------------------------------------------------------------------------
# Data and the per-step random stream
# --------------------------------------------------------------------------------------------------------------------


def stage2_subset(preset: Preset, stage2: Stage2Config) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Model-space inputs, labels and indices of the class-stratified stage-2 subset of ``stage2.data_fraction``
    (contracts.md), from the preset's data source (digits pixels or prepared ImageNet latents)."""
    from graft_core.data.sources import source_of, stage2_subset_name

    sub = source_of(preset).subset(preset, stage2_subset_name(stage2.data_fraction))
    return sub.x0, sub.labels, sub.indices


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and machines)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def batch_indices(step: int, batch_size: int, num_items: int, seed: int) -> torch.Tensor:
    """Indices of the global batch of ``step``: consecutive slices of per-epoch seeded permutations (no replacement
    within an epoch, a batch may straddle two epochs). Stateless, so any step can be regenerated on resume."""
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs = positions // num_items
    out = torch.empty(batch_size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch)))
        mask = epochs == epoch
        out[mask] = perm[positions[mask] % num_items]
    return out


def global_batch(step: int, images: torch.Tensor, labels: torch.Tensor, *, stage2: Stage2Config, null_id: int,
                 num_timesteps: int) -> dict[str, torch.Tensor]:
    """Everything random about step ``step`` for the whole global batch: x0, (dropped) labels, t, ε."""
    idx = batch_indices(step, stage2.batch_size, len(images), stage2.seed)
    gen = torch.Generator().manual_seed(derive_seed(stage2.seed, "step", step))
    y = drop_labels(labels[idx], null_id, stage2.label_dropout, gen)
    t = torch.randint(0, num_timesteps, (len(idx),), generator=gen)
    x0 = images[idx]
    noise = torch.randn(x0.shape, generator=gen)
    return {"x0": x0, "labels": y, "t": t, "noise": noise}


def micro_batches(n: int, k: int) -> list[tuple[slice, float]]:
    """``k`` contiguous slices of a rank's ``n`` samples (sizes differ by at most one) with the weight
    ``size / n`` of each: the weighted sum of the micro-batches' mean losses is the mean loss of all ``n``, so the
    accumulated gradient is the whole share's gradient."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"gradient accumulation must be an integer >= 1, got {k!r}")
    if k > n:
        raise ValueError(f"gradient accumulation {k} exceeds the per-GPU batch of {n} samples "
                         f"(stage2.batch_size / world size); use at most {n}")
    base, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        size = base + (i < extra)
        out.append((slice(start, start + size), size / n))
        start += size
    return out


class Warmup:
    """LambdaLR factor: linear warm-up over ``steps`` optimizer steps, then constant, halved at each of
    ``milestones`` (``Stage2Config.lr_milestones``; Table 6 halves at 75k and 150k). Picklable, unlike a lambda."""

    def __init__(self, steps: int, milestones: tuple[int, ...] = ()):
        self.steps, self.milestones = steps, tuple(milestones)

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / max(1, self.steps)) * 0.5 ** sum(step >= m for m in self.milestones)


# --------------------------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------------------------


def lora_target_modules(model: nn.Module) -> list[str]:
    """Dotted names of every ``nn.Linear`` inside a block's ``attn1`` or ``ff`` (teacher or grafted operator)."""
    names = [name for name, mod in model.named_modules()
             if isinstance(mod, nn.Linear) and (".attn1." in name or ".ff." in name)]
    if not names:
        raise ValueError("no nn.Linear under any attn1/ff: nothing for LoRA to adapt")
    return names


def add_lora(model: nn.Module, rank: int) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters of rank ``rank`` (alpha = rank); only adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=lora_target_modules(model))
    wrapped = get_peft_model(model, config)
    for name, p in wrapped.named_parameters():
        p.requires_grad_("lora_" in name)
    return wrapped


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and drop the peft wrapper (no-op for a plain model)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def latest_checkpoint(out_dir: Path) -> Path | None:
    paths = sorted((Path(out_dir) / CHECKPOINT_DIR).glob("step_*.pt"))
    return paths[-1] if paths else None


def load_latest_checkpoint(out_dir: Path) -> tuple[Path | None, dict | None]:
    """The newest checkpoint that loads, newest first. One that does not (truncated by a kill or a full disk, though
    written atomically) is renamed aside to ``*.corrupt`` with a line saying so, and the next older one is tried —
    that is why two are kept — so a retry resumes instead of failing on the same file forever."""
    for path in sorted((Path(out_dir) / CHECKPOINT_DIR).glob("step_*.pt"), reverse=True):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError) as err:
            aside = path.with_name(path.name + ".corrupt")
            with contextlib.suppress(FileNotFoundError):  # another DDP rank set it aside first
                os.replace(path, aside)
            print(f"stage 2: checkpoint {path} does not load ({type(err).__name__}); set aside as {aside.name}, "
                  f"trying the previous one", flush=True)
    return None, None


def write_checkpoint(out_dir: Path, step: int, state: dict, *, kill_env: str | None = None) -> Path:
    """Write ``state`` as ``checkpoints/step_XXXXXXXX.pt`` (atomically) and keep the newest ``KEEP_CHECKPOINTS``;
    the one checkpoint writer of the training loops (stage 2, online stage 1). ``kill_env``: the fault injection of
    the crash tests (SIGKILL once the checkpoint of the step it names is on disk)."""
    path = checkpoint_path(out_dir, step)
    atomic_torch_save(state, path)
    for old in sorted((Path(out_dir) / CHECKPOINT_DIR).glob("step_*.pt"))[:-KEEP_CHECKPOINTS]:
        old.unlink()
    if kill_env and os.environ.get(kill_env) == str(step):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return path


def rng_state() -> dict:
    """Every RNG a training step draws from, for an exact resume (stage 2 and the online stage 1 checkpoint it)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_finished(out_dir: Path) -> bool:
    return (Path(out_dir) / FINAL_DIR / "DONE").exists()


# --------------------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------------------


class Finetune:
    """Stage 2 as a callable job: ``Finetune(model, preset, out_dir=...)()`` → ``(ema_model, metrics)``.

    Args:
        model: the student (not modified: training works on a copy) or a zero-argument callable returning it.
        preset: gives the data, the teacher's diffusion settings and, unless ``stage2`` is set, ``preset.stage2``.
        out_dir: checkpoints and final weights; a finished ``out_dir`` is loaded, not retrained.
        stage2: overrides ``preset.stage2``.
        progress: tqdm bar on rank 0.
        device: default ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        stop_after: stop (without a final save) once this many steps are done — to test interruption.
        data: ``(x0, labels, indices)`` replacing the built-in stage-2 subset (digits only so far), e.g. with
            ImageNet latents.
        accumulation: micro-batches per rank and step (gradient accumulation); same results as 1, less memory.
        checkpointing: recompute each transformer block in the backward pass (diffusers' gradient checkpointing:
            activation memory of one block instead of all; same results, ~30 % more compute). Like
            ``accumulation`` an execution setting (the profile's ``stage2.activation_checkpointing``).
    """

    def __init__(self, model: nn.Module | Callable[[], nn.Module], preset: Preset, *, out_dir: Path,
                 stage2: Stage2Config | None = None, progress: bool = True, device: str | None = None,
                 stop_after: int | None = None,
                 data: tuple[torch.Tensor, torch.Tensor, np.ndarray] | None = None, accumulation: int = 1,
                 checkpointing: bool = False):
        self.model = model
        self.preset = preset
        self.out_dir = Path(out_dir)
        self.stage2 = stage2 if stage2 is not None else preset.stage2
        self.progress = progress
        self.device = device
        self.stop_after = stop_after
        self.data = data
        self.accumulation = accumulation
        self.checkpointing = checkpointing

    # ----------------------------------------------------------------------------------------------------------------

    def _fresh_student(self) -> nn.Module:
        model = self.model() if callable(self.model) and not isinstance(self.model, nn.Module) else self.model
        model = copy.deepcopy(model)
        disable_builtin_label_dropout(model)
        return model

    def load_final(self) -> tuple[nn.Module, dict]:
        """The finished EMA model (LoRA merged) and metrics of ``out_dir``."""
        final = self.out_dir / FINAL_DIR
        model = self._fresh_student()
        model.load_state_dict(torch.load(final / "ema.pt", map_location="cpu", weights_only=True), strict=True)
        return model.eval(), json.loads((final / "metrics.json").read_text())

    def __call__(self) -> tuple[nn.Module, dict]:
        if is_finished(self.out_dir):
            return self.load_final()
        info = distributed.init_from_env()
        try:
            return self._train(info)
        finally:
            distributed.cleanup(info)

    def _train(self, info: distributed.DistInfo) -> tuple[nn.Module, dict]:
        from tqdm.auto import tqdm

        st, cfg = self.stage2, self.preset.teacher
        device = torch.device(self.device) if self.device is not None else distributed.default_device(info)
        shard = distributed.shard_slice(st.batch_size, info)
        micro = micro_batches(shard.stop - shard.start, self.accumulation)
        images, labels, subset_idx = stage2_subset(self.preset, st) if self.data is None else self.data
        scheduler = make_train_scheduler(cfg)

        model = self._fresh_student()
        null_id = null_class_id(model)
        if self.checkpointing:
            enable_activation_checkpointing(model)
        if st.lora_rank:
            model = add_lora(model, st.lora_rank)
        model.to(device).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        ema = EMA(model, st.ema_decay, warmup=st.ema_warmup)
        opt = torch.optim.AdamW(trainable, lr=st.lr, weight_decay=st.weight_decay)
        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, Warmup(st.warmup_steps, st.lr_milestones))
        step, history, window, seconds_before, resumed_from = 0, [], [], 0.0, None

        ckpt_path, ckpt = load_latest_checkpoint(self.out_dir)
        if ckpt is not None:
            if ckpt["stage2"] != to_jsonable(st):
                raise ValueError(f"{ckpt_path} was written with another Stage2Config; use a new out_dir "
                                 f"(checkpoint: {ckpt['stage2']}, now: {to_jsonable(st)})")
            model.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            opt.load_state_dict(ckpt["optimizer"])
            lr_sched.load_state_dict(ckpt["lr_scheduler"])
            set_rng_state(ckpt["rng"])
            step, history, window = ckpt["step"], ckpt["history"], ckpt["loss_window"]
            seconds_before = ckpt["seconds"]
            resumed_from = step
        net = model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if st.bf16 else contextlib.nullcontext())
        stop = st.steps if self.stop_after is None else min(st.steps, self.stop_after)
        start = time.time()
        bar = tqdm(total=st.steps, initial=step, desc="stage2", disable=not (self.progress and info.is_main),
                   mininterval=5)
        while step < stop:
            batch = global_batch(step, images, labels, stage2=st, null_id=null_id,
                                 num_timesteps=cfg.num_train_timesteps)
            part = {k: v[shard] for k, v in batch.items()}
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for i, (sl, weight) in enumerate(micro):
                mb = {k: v[sl].to(device) for k, v in part.items()}
                # DDP all-reduces on the last micro-batch only: the others just add to the local .grad
                sync = net.no_sync() if info.enabled and i < len(micro) - 1 else contextlib.nullcontext()
                with sync:
                    with autocast:
                        loss = diffusion_loss(net, scheduler, mb["x0"], mb["labels"], t=mb["t"], noise=mb["noise"])
                    (loss if weight == 1.0 else loss * weight).backward()
                step_loss += weight * loss.item()
            if st.grad_clip:
                torch.nn.utils.clip_grad_norm_(trainable, st.grad_clip)
            opt.step()
            lr_sched.step()
            ema.update(model, update=step + 1)
            step += 1
            window.append(distributed.mean_over_ranks(step_loss, info, device))
            if step % LOG_EVERY == 0 or step == st.steps:
                history.append({"step": step, "loss": sum(window) / len(window), "lr": lr_sched.get_last_lr()[0]})
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
                window = []
            bar.update(1)
            if step % st.checkpoint_every == 0 or step == st.steps:
                self._save_checkpoint(info, step, model, ema, opt, lr_sched, history, window,
                                      seconds_before + time.time() - start)
        bar.close()
        seconds = seconds_before + time.time() - start
        ran = step - (resumed_from or 0)
        metrics = {
            "steps": step, "complete": step >= st.steps, "resumed_from": resumed_from,
            "final_loss": _tail_mean(history), "history": history, "seconds": round(seconds, 3),
            "seconds_this_call": round(time.time() - start, 3),
            "seconds_per_100_steps": round(100 * (time.time() - start) / ran, 3) if ran else None,
            "trainable_params": sum(p.numel() for p in trainable),
            "total_params": sum(p.numel() for p in model.parameters()),
            "lora_rank": st.lora_rank, "world_size": info.world_size, "device": str(device),
            "grad_accumulation": len(micro), "micro_batch_size": max(s.stop - s.start for s, _ in micro),
            "activation_checkpointing": self.checkpointing,
            "stage2": to_jsonable(st), "num_train_images": len(subset_idx), "subset_hash": _subset_hash(subset_idx),
        }
        ema_model = merge_lora(ema.model).eval()
        if metrics["complete"]:
            if info.is_main:
                final = self.out_dir / FINAL_DIR
                atomic_torch_save({k: v.cpu() for k, v in ema_model.state_dict().items()}, final / "ema.pt")
                atomic_write_json(final / "metrics.json", metrics)
                atomic_write_bytes(final / "DONE", b"ok\n")
            distributed.barrier(info)
        return ema_model, metrics

    def _save_checkpoint(self, info, step, model, ema, opt, lr_sched, history, window, seconds) -> None:
        if info.is_main:
            state = {"step": step, "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                     "lr_scheduler": lr_sched.state_dict(), "rng": rng_state(), "history": list(history),
                     "loss_window": list(window), "seconds": seconds, "stage2": to_jsonable(self.stage2)}
            write_checkpoint(self.out_dir, step, state, kill_env=KILL_AFTER_CHECKPOINT_ENV)
        distributed.barrier(info)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """diffusers' gradient checkpointing on the model's diffusers transformer (the model itself, or the
    ``transformer`` a text-conditioned wrapper holds)."""
    target = model if hasattr(model, "enable_gradient_checkpointing") else getattr(model, "transformer", None)
    if target is None or not hasattr(target, "enable_gradient_checkpointing"):
        raise ValueError(f"{type(model).__name__} holds no diffusers transformer: activation checkpointing needs one")
    target.enable_gradient_checkpointing()


def _tail_mean(history: list[dict], frac: float = 0.1) -> float | None:
    if not history:
        return None
    k = max(1, int(len(history) * frac))
    return sum(h["loss"] for h in history[-k:]) / k


def _subset_hash(idx: np.ndarray) -> str:
    from graft_core.data.digits import subset_hash

    return subset_hash(idx)


def finetune(model: nn.Module | Callable[[], nn.Module], preset: Preset, *, out_dir: Path,
             stage2: Stage2Config | None = None, progress: bool = True, accumulation: int = 1,
             **kwargs) -> tuple[nn.Module, dict]:
    """Stage 2 in one call (see ``Finetune``): returns the EMA model for sampling and the metrics."""
    return Finetune(model, preset, out_dir=out_dir, stage2=stage2, progress=progress, accumulation=accumulation,
                    **kwargs)()
