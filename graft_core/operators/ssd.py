"""The Mamba-2 state-space-duality (SSD) scan in pure PyTorch, plus the naive recurrence it must equal.

The recurrence, per head h (state ``S ∈ R^{P×N}``, P = headdim, N = d_state, one (B, C) pair per group):

    S_t = exp(dt_t·A_h) · S_{t-1} + (dt_t · x_t) ⊗ B_t        y_t = S_t · C_t

``ssd_chunked`` evaluates it in chunks of Q tokens: quadratic (attention-like) inside a chunk, a linear recurrence
over chunk states between chunks. Structure follows ``ssd_minimal_discrete`` from state-spaces/mamba
(``mamba_ssm/modules/ssd_minimal.py``, Apache-2.0, © 2024 Albert Gu and Tri Dao), rewritten here so that (i) heads
share their group's C·Bᵀ product instead of recomputing it, (ii) groups > 1 are handled per group, (iii) any length
works (the sequence is zero-padded to a multiple of Q; padded steps have dt = 0 and come after every real token, so
they change nothing), (iv) intra-chunk decays are ``exp(cumA_i − cumA_j)`` of chunk-local cumulative sums, as the
fused Triton kernels compute them (the minimal version's T×T "stable segsum" costs several passes over the largest
tensor), and (v) chunk states are carried by a loop over chunks — linear in N/Q instead of the minimal version's
quadratic chunk-to-chunk matrix. Runs in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(x, dt, a, b, c):
    bsz, length, heads, _ = x.shape
    groups = b.shape[2]
    if dt.shape != (bsz, length, heads) or a.shape != (heads,):
        raise ValueError(f"dt must be [B, L, H] and A [H]; got {tuple(dt.shape)}, {tuple(a.shape)}")
    if b.shape != c.shape or b.shape[:2] != (bsz, length) or heads % groups:
        raise ValueError(f"B and C must be [B, L, G, N] with G dividing H={heads}; got {tuple(b.shape)}, "
                         f"{tuple(c.shape)}")
    return groups


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                chunk_size: int = 64) -> torch.Tensor:
    """Chunked SSD scan. ``x [B, L, H, P]``, ``dt [B, L, H]`` (already softplus'ed), ``a [H]`` (negative),
    ``b, c [B, L, G, N]`` → ``y [B, L, H, P]`` (without the D skip term). The chunk is ``min(chunk_size, L)``."""
    groups = _check(x, dt, a, b, c)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    dtype = x.dtype
    x, dt, a, b, c = (t.float() for t in (x, dt, a, b, c))
    bsz, length, heads, p = x.shape
    q = min(chunk_size, length)
    pad = (-length) % q
    if pad:
        x, dt, b, c = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, b, c))
    nc, r = (length + pad) // q, heads // groups
    # chunks + split heads into (group, head-in-group); decays laid out [b, c, g, r, q] so step 1 needs no big copy
    xs = (x * dt[..., None]).view(bsz, nc, q, groups, r, p)  # discretised input dt·x
    bs, cs = b.view(bsz, nc, q, groups, -1), c.view(bsz, nc, q, groups, -1)
    a_cum = torch.cumsum((a * dt).view(bsz, nc, q, groups, r).permute(0, 1, 3, 4, 2), dim=-1)  # [b, c, g, r, q]
    a_cum_t = a_cum.permute(0, 1, 4, 2, 3)[..., None]  # [b, c, q, g, r, 1]

    # 1. inside each chunk: y_i = Σ_{j<=i} (C_i·B_j) · exp(Σ_{j<k<=i} a_k) · x_j  (attention-like, causal)
    upper = torch.ones(q, q, dtype=torch.bool, device=x.device).triu(1)
    decay = (a_cum[..., :, None] - a_cum[..., None, :]).masked_fill_(upper, -torch.inf).exp_()  # [b,c,g,r,i,j]
    weights = decay * torch.einsum("bcign,bcjgn->bcgij", cs, bs)[:, :, :, None]
    y_diag = torch.einsum("bcgrij,bcjgrp->bcigrp", weights, xs)
    # 2. state each chunk contributes at its end: Σ_j exp(cumA_end − cumA_j) · x_j ⊗ B_j
    decayed = xs * torch.exp(a_cum_t[:, :, -1:] - a_cum_t)
    chunk_states = torch.einsum("bcjgn,bcjgrp->bcgrpn", bs, decayed)
    # 3. recurrence over chunk boundaries: the state entering chunk z
    chunk_decay = torch.exp(a_cum[..., -1])[..., None, None]  # [b, c, g, r, 1, 1]: decay across a whole chunk
    state = torch.zeros_like(chunk_states[:, 0])
    entering = []
    for z in range(nc):
        entering.append(state)
        state = chunk_decay[:, z] * state + chunk_states[:, z]
    states = torch.stack(entering, dim=1)  # [b, c, g, r, p, n]
    # 4. contribution of the entering state to every position of the chunk
    y_off = torch.einsum("bcign,bcgrpn->bcigrp", cs, states) * torch.exp(a_cum_t)
    y = (y_diag + y_off).reshape(bsz, nc * q, heads, p)[:, :length]
    return y.to(dtype)


def ssd_recurrent(x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  c: torch.Tensor) -> torch.Tensor:
    """The same map as ``ssd_chunked`` by a plain token-by-token loop (the reference for tests; O(L) steps)."""
    groups = _check(x, dt, a, b, c)
    x, dt, a, b, c = (t.float() for t in (x, dt, a, b, c))
    bsz, length, heads, p = x.shape
    rep = heads // groups
    bh, ch = b.repeat_interleave(rep, dim=2), c.repeat_interleave(rep, dim=2)  # [B, L, H, N]
    state = x.new_zeros(bsz, heads, p, b.shape[-1])
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * a)[..., None, None]
        state = decay * state + torch.einsum("bh,bhp,bhn->bhpn", dt[:, t], x[:, t], bh[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", state, ch[:, t]))
    return torch.stack(ys, dim=1)
