"""MHA locality (paper §7, Fig. 2): band-k attention mass per layer along the sampling trajectory.

For a self-attention matrix A ∈ R^{N×N} (rows sum to 1) and band k: L_k = (1/N)·Σ_ij A_ij·1[|i−j| ≤ k] — the share of
attention mass within ±k positions of the **1D raster token index**, averaged over queries. ``band_locality``
averages it over heads, then over every forward pass of the sampler (timesteps) and every batch row (samples — with
classifier-free guidance both the conditional and the unconditional rows, since both are evaluated along the
trajectory). The paper's setting: 50-step DDIM, 250 samples, cfg 1.5 (per-layer values and k set UNKNOWN).

Mechanism: a recording attention processor on each layer's ``attn1`` that computes softmax(QKᵀ/√d) explicitly,
accumulates the band masses and returns the usual attention output, so sampling is unchanged up to float rounding.
Layers whose ``attn1`` is not a diffusers ``Attention`` (already grafted) report ``None``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from graft_core.presets import TeacherConfig


def band_masses(probs: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """``probs [..., N, N]`` (rows sum to 1) → ``[len(ks), ...]``: L_k per leading index (mean over queries)."""
    n = probs.shape[-1]
    idx = torch.arange(n, device=probs.device)
    dist = (idx[:, None] - idx[None, :]).abs()
    return torch.stack([(probs * (dist <= k).to(probs.dtype)).sum(-1).mean(-1) for k in ks])


class BandMassRecorder:
    """Attention processor (diffusers ``AttnProcessor2_0`` semantics for self-attention) that also records L_k."""

    def __init__(self, ks: Sequence[int]):
        self.ks = tuple(ks)
        self.total = torch.zeros(len(self.ks), dtype=torch.float64)
        self.count = 0  # batch rows seen (over all forward passes)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.dim() != 3:
            raise ValueError("BandMassRecorder handles unmasked self-attention on [B, N, D] only (attn1 of a DiT)")
        b = hidden_states.shape[0]
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = q.shape[-1] // attn.heads
        q, k, v = (t.view(b, -1, attn.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        scores = (q.float() @ k.float().transpose(-1, -2)) * head_dim ** -0.5
        probs = scores.softmax(dim=-1)
        self.total += band_masses(probs, self.ks).mean(-1).sum(-1).double().cpu()  # mean over heads, sum over rows
        self.count += b
        out = (probs @ v.float()).to(q.dtype).transpose(1, 2).reshape(b, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def result(self) -> list[float]:
        if not self.count:
            raise ValueError("no attention call was recorded")
        return (self.total / self.count).tolist()


def band_locality(model, *, teacher_cfg: TeacherConfig, labels: torch.Tensor, ks: Sequence[int] = (1, 2, 4, 8, 16, 32),
                  steps: int = 50, guidance_scale: float = 1.5, seed: int = 0, scheduler: str = "ddim",
                  batch_size: int = 64) -> dict[int, list[float | None]]:
    """L_k per layer (``{k: [L_k of layer 0, layer 1, …]}``) averaged over heads, queries, timesteps and samples.

    Runs ``graft_core.evaluation.sampler.sample`` (one sample per label) with recording processors on every ``attn1`` and
    restores the original processors afterwards.
    """
    from diffusers.models.attention_processor import Attention

    from graft_core.evaluation.sampler import sample

    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 0:
        raise ValueError(f"ks must be non-negative band widths, got {ks}")
    recorders: list[BandMassRecorder | None] = []
    saved = []
    for block in model.transformer_blocks:
        attn = getattr(block, "attn1", None)
        if isinstance(attn, Attention):
            rec = BandMassRecorder(ks)
            saved.append((attn, attn.processor))
            attn.set_processor(rec)
            recorders.append(rec)
        else:
            recorders.append(None)
    try:
        sample(model, labels, teacher=teacher_cfg, scheduler=scheduler, steps=steps, guidance_scale=guidance_scale,
               seed=seed, batch_size=batch_size)
    finally:
        for attn, processor in saved:
            attn.set_processor(processor)
    per_layer = [rec.result() if rec is not None else None for rec in recorders]
    return {k: [vals[i] if vals is not None else None for vals in per_layer] for i, k in enumerate(ks)}


def locality_scores(result: dict[int, list[float | None]], k: int) -> list[float]:
    """One score per layer at band ``k`` — the input ``graft_core.grafting.plan.select_layers`` takes for top/low_local."""
    if k not in result:
        raise ValueError(f"band k={k} was not measured; have {sorted(result)}")
    scores = result[k]
    if any(s is None for s in scores):
        raise ValueError("some layers have no attention scores (already grafted)")
    return list(scores)
