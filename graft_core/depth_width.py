"""Depth → width as a full experiment (paper Table 6, §4.9, §9): one row of ``python -m benchmark.run table6``.

``run_row`` takes the preset's teacher (paper: DiT-XL/2; tiny: the tiny DiT of ``graft_core.teacher``), rewires
blocks ``(2i, 2i+1)`` into parallel pairs (``graft_core.restructure.to_parallel_pairs``: both blocks read the same
input, ``x + W·[d_a; d_b] + b`` with ``W = [I, I]``, both blocks keep their pretrained weights) and then

1. **stage 1, per pair** — the frozen teacher runs once over the stage-1 subset (one uniform timestep per image, the
   true label); the hidden state entering block ``2i`` and the one leaving block ``2i+1`` are recorded
   (``capture_boundaries``), and the whole pair (both blocks and the merge) regresses the sequential pair's output
   from its input with **L1** (paper), validation MSE on the held-out twin, the best-train-MSE weights kept;
2. **stage 2** — end-to-end diffusion loss on **25 %** of the training data (``graft_core.finetune``), with linear
   warm-up and the lr **halved twice**: at 75k and 150k iterations (paper; total iterations UNKNOWN, we run 200k) or,
   scaled, at 1/2 and 3/4 of the run (tiny: 600 steps = 2× the tiny Table-4 budget, halvings at 300 and 450);
3. **evaluation** with the full metric set (``evaluate.evaluate_model``), the parameter count
   (``accounting.count_params``: diffusers' per-block timestep/label embedder counted once, as the DiT paper counts)
   and the forward **speed-up** over the sequential teacher: one forward pass, batch 2 (paper: H100), on this machine.
   With ``control`` (tiny), the sequential teacher also goes through the identical stage 2 and is scored, to separate
   what the rewiring costs from what the extra training gives (tiny-testbed.md lesson 1).

Speed-up: ``ParallelPair`` runs its two blocks one after the other, so in eager mode the parallel model does the same
sequential work as the teacher plus the merges (``speedup_eager`` ≈ 1 or below). The rewiring pays off only when the
two blocks of a pair execute *together*: ``FusedPair`` computes both blocks as one batched computation (stacked
weights, ``baddbmm``, one attention call over ``2B`` sequences), checked equal to the eager pair. ``speedup`` is the
fused model's; both are reported with the per-model latencies (minimum over interleaved repeats, the estimate least
disturbed by other processes on a shared machine; the medians are reported too).

Resumable: stage 1 writes ``stage1/pair_XX/{pair.pt,metrics.json}``, stage 2 checkpoints under ``stage2/``, the
evaluations ``eval_*.json``; a rerun skips every finished part. Deterministic under ``preset.stage1.seed`` /
``preset.stage2.seed`` (same machine, same thread count).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from graft_core.config import plain, stable_hash, to_jsonable
from graft_core.paths import atomic_torch_save, atomic_write_json
from graft_core.presets import Preset, Stage2Config
from graft_core.restructure import ParallelPair, to_parallel_pairs


@dataclass(frozen=True)
class DepthWidthConfig:
    """What the depth→width row adds to the preset (paper §4.9 / §9; UNKNOWN values are our choices, marked)."""

    stage1_objective: str = "l1"  # paper
    stage1_lr: float = 1e-4  # paper's stage-1 lr (§3.1); the pairs start from pretrained weights
    stage2_data_fraction: float = 0.25  # paper
    stage2_steps: int = 200_000  # UNKNOWN in the paper (halvings at 75k and 150k ⇒ longer than 150k); ours
    lr_halvings: tuple[int, ...] = (75_000, 150_000)  # paper
    speed_batch: int = 2  # paper: one forward pass, batch 2
    speed_repeats: int = 30
    eval_stage1: bool = False  # also score the stage-1-only model (before stage 2)
    control: bool = False  # also the teacher + the identical stage 2 (tiny-testbed.md lesson 1)


DEPTH_WIDTH_PRESETS = {
    "paper": DepthWidthConfig(),
    # 2× the tiny Table-4 stage-2 budget (300 steps), halvings at 1/2 and 3/4 of it.
    "tiny": DepthWidthConfig(stage2_steps=600, lr_halvings=(300, 450), eval_stage1=True, control=True),
    "micro": DepthWidthConfig(stage2_steps=6, lr_halvings=(3, 5), speed_repeats=3, eval_stage1=True, control=True),
}


def row_settings(preset_name: str) -> dict:
    """This module's own settings for a preset: part of the ``table6`` runs' identity (``benchmark.dag``)."""
    return {"depth_width": DEPTH_WIDTH_PRESETS.get(preset_name)}


def depth_width_config(preset: Preset) -> DepthWidthConfig:
    try:
        return DEPTH_WIDTH_PRESETS[preset.name]
    except KeyError:
        raise ValueError(f"no depth→width config for preset {preset.name!r}; known: {', '.join(DEPTH_WIDTH_PRESETS)}"
                         ) from None


def stage2_config(preset: Preset, cfg: DepthWidthConfig) -> Stage2Config:
    return dataclasses.replace(preset.stage2, data_fraction=cfg.stage2_data_fraction, steps=cfg.stage2_steps,
                               checkpoint_every=min(preset.stage2.checkpoint_every, cfg.stage2_steps))


# --------------------------------------------------------------------------------------------------------------------
# Stage 1: capture block-pair boundaries, distil each pair
# --------------------------------------------------------------------------------------------------------------------


@torch.inference_mode()
def capture_boundaries(teacher: nn.Module, preset: Preset, split: str, *, batch_size: int = 256
                       ) -> dict[str, torch.Tensor]:
    """The hidden states at every pair boundary: ``h`` ``[L/2 + 1, S, N, D]`` (input of blocks 0, 2, …, output of
    the last), with the timesteps ``t`` and labels ``y`` of the ``S`` samples (capture protocol of ``capture.py``)."""
    from graft_core.capture import capture_subset
    from graft_core.diffusion import make_train_scheduler

    images, labels, _ = capture_subset(preset, split)
    gen = torch.Generator().manual_seed(preset.stage1.seed)
    t = torch.randint(0, preset.teacher.num_train_timesteps, (len(labels),), generator=gen)
    x_t = make_train_scheduler(preset.teacher).add_noise(images, torch.randn(images.shape, generator=gen), t)
    blocks = teacher.transformer_blocks
    record: dict[int, torch.Tensor] = {}
    handles = [blocks[i].register_forward_pre_hook(lambda m, args, kwargs, i=i: record.__setitem__(i, args[0]),
                                                   with_kwargs=True) for i in range(0, len(blocks), 2)]
    handles.append(blocks[-1].register_forward_hook(lambda m, args, out: record.__setitem__(len(blocks), out)))
    chunks = []
    was_training = teacher.training
    teacher.eval()
    try:
        for lo in range(0, len(labels), batch_size):
            teacher(x_t[lo:lo + batch_size], timestep=t[lo:lo + batch_size], class_labels=labels[lo:lo + batch_size],
                    return_dict=False)
            chunks.append(torch.stack([record[i].float() for i in sorted(record)]))
            record.clear()
    finally:
        for h in handles:
            h.remove()
        teacher.train(was_training)
    return {"h": torch.cat(chunks, dim=1), "t": t, "y": labels}


def _pair_mse(pair: nn.Module, h_in, h_out, t, y, bf16: bool, chunk: int = 512) -> float:
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(bf16):
        for lo in range(0, len(h_in), chunk):
            pred = pair(h_in[lo:lo + chunk], timestep=t[lo:lo + chunk], class_labels=y[lo:lo + chunk]).float()
            total += F.mse_loss(pred, h_out[lo:lo + chunk], reduction="sum").item()
            count += pred.numel()
    return total / max(1, count)


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def distill_pair(pair: ParallelPair, train: dict, val: dict | None, index: int, *, preset: Preset,
                 cfg: DepthWidthConfig, bf16: bool, progress: bool = False) -> tuple[dict, dict]:
    """Fit the whole pair (both blocks + merge) to the sequential pair ``index``; returns (best state, metrics)."""
    from tqdm.auto import tqdm

    from graft_core.distill import regression_loss

    s1 = preset.stage1
    h_in, h_out, t, y = train["h"][index], train["h"][index + 1], train["t"], train["y"]
    val_args = (val["h"][index], val["h"][index + 1], val["t"], val["y"]) if val is not None else None
    pair.train()
    opt = torch.optim.AdamW(pair.parameters(), lr=cfg.stage1_lr, weight_decay=s1.weight_decay)
    gen = torch.Generator().manual_seed(s1.seed + index)
    target_var = h_out.var().item()
    init_train = _pair_mse(pair, h_in, h_out, t, y, bf16)
    init_val = _pair_mse(pair, *val_args, bf16) if val_args else None
    best = (init_train, 0, copy.deepcopy(pair.state_dict()), init_val)
    history, start = [], time.time()
    for epoch in tqdm(range(1, s1.epochs + 1), desc=f"stage1 pair {index}", disable=not progress, mininterval=10):
        perm = torch.randperm(len(h_in), generator=gen)
        for lo in range(0, len(h_in), s1.batch_size):
            idx = perm[lo:lo + s1.batch_size]
            with _autocast(bf16):
                pred = pair(h_in[idx], timestep=t[idx], class_labels=y[idx])
            loss = regression_loss(cfg.stage1_objective, pred.float(), h_out[idx], s1.huber_delta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if s1.grad_clip:
                torch.nn.utils.clip_grad_norm_(pair.parameters(), s1.grad_clip)
            opt.step()
        if epoch % s1.eval_every == 0 or epoch == s1.epochs:
            train_mse = _pair_mse(pair, h_in, h_out, t, y, bf16)
            val_mse = _pair_mse(pair, *val_args, bf16) if val_args else None
            history.append({"epoch": epoch, "train_mse": train_mse, "val_mse": val_mse})
            if train_mse < best[0]:
                best = (train_mse, epoch, copy.deepcopy(pair.state_dict()), val_mse)
    metrics = {"pair": index, "blocks": [2 * index, 2 * index + 1], "objective": cfg.stage1_objective,
               "lr": cfg.stage1_lr, "epochs": s1.epochs, "batch_size": s1.batch_size, "num_samples": len(h_in),
               "initial_train_mse": init_train, "initial_val_mse": init_val, "train_mse": best[0],
               "best_epoch": best[1], "val_mse": best[3], "target_var": target_var,
               "train_rel_mse": best[0] / target_var if target_var > 0 else None,
               "seconds": round(time.time() - start, 2), "history": history}
    return best[2], metrics


# --------------------------------------------------------------------------------------------------------------------
# Stage 2 learning-rate schedule: warm-up, then halvings
# --------------------------------------------------------------------------------------------------------------------


class WarmupHalvings:
    """LambdaLR factor: linear warm-up over ``steps``, then ×0.5 at each milestone (picklable, state in __dict__)."""

    def __init__(self, steps: int, milestones: tuple[int, ...] = ()):
        self.steps, self.milestones = steps, tuple(milestones)

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / max(1, self.steps)) * 0.5 ** sum(step >= m for m in self.milestones)


@contextlib.contextmanager
def lr_halvings(milestones: tuple[int, ...]):
    """Make ``graft_core.finetune`` use ``WarmupHalvings`` for the duration of one call.

    ``finetune`` builds ``LambdaLR(opt, Warmup(stage2.warmup_steps))`` with a constant lr after warm-up and has no
    schedule option; this swaps its ``Warmup`` name for the call. ``run_row`` checks the recorded lr afterwards, so
    a change in ``finetune`` cannot silently drop the halvings.
    """
    import graft_core.finetune as ft

    original = ft.Warmup
    ft.Warmup = lambda steps: WarmupHalvings(steps, milestones)
    try:
        yield
    finally:
        ft.Warmup = original


def check_schedule(history: list[dict], stage2: Stage2Config, milestones: tuple[int, ...]) -> None:
    """Raise unless the logged lr of stage 2 follows warm-up + halvings (history entries are after ``step`` steps)."""
    sched = WarmupHalvings(stage2.warmup_steps, milestones)
    for entry in history:
        expected = stage2.lr * sched(entry["step"])  # LambdaLR is at epoch ``step`` after ``step`` optimizer steps
        if abs(entry["lr"] - expected) > 1e-6 * stage2.lr + 1e-12:
            raise RuntimeError(f"stage-2 lr at step {entry['step']} is {entry['lr']:g}, expected {expected:g}: the "
                               f"halving schedule was not applied (graft_core.finetune changed?)")


# --------------------------------------------------------------------------------------------------------------------
# Fused execution of a pair and latency
# --------------------------------------------------------------------------------------------------------------------


class FusedPair(nn.Module):
    """Inference-only twin of a ``ParallelPair`` of diffusers DiT blocks (``ada_norm_zero``, plain attention, GELU
    feed-forward) that runs both blocks as one batched computation. Weights are copied (stacked) at construction."""

    def __init__(self, pair: ParallelPair):
        super().__init__()
        a, b = pair.blocks
        for blk in (a, b):
            if getattr(blk, "norm_type", None) != "ada_norm_zero" or blk.attn2 is not None or blk.pos_embed is not None:
                raise ValueError("FusedPair supports DiT blocks (ada_norm_zero, no cross-attention) only")
        self.pair = pair
        self.heads = a.attn1.heads
        self.eps = (a.norm1.norm.eps, a.norm3.eps)
        self.approximate = a.ff.net[0].approximate

        def stack(fn):
            return nn.Parameter(torch.stack([fn(a), fn(b)]).detach().clone(), requires_grad=False)

        att = lambda blk: blk.attn1  # noqa: E731
        self.w_qkv = stack(lambda k: torch.cat([att(k).to_q.weight, att(k).to_k.weight, att(k).to_v.weight]).t())
        self.b_qkv = stack(lambda k: torch.cat([att(k).to_q.bias, att(k).to_k.bias, att(k).to_v.bias])[None])
        self.w_o, self.b_o = stack(lambda k: att(k).to_out[0].weight.t()), stack(lambda k: att(k).to_out[0].bias[None])
        self.w_1, self.b_1 = stack(lambda k: k.ff.net[0].proj.weight.t()), stack(lambda k: k.ff.net[0].proj.bias[None])
        self.w_2, self.b_2 = stack(lambda k: k.ff.net[2].weight.t()), stack(lambda k: k.ff.net[2].bias[None])

    @property
    def norm1(self) -> nn.Module:  # the DiT output head reads its conditioning here
        return self.pair.norm1

    def forward(self, h: torch.Tensor, *args, timestep=None, class_labels=None, **kwargs) -> torch.Tensor:
        bsz, n, d = h.shape
        mod = torch.stack([blk.norm1.linear(blk.norm1.silu(blk.norm1.emb(timestep, class_labels, hidden_dtype=h.dtype)))
                           for blk in self.pair.blocks])[:, :, None]  # [2, B, 1, 6D]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        x = F.layer_norm(h, (d,), eps=self.eps[0])[None] * (1 + scale1) + shift1  # [2, B, N, D]
        qkv = torch.baddbmm(self.b_qkv, x.reshape(2, bsz * n, d), self.w_qkv)
        q, k, v = qkv.view(2 * bsz, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, bsz * n, d)
        hh = h[None] + gate1 * torch.baddbmm(self.b_o, att, self.w_o).view(2, bsz, n, d)
        x = F.layer_norm(hh, (d,), eps=self.eps[1]) * (1 + scale2) + shift2
        f = F.gelu(torch.baddbmm(self.b_1, x.reshape(2, bsz * n, d), self.w_1), approximate=self.approximate)
        hh = hh + gate2 * torch.baddbmm(self.b_2, f, self.w_2).view(2, bsz, n, d)
        deltas = hh - h[None]
        return h + self.pair.merge(torch.cat([deltas[0], deltas[1]], dim=-1))


def fused(model: nn.Module) -> nn.Module:
    """A copy of a parallel-pair model whose pairs run fused (inference only)."""
    out = copy.deepcopy(model)
    out.transformer_blocks = nn.ModuleList(FusedPair(p) for p in out.transformer_blocks)
    return out.eval()


@torch.inference_mode()
def interleaved_latency(fns: dict[str, Callable[[], object]], *, repeats: int = 30, warmup: int = 3) -> dict:
    """Wall-clock seconds of each zero-argument callable, measured round-robin (so load changes hit all alike):
    ``{name: {"min": s, "median": s}}``."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"min": min(v), "median": statistics.median(v)} for name, v in times.items()}


