"""Depth → width as operations (paper Table 6, §4.9, §9): block-pair stage 1, the parallel-pair student, latency.

The ``table6`` target (``benchmark/targets/table6.py``) runs these as ordinary steps: a capture of every block's
input and output (``capture`` site ``block``), one stage-1 run per pair (:func:`distill_pair`), stage 2 of the
assembled model (:func:`assemble_pairs`, through the one ``finetune`` with ``Stage2Config.lr_milestones``), the
evaluation, and a latency run (:func:`measure_speedup`).

Stage 1 of pair ``i`` (blocks ``2i``, ``2i+1`` rewired by ``graft_core.grafting.restructure.ParallelPair``, merge ``W = [I, I]``):
the whole pair — both blocks and the merge — regresses the sequential pair's output (block ``2i+1``'s captured
output) from its input (block ``2i``'s captured input) with the sample's timestep and label, through the one stage-1
loop (``distill.train_operator``); the paper's objective is L1, its lr 1e-4; validation MSE on the held-out twin, the
best-train-MSE weights kept.

Speed-up: ``ParallelPair`` runs its two blocks one after the other, so in eager mode the parallel model does the same
sequential work as the teacher plus the merges (``speedup_eager`` ≈ 1 or below). The rewiring pays off only when the
two blocks of a pair execute *together*: ``FusedPair`` computes both blocks as one batched computation (stacked
weights, ``baddbmm``, one attention call over ``2B`` sequences), checked equal to the eager pair. ``speedup`` is the
fused model's; both are reported with the per-model latencies (minimum over interleaved repeats, the estimate least
disturbed by other processes on a shared machine; the medians are reported too).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from graft_core.config import stable_hash
from graft_core.evaluation.latency import interleaved_latency
from graft_core.presets import Stage1Config, TeacherConfig
from graft_core.grafting.restructure import ParallelPair, to_parallel_pairs

PAIR_SITE = "block_pair"  # the stage-1 "site" of a block pair (its capture site is capture.BLOCK_SITE)
PAIR_OBJECTIVE = "l1"  # paper §4.9
PAIR_LR = 1e-4  # the paper's stage-1 lr (§3.1); the pairs start from pretrained weights


def pair_module(teacher: nn.Module, index: int) -> ParallelPair:
    """Blocks ``2·index`` and ``2·index + 1`` of ``teacher`` (copies) as a parallel pair with the merge init."""
    blocks = teacher.transformer_blocks
    dim = int(teacher.config.num_attention_heads) * int(teacher.config.attention_head_dim)
    return ParallelPair(copy.deepcopy(blocks[2 * index]), copy.deepcopy(blocks[2 * index + 1]), dim)


def distill_pair(teacher: nn.Module, index: int, train_capture: Path, val_capture: Path | None, *,
                 stage1: Stage1Config, out_dir: Path, device: torch.device, bf16: bool = False,
                 progress: bool = False) -> dict:
    """Stage 1 of pair ``index`` from block captures; writes ``out_dir/operator.pt`` (the pair's state) and
    ``metrics.json``. ``stage1`` carries the objective and lr (the driver resolves them: L1, 1e-4). A finished
    ``out_dir`` of the same spec is returned without training."""
    from graft_core.stages.capture import BLOCK_SITE, load_conditioning
    from graft_core.stages.distill import finished, load_array, save_result, train_operator

    first, second = 2 * index, 2 * index + 1
    spec = {"pair": index, "blocks": [first, second], "stage1": stage1, "bf16": bf16,
            "train_capture": Path(train_capture).name, "val_capture": Path(val_capture).name if val_capture else None}
    done = finished(out_dir, stable_hash(spec))
    if done is not None:
        return done

    def data(capture):
        cond = load_conditioning(capture, first, BLOCK_SITE)
        return (load_array(capture, first, BLOCK_SITE, "inputs", device),
                load_array(capture, second, BLOCK_SITE, "targets", device),
                {"timestep": cond["timesteps"], "class_labels": cond["labels"]})

    pair = pair_module(teacher, index).float()
    x, y, cond = data(train_capture)
    vx, vy, vcond = data(val_capture) if val_capture is not None else (None, None, None)
    state, metrics = train_operator(pair, x, y, val_inputs=vx, val_targets=vy, conditioning=cond,
                                    val_conditioning=vcond, stage1=stage1, site=PAIR_SITE,
                                    seed=stage1.seed + index, device=device, bf16=bf16, progress=progress)
    metrics.update(pair=index, blocks=[first, second], num_params=sum(p.numel() for p in pair.parameters()))
    return save_result(out_dir, state, metrics, spec)


def assemble_pairs(teacher: nn.Module, stage1_dirs: dict[int, Path] | None) -> nn.Module:
    """The parallel-pair student: a rewired copy of ``teacher`` with each pair's stage-1 state (``None``: the merge
    init, pretrained blocks). Eval mode; the teacher is untouched."""
    from graft_core.stages.distill import load_operator_state

    model = to_parallel_pairs(copy.deepcopy(teacher))
    if stage1_dirs is not None:
        pairs = model.transformer_blocks
        missing = sorted(set(range(len(pairs))) - set(stage1_dirs))
        if missing:
            raise ValueError(f"stage-1 results lack pairs {missing} (have {sorted(stage1_dirs)})")
        for i, pair in enumerate(pairs):
            pair.load_state_dict(load_operator_state(stage1_dirs[i]), strict=True)
    return model.eval()


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


def dit_forward_fn(model: nn.Module, cfg: TeacherConfig, batch: int, seed: int = 0,
                   device: torch.device | str = "cpu"):
    """A zero-argument forward pass of a DiT at batch ``batch``, inputs made once on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen).to(device)
    t = torch.randint(0, cfg.num_train_timesteps, (batch,), generator=gen).to(device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=gen).to(device)
    return lambda: model(x, timestep=t, class_labels=y, return_dict=False)[0]


