"""Stage 1 — activation distillation of one operator per layer (paper §3.1), and assembly of the grafted student.

``distill_layer`` fits a freshly initialised operator to the teacher's captured (input → ungated output) pairs of one
layer and site. As in the official ``train_stage1.py``: AdamW, gradient clipping, one seed per layer
(``stage1.seed + layer``), the training MSE measured every ``eval_every`` epochs and the lowest one's weights kept
(``best_train.pt`` there, ``operator.pt`` here), validation always MSE whatever the training objective.

Where the paper and the code differ, ``Stage1Config`` names both: ``schedule="constant"`` (default; the paper's
"constant learning rate") or ``"official"`` (``train_stage1.py``'s MultiStepLR [50, 100, 150] γ 0.5 plus
ReduceLROnPlateau, called the way that loop calls them), and ``mlp_weight_decay`` (the code's 1e-5 for MLP operators;
default: ``weight_decay`` for both sites).

Data: one (layer, site) of the capture and nothing else. A pair up to ``IN_MEMORY_BYTES`` is loaded into memory as
one tensor (no data loader: its start-up cost exceeds a tiny layer's training); a larger one (paper scale: 2 × 4.7 GB in
fp16) is memory-mapped — on a GPU copied over chunk by chunk when it fits there, otherwise each batch is gathered from
the map — so stage 1 never holds a paper-sized array in RAM.

Each layer is an independent call (the driver runs them as a job array); a finished ``out_dir`` is reused.
"""
from __future__ import annotations

import bisect
import contextlib
import copy
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graft_core.stages.activation_stats import moments
from graft_core.stages.capture import load_capture, pair_nbytes
from graft_core.config import stable_hash, to_jsonable
from graft_core.runtime.paths import atomic_torch_save, atomic_write_json
from graft_core.presets import (STAGE1_GAMMA, STAGE1_MILESTONES, STAGE1_MIN_LR, STAGE1_PLATEAU, STAGE1_SCHEDULES,
                                Stage1Config)

OBJECTIVES = ("l1", "l2", "huber")
WEIGHTS_FILE = "operator.pt"
METRICS_FILE = "metrics.json"  # written last: its presence marks a finished layer
EVAL_CHUNK = 512  # samples per forward when measuring MSE over a whole capture
IN_MEMORY_BYTES = 2 << 30  # a pair's two arrays above this are memory-mapped instead of loaded into RAM
GPU_FRACTION = 0.6  # share of the free GPU memory the captures may take; beyond it batches stream from the map
KIND_INDEX = {"inputs": 0, "targets": 1}  # position in load_capture's (inputs, targets)


def regression_loss(objective: str, pred: torch.Tensor, target: torch.Tensor, huber_delta: float = 1.0) -> torch.Tensor:
    """The stage-1 objective: ``l1`` (paper's choice for MHA), ``l2`` (MLP) or ``huber`` (δ = ``huber_delta``)."""
    if objective == "l1":
        return F.l1_loss(pred, target)
    if objective == "l2":
        return F.mse_loss(pred, target)
    if objective == "huber":
        return F.huber_loss(pred, target, delta=huber_delta)
    raise ValueError(f"unknown stage-1 objective {objective!r}; choose one of {OBJECTIVES}")


def lr_source(stage1: Stage1Config) -> str:
    """Where the learning rate came from: ``paper`` (1e-4), ``code`` (5e-4 / 1e-3) or ``override`` (``stage1.lr``)."""
    return "override" if stage1.lr is not None else stage1.lr_source


@torch.no_grad()
def mse_over(op: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, device: torch.device,
             bf16: bool = False, conditioning: dict[str, torch.Tensor] | None = None) -> float:
    """Mean squared error of ``op`` over a whole capture, in chunks, in eval mode."""
    was_training = op.training
    op.eval()
    total, count = 0.0, 0
    for lo in range(0, len(inputs), EVAL_CHUNK):
        x = inputs[lo:lo + EVAL_CHUNK].to(device, torch.float32)
        y = targets[lo:lo + EVAL_CHUNK].to(device, torch.float32)
        with _autocast(device, bf16):
            pred = op(x, **_rows(conditioning, slice(lo, lo + EVAL_CHUNK), device))
        total += F.mse_loss(pred.float(), y, reduction="sum").item()
        count += y.numel()
    op.train(was_training)
    return total / max(1, count)


