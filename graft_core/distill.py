"""Stage 1 — activation distillation of one operator per layer (paper §3.1), and assembly of the grafted student.

``distill_layer`` fits a freshly initialised operator to the teacher's captured (input → ungated output) pairs of one
layer and site. As in the official ``train_stage1.py``: AdamW, gradient clipping, one seed per layer
(``stage1.seed + layer``), the training MSE measured every ``eval_every`` epochs and the lowest one's weights kept
(``best_train.pt`` there, ``operator.pt`` here), validation always MSE whatever the training objective. Unlike the
official code the learning rate is **constant** (the paper's statement; the code adds MultiStepLR + ReduceLROnPlateau)
and the whole capture is held in memory as one tensor (no data loader: tiny-testbed.md lesson 4).

Each layer is an independent call (the driver runs them as a job array); a finished ``out_dir`` is reused.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graft_core.activation_stats import moments
from graft_core.capture import load_capture
from graft_core.config import stable_hash, to_jsonable
from graft_core.paths import atomic_torch_save, atomic_write_json
from graft_core.presets import Stage1Config

OBJECTIVES = ("l1", "l2", "huber")
WEIGHTS_FILE = "operator.pt"
METRICS_FILE = "metrics.json"  # written last: its presence marks a finished layer
EVAL_CHUNK = 512  # samples per forward when measuring MSE over a whole capture


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
             bf16: bool = False) -> float:
    """Mean squared error of ``op`` over a whole capture, in chunks, in eval mode."""
    was_training = op.training
    op.eval()
    total, count = 0.0, 0
    for lo in range(0, len(inputs), EVAL_CHUNK):
        x = inputs[lo:lo + EVAL_CHUNK].to(device, torch.float32)
        y = targets[lo:lo + EVAL_CHUNK].to(device, torch.float32)
        with _autocast(device, bf16):
            pred = op(x)
        total += F.mse_loss(pred.float(), y, reduction="sum").item()
        count += y.numel()
    op.train(was_training)
    return total / max(1, count)


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train_operator(op: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, stage1: Stage1Config, site: str,
                   seed: int, val_inputs: torch.Tensor | None = None, val_targets: torch.Tensor | None = None,
                   device: torch.device | str = "cpu", bf16: bool = False, progress: bool = False
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fit ``op`` to ``inputs → targets`` (``[S, N, D]`` each). Returns the best-train-MSE state dict and metrics.

    Deterministic given ``seed`` (batch order) and the operator's initial weights.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    objective = stage1.objective_for(site)
    regression_loss(objective, torch.zeros(1), torch.zeros(1))  # validate the name before any work
    lr = stage1.lr_for(site)
    op = op.to(device).train()
    inputs, targets = inputs.to(device), targets.to(device)
    has_val = val_inputs is not None and val_targets is not None
    target_var = moments(targets)[1]
    opt = torch.optim.AdamW(op.parameters(), lr=lr, weight_decay=stage1.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(inputs)

    def val_mse() -> float | None:
        return mse_over(op, val_inputs, val_targets, device=device, bf16=bf16) if has_val else None

    initial_train, initial_val = mse_over(op, inputs, targets, device=device, bf16=bf16), val_mse()
    history = [{"epoch": 0, "train_loss": None, "train_mse": initial_train, "val_mse": initial_val}]
    # the untrained operator is the fallback: a run that never improves (or diverges) keeps it, never a NaN state
    best_mse, best_epoch = initial_train, 0
    best_state = {k: v.detach().clone() for k, v in op.state_dict().items()}
    diverged_at = None
    start = time.time()
    for epoch in tqdm(range(1, stage1.epochs + 1), desc=f"stage1 {site}", disable=not progress, mininterval=5):
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum, batches = 0.0, 0
        for lo in range(0, n, stage1.batch_size):
            idx = perm[lo:lo + stage1.batch_size]
            with _autocast(device, bf16):
                pred = op(inputs[idx].float())
            loss = regression_loss(objective, pred.float(), targets[idx].float(), stage1.huber_delta)
            if not torch.isfinite(loss):  # diverged (seen with Mamba-2 at lr 5e-4): stop, keep the best state
                diverged_at = epoch
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if stage1.grad_clip:
                torch.nn.utils.clip_grad_norm_(op.parameters(), stage1.grad_clip)
            opt.step()
            loss_sum += loss.item()
            batches += 1
        if diverged_at is not None:
            break
        if epoch % stage1.eval_every == 0 or epoch == stage1.epochs:
            train_mse = mse_over(op, inputs, targets, device=device, bf16=bf16)
            history.append({"epoch": epoch, "train_loss": loss_sum / batches, "train_mse": train_mse,
                            "val_mse": val_mse()})
            if math.isfinite(train_mse) and train_mse < best_mse:
                best_mse, best_epoch = train_mse, epoch
                best_state = {k: v.detach().clone() for k, v in op.state_dict().items()}
    seconds = time.time() - start
    op.load_state_dict(best_state)
    best_val = next(h["val_mse"] for h in history if h["epoch"] == best_epoch)
    metrics = {
        "train_mse": best_mse, "val_mse": best_val, "best_epoch": best_epoch,
        "initial_train_mse": initial_train, "initial_val_mse": initial_val,
        # MSE / Var(target): 1 = as good as predicting the mean
        "train_rel_mse": best_mse / target_var if target_var > 0 else None,
        "target_var": target_var,
        "objective": objective, "huber_delta": stage1.huber_delta if objective == "huber" else None,
        "lr": lr, "lr_source": lr_source(stage1), "epochs": stage1.epochs, "batch_size": stage1.batch_size,
        "num_samples": n, "seed": seed, "bf16": bf16, "seconds": round(seconds, 3),
        "seconds_per_epoch": round(seconds / max(1, stage1.epochs), 4), "history": history,
        "diverged_at_epoch": diverged_at,  # None, or the epoch whose loss went non-finite (training stopped there)
    }
    return best_state, metrics


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

    out_dir = Path(out_dir)
    device = torch.device(device) if device is not None else _default_device()
    spec = _stage1_spec(layer=layer, site=site, operator=operator, options=options, stage1=stage1, dim=dim,
                        num_heads=num_heads, seq_len=seq_len, bf16=bf16, train_capture=train_capture,
                        val_capture=val_capture)
    spec_hash = stable_hash(spec)
    done = read_metrics(out_dir)
    if done is not None and done.get("spec_hash") == spec_hash and (out_dir / WEIGHTS_FILE).exists():
        return done
    seed = stage1.seed + layer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        op = operators.build(operator, dim, num_heads=num_heads, seq_len=seq_len, **dict(options or {}))
    # fp16 on a GPU halves the memory of paper-sized captures (batches are cast to fp32); fp32 on CPU is faster
    data_dtype = torch.float16 if device.type == "cuda" else torch.float32
    x, y = load_capture(train_capture, layer, site, dtype=data_dtype)
    vx, vy = (load_capture(val_capture, layer, site, dtype=data_dtype) if val_capture is not None
              else (None, None))
    state, metrics = train_operator(op, x, y, val_inputs=vx, val_targets=vy, stage1=stage1, site=site, seed=seed,
                                    device=device, bf16=bf16, progress=progress)
    metrics.update(layer=layer, site=site, operator=operator, options=dict(options or {}),
                   num_params=sum(p.numel() for p in op.parameters()), spec=to_jsonable(spec), spec_hash=spec_hash)
    atomic_torch_save({k: v.cpu() for k, v in state.items()}, out_dir / WEIGHTS_FILE)
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    return metrics


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
    """Deep-copy the teacher, graft ``plan`` and load each layer's stage-1 operator.

    ``stage1_dirs=None`` keeps every grafted operator at its fresh initialisation (the random-init control). The
    fresh operators are built under ``seed + layer`` (``surgery.graft``); with ``seed = stage1.seed`` they are exactly
    the operators stage 1 starts from. A dict must cover every layer of the plan. Returns the student in eval mode;
    the teacher is untouched.
    """
    from graft_core import surgery

    if stage1_dirs is not None:
        missing = sorted(set(plan.layers) - set(stage1_dirs))
        if missing:
            raise ValueError(f"stage1_dirs lacks layers {missing} of the plan (has {sorted(stage1_dirs)})")
    model = surgery.graft(copy.deepcopy(teacher), plan, seed=seed)
    if stage1_dirs is not None:
        for layer in plan.layers:
            op = getattr(model.transformer_blocks[layer], surgery.SITE_ATTR[plan.site])
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