# Fused vs eager pairs sum the same products in another order: the difference scales with the output, and with
# TF32 matmuls on CUDA (10-bit mantissa, ~5e-4 per product) it is an order of magnitude above fp32's. Tolerance =
# FUSED_RTOL × max(1, max |eager output|).
FUSED_RTOL = {"fp32": 1e-3, "tf32": 1e-2}


def _matmul_mode(device) -> str:
    cuda = torch.device(device).type == "cuda"
    return "tf32" if cuda and torch.backends.cuda.matmul.allow_tf32 else "fp32"


def fused_tolerance(eager: torch.Tensor, device) -> float:
    """The largest fused-vs-eager difference that is rounding, not a wrong fusion, for this output and device."""
    return FUSED_RTOL[_matmul_mode(device)] * max(1.0, eager.abs().max().item())


def measure_speedup(teacher: nn.Module, student: nn.Module, cfg: TeacherConfig, *, batch: int = 2,
                    repeats: int = 30) -> dict:
    """Forward latency of teacher, eager parallel model and fused parallel model (batch ``batch``: the paper's 2),
    on the models' device (CUDA timings synchronise)."""
    device = next(teacher.parameters()).device
    fast = fused(student).to(device)
    calls = {name: dit_forward_fn(m.eval(), cfg, batch, device=device)
             for name, m in (("teacher", teacher), ("parallel_eager", student), ("parallel_fused", fast))}
    with torch.inference_mode():
        eager = calls["parallel_eager"]()
        err = (calls["parallel_fused"]() - eager).abs().max().item()
    tol = fused_tolerance(eager, device)
    if err > tol:
        raise RuntimeError(f"fused pairs disagree with the eager pairs (max |Δ| {err:g} > {tol:g}, "
                           f"{FUSED_RTOL[_matmul_mode(device)]:g} of the output's scale)")
    lat = interleaved_latency(calls, repeats=repeats)
    return {"forward_seconds": lat, "fused_max_abs_diff": err, "batch": batch, "device": str(device),
            "threads": torch.get_num_threads(),
            "speedup": lat["teacher"]["min"] / lat["parallel_fused"]["min"],
            "speedup_eager": lat["teacher"]["min"] / lat["parallel_eager"]["min"],
            "speedup_median": lat["teacher"]["median"] / lat["parallel_fused"]["median"]}