def dit_forward_fn(model: nn.Module, cfg, batch: int, seed: int = 0) -> Callable[[], object]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen)
    t = torch.randint(0, cfg.num_train_timesteps, (batch,), generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=gen)
    return lambda: model(x, timestep=t, class_labels=y, return_dict=False)[0]


def measure_speedup(teacher: nn.Module, student: nn.Module, preset: Preset, cfg: DepthWidthConfig) -> dict:
    """Forward latency of teacher, eager parallel model and fused parallel model (batch ``cfg.speed_batch``)."""
    fast = fused(student)
    calls = {name: dit_forward_fn(m.eval(), preset.teacher, cfg.speed_batch)
             for name, m in (("teacher", teacher), ("parallel_eager", student), ("parallel_fused", fast))}
    with torch.inference_mode():
        err = (calls["parallel_fused"]() - calls["parallel_eager"]()).abs().max().item()
    if err > 1e-3:
        raise RuntimeError(f"fused pairs disagree with the eager pairs (max |Δ| {err:g})")
    lat = interleaved_latency(calls, repeats=cfg.speed_repeats)
    return {"forward_seconds": lat, "fused_max_abs_diff": err, "batch": cfg.speed_batch,
            "threads": torch.get_num_threads(),
            "speedup": lat["teacher"]["min"] / lat["parallel_fused"]["min"],
            "speedup_eager": lat["teacher"]["min"] / lat["parallel_eager"]["min"],
            "speedup_median": lat["teacher"]["median"] / lat["parallel_fused"]["median"]}