def _rows(conditioning: dict[str, torch.Tensor] | None, index, device: torch.device) -> dict[str, torch.Tensor]:
    """The per-sample keyword inputs of a module (a block pair's ``timestep`` and ``class_labels``) at ``index``."""
    if not conditioning:
        return {}
    return {k: v[index.to(v.device) if isinstance(index, torch.Tensor) else index].to(device)
            for k, v in conditioning.items()}


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def official_lr(base_lr: float, epoch: int) -> float:
    """The lr ``train_stage1.py`` trains 1-based ``epoch`` with: it calls ``MultiStepLR.step(epoch - 1)`` after each
    epoch, and an explicit epoch makes torch use the closed form ``base · γ^#(milestones ≤ epoch - 1)``."""
    return base_lr * STAGE1_GAMMA ** bisect.bisect_right(STAGE1_MILESTONES, epoch - 2) if epoch > 1 else base_lr


class OfficialSchedule:
    """``train_stage1.py``'s two schedulers, stepped as that loop steps them: at an MSE check
    ``ReduceLROnPlateau.step(val MSE)`` (our checks run every ``eval_every`` epochs; the code also checks after
    epoch 1), then after every epoch ``MultiStepLR.step(epoch - 1)``.

    That explicit epoch makes torch set the closed-form lr, which overwrites any plateau cut in the same call, so
    in the released loop (and here) the lr follows the milestones alone (``official_lr``); the plateau scheduler is
    kept so a torch whose ``step(epoch)`` chains instead would show up in the tests, not silently. The code steps the
    plateau on the gate-scaled validation MSE; our captures hold no gates, so the unscaled one is used (the training
    MSE when there is no held-out capture).
    """

    def __init__(self, opt: torch.optim.Optimizer, site: str):
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", min_lr=STAGE1_MIN_LR.get(site, STAGE1_MIN_LR["attn"]),
                                                                  **STAGE1_PLATEAU)
        self.step_lr = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(STAGE1_MILESTONES),
                                                            gamma=STAGE1_GAMMA)

    def end_of_epoch(self, epoch: int, checked_mse: float | None) -> None:
        if checked_mse is not None and math.isfinite(checked_mse):
            self.plateau.step(checked_mse)
        with warnings.catch_warnings():  # step(epoch) is deprecated, but it is what the official loop calls
            warnings.simplefilter("ignore", UserWarning)
            self.step_lr.step(epoch - 1)


def make_schedule(stage1: Stage1Config, opt: torch.optim.Optimizer, site: str) -> OfficialSchedule | None:
    if stage1.schedule not in STAGE1_SCHEDULES:
        raise ValueError(f"unknown stage-1 schedule {stage1.schedule!r}; choose one of {STAGE1_SCHEDULES}")
    return OfficialSchedule(opt, site) if stage1.schedule == "official" else None


def _place(t: torch.Tensor | None, device: torch.device, budget: list[int]) -> torch.Tensor | None:
    """``t`` on ``device`` when it fits the remaining GPU ``budget`` (copied chunk by chunk, so a memory-mapped
    capture is never read into RAM whole); otherwise left where it is and batches are gathered from it."""
    if t is None or t.device == device:
        return t
    if device.type == "cpu":
        return t.to(device)
    nbytes = t.numel() * t.element_size()
    if nbytes > budget[0]:
        return t
    budget[0] -= nbytes
    out = torch.empty(t.shape, dtype=t.dtype, device=device)
    for lo in range(0, len(t), EVAL_CHUNK):
        out[lo:lo + EVAL_CHUNK].copy_(t[lo:lo + EVAL_CHUNK])
    return out