# --------------------------------------------------------------------------------------------------------------------
# The row
# --------------------------------------------------------------------------------------------------------------------


def cached_json(path: Path, spec_hash: str, compute: Callable[[], dict]) -> dict:
    """``compute()`` once: the record is stored in ``path`` with ``spec_hash`` and reused while the hash matches."""
    if path.exists():
        record = json.loads(path.read_text())
        if record.get("spec_hash") == spec_hash:
            return record
    record = {**plain(compute()), "spec_hash": spec_hash}
    atomic_write_json(path, record)
    return record


def run_row(row_config: dict, *, preset: Preset, out_dir: Path, progress: bool = True) -> dict:
    """Stage 1 per pair → stage 2 → evaluation of the parallel-pair model; returns metrics + Table-6 extras."""
    from graft_core.accounting import count_params
    from graft_core.evaluate import evaluate_model
    from graft_core.finetune import finetune
    from graft_core.teacher import load_teacher

    cfg = depth_width_config(preset)
    s2 = stage2_config(preset, cfg)
    out_dir = Path(out_dir)
    bf16 = preset.stage2.bf16
    teacher = load_teacher(preset, progress=progress)
    depth = len(teacher.transformer_blocks)
    spec = {"teacher": preset.teacher, "data": preset.data, "stage1": preset.stage1, "cfg": cfg, "bf16": bf16}
    times: dict[str, float] = {}

    # Stage 1 -----------------------------------------------------------------------------------------------------
    start = time.time()
    student = to_parallel_pairs(copy.deepcopy(teacher))
    pair_metrics, captures = [], None
    for i, pair in enumerate(student.transformer_blocks):
        folder = out_dir / "stage1" / f"pair_{i:02d}"
        pair_hash = stable_hash({**spec, "pair": i})
        done = folder / "metrics.json"
        if done.exists() and json.loads(done.read_text()).get("spec_hash") == pair_hash:
            pair.load_state_dict(torch.load(folder / "pair.pt", map_location="cpu", weights_only=True))
            pair_metrics.append(json.loads(done.read_text()))
            continue
        if captures is None:
            captures = {split: capture_boundaries(teacher, preset, split) for split in ("stage1", "heldout")}
        state, metrics = distill_pair(pair, captures["stage1"], captures["heldout"], i, preset=preset, cfg=cfg,
                                      bf16=bf16, progress=progress)
        pair.load_state_dict(state)
        atomic_torch_save(state, folder / "pair.pt")
        metrics["spec_hash"] = pair_hash
        atomic_write_json(done, metrics)
        pair_metrics.append(metrics)
    student.eval()
    times["stage1_seconds"] = round(time.time() - start, 1)

    stage1_eval = None
    if cfg.eval_stage1:
        stage1_eval = cached_json(out_dir / "eval_stage1.json", stable_hash({**spec, "eval": preset.eval}),
                              lambda: {"metrics": evaluate_model(student, preset)})["metrics"]

    # Stage 2 -----------------------------------------------------------------------------------------------------
    start = time.time()
    s2_key = stable_hash({**spec, "stage2": s2})
    with lr_halvings(cfg.lr_halvings):  # a changed spec gets a fresh folder (finetune resumes whatever it finds)
        model, s2_metrics = finetune(student, preset, out_dir=out_dir / f"stage2-{s2_key}", stage2=s2,
                                     progress=progress)
    check_schedule(s2_metrics["history"], s2, cfg.lr_halvings)
    times["stage2_seconds"] = round(time.time() - start, 1)

    # Evaluation --------------------------------------------------------------------------------------------------
    start = time.time()
    final = cached_json(out_dir / "eval_final.json", stable_hash({"stage2": s2_key, "eval": preset.eval}),
                        lambda: {"metrics": evaluate_model(model, preset)})
    times["eval_seconds"] = round(time.time() - start, 1)
    control = None
    if cfg.control:  # the sequential teacher through the very same stage 2: what stage 2 alone does
        start = time.time()
        ctrl_key = stable_hash({"control": spec["teacher"], "data": preset.data, "stage2": s2, "cfg": cfg})
        with lr_halvings(cfg.lr_halvings):
            ctrl_model, ctrl_metrics = finetune(teacher, preset, out_dir=out_dir / f"control-stage2-{ctrl_key}",
                                                stage2=s2, progress=progress)
        check_schedule(ctrl_metrics["history"], s2, cfg.lr_halvings)
        control = cached_json(out_dir / "eval_control.json", stable_hash({"control": ctrl_key, "eval": preset.eval}),
                              lambda: {"metrics": evaluate_model(ctrl_model, preset)})["metrics"]
        times["control_seconds"] = round(time.time() - start, 1)
    speed = measure_speedup(teacher, model, preset, cfg)
    params, teacher_params = count_params(model), count_params(teacher)
    return {
        "metrics": final["metrics"],
        "depth": depth // 2, "teacher_depth": depth, "params_m": params / 1e6, "teacher_params_m": teacher_params / 1e6,
        "params_delta_pct": 100.0 * (params - teacher_params) / teacher_params,
        "speedup": speed["speedup"], "speedup_eager": speed["speedup_eager"], "latency": speed,
        "iters": s2.steps, "stage2_data": 100 * cfg.stage2_data_fraction, "lr_halvings": list(cfg.lr_halvings),
        "stage2_final_loss": s2_metrics.get("final_loss"),
        "stage1_pairs": [{k: m[k] for k in ("pair", "initial_train_mse", "train_mse", "val_mse", "train_rel_mse",
                                            "initial_val_mse")} for m in pair_metrics],
        "stage1_only_metrics": stage1_eval, "control_teacher_stage2_metrics": control, "config": to_jsonable(cfg),
        "times": times,
    }