def _gpu_budget(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    free, _total = torch.cuda.mem_get_info(device)
    return int(free * GPU_FRACTION)


def plateaued(history: list[dict], stage1: Stage1Config, has_val: bool) -> bool:
    """Early stopping: the monitored MSE (validation, else training) of the newest check improved by less than
    ``early_stop_min_rel`` over the checks of the last ``early_stop_window`` epochs."""
    window = stage1.early_stop_window
    if not window or len(history) < 2:
        return False
    key = "val_mse" if has_val else "train_mse"
    now = history[-1]
    past = [h for h in history if h["epoch"] <= now["epoch"] - window]
    if not past:
        return False
    before = min((h[key] for h in past if h[key] is not None and math.isfinite(h[key])), default=None)
    if before is None or now[key] is None:
        return False
    return now[key] >= before * (1 - stage1.early_stop_min_rel)


class OperatorTrainer:
    """The one stage-1 training step and its bookkeeping for one operator: AdamW, the objective, gradient clipping,
    the lr schedule, the MSE checks (history, best-train-MSE weights, early stopping) and divergence.

    Fed by a data loop: ``train_operator`` (a capture in memory, batches in this operator's own order) or
    ``graft_core.stages.online`` (every grafted layer's operator from one teacher forward per batch). A batch may
    come in micro-batches (``begin_step`` / ``accumulate(weight=size/batch)`` / ``end_step``): the weighted sum of
    their mean losses is the batch's mean loss, so the gradient is the whole batch's. ``state_dict`` holds everything
    a resumed run needs to continue exactly.
    """

    def __init__(self, op: nn.Module, *, stage1: Stage1Config, site: str, device: torch.device, bf16: bool,
                 has_val: bool):
        self.objective = stage1.objective_for(site)
        regression_loss(self.objective, torch.zeros(1), torch.zeros(1))  # validate the name before any work
        self.stage1, self.site, self.device, self.bf16, self.has_val = stage1, site, device, bf16, has_val
        self.lr, self.weight_decay = stage1.lr_for(site), stage1.weight_decay_for(site)
        self.op = op.to(device).train()
        self.opt = torch.optim.AdamW(self.op.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.schedule = make_schedule(stage1, self.opt, site)
        self.history: list[dict] = []
        self.best_mse, self.best_epoch, self.best_state = math.inf, 0, None
        self.diverged_at = self.stopped_at = None
        self.epoch_lr, self.loss_sum, self.batches = self.lr, 0.0, 0
        self._pending, self._bad = 0.0, False

    @property
    def active(self) -> bool:
        return self.diverged_at is None and self.stopped_at is None

    def start(self, initial_train: float, initial_val: float | None) -> None:
        """The untrained operator's MSEs; it is the fallback: a run that never improves (or diverges) keeps it,
        never a NaN state."""
        self.history = [{"epoch": 0, "train_loss": None, "train_mse": initial_train, "val_mse": initial_val,
                         "lr": self.lr}]
        self.best_mse, self.best_epoch = initial_train, 0
        self.best_state = {k: v.detach().clone() for k, v in self.op.state_dict().items()}

    def begin_epoch(self) -> None:
        self.epoch_lr, self.loss_sum, self.batches = self.opt.param_groups[0]["lr"], 0.0, 0

    def begin_step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._pending, self._bad = 0.0, False

    def accumulate(self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0, **conditioning) -> None:
        """Forward and backward of one (micro-)batch; a non-finite loss marks the step diverged (no update)."""
        if self._bad:
            return
        with _autocast(self.device, self.bf16):
            pred = self.op(x.float(), **conditioning)
        loss = regression_loss(self.objective, pred.float(), y.float(), self.stage1.huber_delta)
        if not torch.isfinite(loss):  # diverged (seen with Mamba-2 at lr 5e-4): stop, keep the best state
            self._bad = True
            return
        (loss if weight == 1.0 else loss * weight).backward()
        self._pending += loss.item() * weight

    def end_step(self, epoch: int) -> bool:
        """Clip and apply the accumulated gradient; False (and training of this operator ends) when it diverged."""
        if self._bad:
            self.diverged_at = epoch
            return False
        if self.stage1.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.op.parameters(), self.stage1.grad_clip)
        self.opt.step()
        self.loss_sum += self._pending
        self.batches += 1
        return True

    def is_check(self, epoch: int) -> bool:
        return epoch % self.stage1.eval_every == 0 or epoch == self.stage1.epochs

    def end_epoch(self, epoch: int, mses: tuple[float, float | None] | None) -> None:
        """Record a check (``mses`` = (train MSE, val MSE) at a check epoch, else None), keep the best weights, step
        the schedule, stop early on a plateau."""
        checked = None
        if mses is not None:
            epoch_train, epoch_val = mses
            self.history.append({"epoch": epoch, "train_loss": self.loss_sum / max(1, self.batches),
                                 "train_mse": epoch_train, "val_mse": epoch_val, "lr": self.epoch_lr})
            checked = epoch_val if self.has_val else epoch_train
            if math.isfinite(epoch_train) and epoch_train < self.best_mse:
                self.best_mse, self.best_epoch = epoch_train, epoch
                self.best_state = {k: v.detach().clone() for k, v in self.op.state_dict().items()}
        if self.schedule is not None:
            self.schedule.end_of_epoch(epoch, checked)
        if checked is not None and plateaued(self.history, self.stage1, self.has_val):
            self.stopped_at = epoch

    def result(self, *, num_samples: int, seed: int, target_var: float, seconds: float
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The best-train-MSE state (loaded into the operator) and the metrics of ``distill_layer``."""
        self.op.load_state_dict(self.best_state)
        s1, best_mse = self.stage1, self.best_mse
        first = self.history[0]
        best_val = next(h["val_mse"] for h in self.history if h["epoch"] == self.best_epoch)
        metrics = {
            "train_mse": best_mse, "val_mse": best_val, "best_epoch": self.best_epoch,
            "initial_train_mse": first["train_mse"], "initial_val_mse": first["val_mse"],
            # MSE / Var(target): 1 = as good as predicting the mean
            "train_rel_mse": best_mse / target_var if target_var > 0 else None,
            "target_var": target_var,
            "objective": self.objective, "huber_delta": s1.huber_delta if self.objective == "huber" else None,
            "lr": self.lr, "lr_source": lr_source(s1), "schedule": s1.schedule,
            "final_lr": self.opt.param_groups[0]["lr"], "weight_decay": self.weight_decay, "epochs": s1.epochs,
            "batch_size": s1.batch_size, "num_samples": num_samples, "seed": seed, "bf16": self.bf16,
            "seconds": round(seconds, 3), "seconds_per_epoch": round(seconds / max(1, self.history[-1]["epoch"]), 4),
            "history": self.history,
            "stopped_at_epoch": self.stopped_at,  # None, or the check at which early stopping ended training
            "diverged_at_epoch": self.diverged_at,  # None, or the epoch whose loss went non-finite (training stopped)
        }
        return self.best_state, metrics

    def state_dict(self) -> dict:
        return {"op": self.op.state_dict(), "opt": self.opt.state_dict(),
                "schedule": None if self.schedule is None else {"plateau": self.schedule.plateau.state_dict(),
                                                                "step_lr": self.schedule.step_lr.state_dict()},
                "history": self.history, "best_mse": self.best_mse, "best_epoch": self.best_epoch,
                "best_state": self.best_state, "diverged_at": self.diverged_at, "stopped_at": self.stopped_at,
                "epoch_lr": self.epoch_lr, "loss_sum": self.loss_sum, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.op.load_state_dict(state["op"])
        self.opt.load_state_dict(state["opt"])
        if self.schedule is not None:
            self.schedule.plateau.load_state_dict(state["schedule"]["plateau"])
            self.schedule.step_lr.load_state_dict(state["schedule"]["step_lr"])
        self.history, self.best_mse, self.best_epoch = state["history"], state["best_mse"], state["best_epoch"]
        self.best_state = {k: v.to(self.device) for k, v in state["best_state"].items()}
        self.diverged_at, self.stopped_at = state["diverged_at"], state["stopped_at"]
        self.epoch_lr, self.loss_sum, self.batches = state["epoch_lr"], state["loss_sum"], state["batches"]


def train_operator(op: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, stage1: Stage1Config, site: str,
                   seed: int, val_inputs: torch.Tensor | None = None, val_targets: torch.Tensor | None = None,
                   device: torch.device | str = "cpu", bf16: bool = False, progress: bool = False,
                   conditioning: dict[str, torch.Tensor] | None = None,
                   val_conditioning: dict[str, torch.Tensor] | None = None,
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fit ``op`` to ``inputs → targets`` (``[S, N, D]`` each). Returns the best-train-MSE state dict and metrics.

    The captured data feed of the one stage-1 step (``OperatorTrainer``): ``op`` is an operator (called ``op(x)``)
    or any module that also needs per-sample keyword inputs, given as ``conditioning`` (e.g. a depth→width block
    pair: ``pair(h, timestep=t, class_labels=y)``). Deterministic given ``seed`` (batch order) and the module's
    initial weights.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    budget = [_gpu_budget(device)]
    inputs, targets = _place(inputs, device, budget), _place(targets, device, budget)
    val_inputs, val_targets = _place(val_inputs, device, budget), _place(val_targets, device, budget)
    has_val = val_inputs is not None and val_targets is not None
    trainer = OperatorTrainer(op, stage1=stage1, site=site, device=device, bf16=bf16, has_val=has_val)
    op = trainer.op
    target_var = moments(targets)[1]
    gen = torch.Generator().manual_seed(seed)
    n = len(inputs)

    def mses() -> tuple[float, float | None]:
        train = mse_over(op, inputs, targets, device=device, bf16=bf16, conditioning=conditioning)
        val = (mse_over(op, val_inputs, val_targets, device=device, bf16=bf16, conditioning=val_conditioning)
               if has_val else None)
        return train, val

    trainer.start(*mses())
    start = time.time()
    for epoch in tqdm(range(1, stage1.epochs + 1), desc=f"stage1 {site}", disable=not progress, mininterval=5):
        trainer.begin_epoch()
        perm = torch.randperm(n, generator=gen)
        perms = {d: perm.to(d) for d in {inputs.device, targets.device}}  # streamed data is indexed on the CPU
        for lo in range(0, n, stage1.batch_size):
            x = inputs[perms[inputs.device][lo:lo + stage1.batch_size]].to(device)
            y = targets[perms[targets.device][lo:lo + stage1.batch_size]].to(device)
            trainer.begin_step()
            trainer.accumulate(x, y, **_rows(conditioning, perm[lo:lo + stage1.batch_size], device))
            if not trainer.end_step(epoch):
                break
        if not trainer.active:
            break
        trainer.end_epoch(epoch, mses() if trainer.is_check(epoch) else None)
        if not trainer.active:
            break
    return trainer.result(num_samples=n, seed=seed, target_var=target_var, seconds=time.time() - start)


def _stage1_spec(*, layer, site, operator, options, stage1, dim, num_heads, seq_len, bf16, train_capture,
                 val_capture) -> dict:
    return {"layer": layer, "site": site, "operator": operator, "options": dict(options or {}), "stage1": stage1,
            "dim": dim, "num_heads": num_heads, "seq_len": seq_len, "bf16": bf16,
            "train_capture": Path(train_capture).name, "val_capture": Path(val_capture).name if val_capture else None}


def distill_layer(train_capture: Path, val_capture: Path | None, *, layer: int, site: str, operator: str,
                  options: dict | None, stage1: Stage1Config, dim: int, num_heads: int, seq_len: int,
                  out_dir: Path, device: torch.device | str | None = None, bf16: bool = False,
                  progress: bool = False) -> dict:
    """Train one operator for one layer against a capture; write ``out_dir/operator.pt`` then ``metrics.json``.

    The operator is built with ``graft_core.operators.build(operator, dim, num_heads=, seq_len=, **options)`` under
    the seed ``stage1.seed + layer`` (which also orders the batches). ``val_capture`` (the held-out capture) may be
    ``None``. ``bf16`` autocasts the operator's forward (the official code trains in bf16; not a Stage1Config field).
    A finished ``out_dir`` with the same spec is returned without training.
    """
    from graft_core import operators
    from graft_core.models.teacher import use_fast_operator_attention

    out_dir = Path(out_dir)
    device = torch.device(device) if device is not None else _default_device()
    spec = _stage1_spec(layer=layer, site=site, operator=operator, options=options, stage1=stage1, dim=dim,
                        num_heads=num_heads, seq_len=seq_len, bf16=bf16, train_capture=train_capture,
                        val_capture=val_capture)
    spec_hash = stable_hash(spec)
    done = finished(out_dir, spec_hash)
    if done is not None:
        return done
    seed = stage1.seed + layer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        op = operators.build(operator, dim, num_heads=num_heads, seq_len=seq_len, **dict(options or {}))
    use_fast_operator_attention(op, seq_len, device)
    x, y = load_pair(train_capture, layer, site, device)
    vx, vy = load_pair(val_capture, layer, site, device) if val_capture is not None else (None, None)
    state, metrics = train_operator(op, x, y, val_inputs=vx, val_targets=vy, stage1=stage1, site=site, seed=seed,
                                    device=device, bf16=bf16, progress=progress)
    metrics.update(layer=layer, site=site, operator=operator, options=dict(options or {}),
                   num_params=sum(p.numel() for p in op.parameters()))
    return save_result(out_dir, state, metrics, spec)


def finished(out_dir: Path, spec_hash: str) -> dict | None:
    """The metrics of ``out_dir`` when it holds a finished result of the same spec, else None (train again)."""
    done = read_metrics(out_dir)
    if done is not None and done.get("spec_hash") == spec_hash and (Path(out_dir) / WEIGHTS_FILE).exists():
        return done
    return None


def save_result(out_dir: Path, state: dict[str, torch.Tensor], metrics: dict, spec: dict) -> dict:
    """Write the trained weights, then the metrics with the spec (their presence marks the result finished)."""
    metrics = {**metrics, "spec": to_jsonable(spec), "spec_hash": stable_hash(spec)}
    atomic_torch_save({k: v.cpu() for k, v in state.items()}, Path(out_dir) / WEIGHTS_FILE)
    atomic_write_json(Path(out_dir) / METRICS_FILE, metrics)
    return metrics


def load_pair(capture: Path, layer: int, site: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One (layer, site) of a capture for stage 1: ``(inputs, targets)`` as :func:`load_array` places them."""
    return load_array(capture, layer, site, "inputs", device), load_array(capture, layer, site, "targets", device)


def load_array(capture: Path, layer: int, site: str, kind: str, device: torch.device) -> torch.Tensor:
    """The ``inputs`` or ``targets`` of one (layer, site). While the pair's arrays fit ``IN_MEMORY_BYTES``: in
    memory, fp32 on CPU (faster) and the stored 16-bit dtype on a GPU (half the memory; batches are cast to fp32).
    Larger: memory-mapped in the stored dtype, never read whole into RAM (``train_operator`` copies it to the GPU in
    chunks or streams batches)."""
    x = load_capture(capture, layer, site, mmap=True)[KIND_INDEX[kind]]  # maps only: nothing is read yet
    if pair_nbytes(capture, layer, site) > IN_MEMORY_BYTES:
        return x
    if device.type == "cuda":
        dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float16
    else:
        dtype = torch.float32
    return x.to(dtype, copy=True)


def read_metrics(out_dir: Path) -> dict | None:
    """The metrics of a finished stage-1 folder, or ``None``."""
    import json

    path = Path(out_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def load_operator_state(out_dir: Path) -> dict[str, torch.Tensor]:
    path = Path(out_dir) / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no stage-1 operator in {out_dir} ({WEIGHTS_FILE} missing); run distill_layer first")
    return torch.load(path, map_location="cpu", weights_only=True)


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# --------------------------------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------------------------------


def assemble(teacher: nn.Module, plan, stage1_dirs: dict[int, Path] | None, *, seed: int | None = 0) -> nn.Module:
    """Deep-copy the teacher, graft ``plan`` (a ``GraftPlan`` or several of them) and load each layer's stage-1
    operator.

    ``stage1_dirs=None`` keeps every grafted operator at its fresh initialisation (the random-init control). The
    fresh operators are built under ``seed + layer`` (``surgery.graft``); with ``seed = stage1.seed`` they are exactly
    the operators stage 1 starts from. A dict must cover every layer of the plan. Returns the student in eval mode;
    the teacher is untouched.
    """
    from graft_core.grafting import surgery
    from graft_core.grafting.plan import as_plans

    plans = as_plans(plan)  # one plan, or several (one per operator: a per-layer choice of operators)
    if stage1_dirs is not None:
        missing = sorted({layer for p in plans for layer in p.layers} - set(stage1_dirs))
        if missing:
            raise ValueError(f"stage1_dirs lacks layers {missing} of the plan (has {sorted(stage1_dirs)})")
    model = surgery.graft(copy.deepcopy(teacher), plans, seed=seed)
    if stage1_dirs is not None:
        for p in plans:
            for layer in p.layers:
                op = getattr(model.transformer_blocks[layer], surgery.SITE_ATTR[p.site])
                op.load_state_dict(load_operator_state(stage1_dirs[layer]), strict=True)
    return model.eval()


def distill_plan(train_capture: Path, val_capture: Path | None, plan, *, stage1: Stage1Config, dim: int,
                 num_heads: int, seq_len: int, out_root: Path, **kwargs) -> dict[int, Path]:
    """Stage 1 for every layer of ``plan`` one after the other (the local alternative to a job array).

    Layer ``i`` goes to ``out_root/layer_iii``; returns ``{layer: folder}`` for ``assemble``.
    """
    dirs = {}
    for layer in plan.layers:
        dirs[layer] = Path(out_root) / f"layer_{layer:03d}"
        distill_layer(train_capture, val_capture, layer=layer, site=plan.site, operator=plan.operator,
                      options=plan.option_dict, stage1=stage1, dim=dim, num_heads=num_heads,
                      seq_len=plan.seq_len or seq_len, out_dir=dirs[layer], **kwargs)
    return dirs
