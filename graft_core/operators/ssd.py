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
tensor), (v) chunk states are carried by a loop over chunks — linear in N/Q instead of the minimal version's
quadratic chunk-to-chunk matrix, and (vi) where the decay span of every chunk allows, the intra-chunk decay is
factored so that no per-head Q×Q matrix is formed (``ssd_chunked``'s docstring). Runs in float32.
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


SEPARABLE_SPAN = 120.0  # largest chunk-local decay span |Σ a·dt| of the separable form: factors centred on the span
#                        stay ≤ e^60 ≈ 1e26, keeping e⁻¹·x and its products with C·Bᵀ far inside float32's range
MIN_SEPARABLE_CHUNK = 16  # below this the chunk loop's overhead outweighs the saving
EXP_FLOOR = -80.0  # exp() below this underflows to subnormals, which cost ~45× a normal exp on CPU (the benchmark's
#                    diagnostics); exp(-80) = 1.8e-35 stands in for them, far below float32 resolution of the outputs


def _pick_chunk(adt: torch.Tensor, chunk_size: int) -> tuple[int, bool]:
    """The chunk length and whether the separable form is safe: the largest of Q, Q/2, … (≥ 16) at which no chunk's
    decay span exceeds ``SEPARABLE_SPAN``; else (Q, False). The scan's result does not depend on the chunk length."""
    length = adt.shape[1]
    q = min(chunk_size, length)
    cand = q
    while True:
        pad = (-length) % cand
        sums = F.pad(adt, (0, 0, 0, pad)).view(adt.shape[0], -1, cand, adt.shape[2]).sum(2)  # ≤ 0 per chunk
        if float(-sums.min()) <= SEPARABLE_SPAN:
            return cand, True
        if cand // 2 < MIN_SEPARABLE_CHUNK:
            return q, False
        cand //= 2


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                chunk_size: int = 64) -> torch.Tensor:
    """Chunked SSD scan. ``x [B, L, H, P]``, ``dt [B, L, H]`` (already softplus'ed), ``a [H]`` (negative),
    ``b, c [B, L, G, N]`` → ``y [B, L, H, P]`` (without the D skip term). The chunk is at most ``chunk_size``.

    Inside a chunk the decay ``exp(cumA_i − cumA_j)`` (chunk-local cumulative sums, ≤ 0) factors as
    ``e_i · e_j⁻¹`` with ``e = exp(cumA − m)``, ``m`` the centre of the chunk's span: the per-head ``[Q, Q]`` decay matrix is then never formed, and the
    intra-chunk term is one matmul of the group's masked ``C·Bᵀ`` with ``e⁻¹·x``, shared by the group's heads — the
    step that made the quadratic form slow on CPU. It is used at the largest chunk (``chunk_size``, halved down to
    16) whose decay spans are all ≤ ``SEPARABLE_SPAN``; otherwise the per-head masked ``[Q, Q]`` form is used. Both
    are the same map (tests check them against ``ssd_recurrent``). ``m`` and the choice of form depend on the whole
    chunk and batch, so an output can move at float-rounding level (~1e-7 relative) with later tokens of its chunk
    or with other samples — never more: the map itself is causal.
    """
    groups = _check(x, dt, a, b, c)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    dtype = x.dtype
    x, dt, a, b, c = (t.float() for t in (x, dt, a, b, c))
    bsz, length, heads, p = x.shape
    adt = a * dt  # [B, L, H], ≤ 0
    q, separable = _pick_chunk(adt.detach(), chunk_size)
    pad = (-length) % q
    if pad:
        x, dt, adt, b, c = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, adt, b, c))
    nc, r = (length + pad) // q, heads // groups
    x = x.view(bsz, nc, q, groups, r, p)
    dt = dt.view(bsz, nc, q, groups, r)
    bs, cs = b.view(bsz, nc, q, groups, -1), c.view(bsz, nc, q, groups, -1)
    a_cum = torch.cumsum(adt.view(bsz, nc, q, groups, r), dim=2)  # [b, c, q, g, r], chunk-local, ≤ 0
    last = a_cum[:, :, -1:]  # [b, c, 1, g, r]: the decay across each whole chunk
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    cb = torch.einsum("bcign,bcjgn->bcgij", cs, bs)  # [b, c, g, i, j], shared by the group's heads

    # 1. inside each chunk: y_i = Σ_{j<=i} (C_i·B_j) · exp(cumA_i − cumA_j) · x_j  (attention-like, causal)
    if separable:
        mid = 0.5 * last  # centre of each chunk's span: e^{±(cumA − mid)} ≤ e^{SEPARABLE_SPAN / 2}
        x_inv = x * (dt * torch.exp(mid - a_cum))[..., None]  # e_j⁻¹ · dt_j·x_j (the discretised input), one pass
        y_diag = torch.einsum("bcgij,bcjgrp->bcigrp", cb * causal, x_inv) * torch.exp(a_cum - mid)[..., None]
        decayed = x_inv * torch.exp(last - mid)[..., None]  # exp(cumA_end − cumA_j) · x_j, reusing e_j⁻¹
    else:  # spans too long to factor: the per-head [Q, Q] decay matrix, laid out [b, c, g, r, i, j]
        xs = x * dt[..., None]  # discretised input dt·x
        a_g = a_cum.permute(0, 1, 3, 4, 2)  # [b, c, g, r, q]
        decay = (a_g[..., :, None] - a_g[..., None, :]).clamp(EXP_FLOOR, 0.0).exp() * causal
        weights = decay * cb[:, :, :, None]
        y_diag = torch.einsum("bcgrij,bcjgrp->bcigrp", weights, xs)
        decayed = xs * torch.exp((last - a_cum).clamp(min=EXP_FLOOR))[..., None]
    # 2. state each chunk contributes at its end: Σ_j exp(cumA_end − cumA_j) · x_j ⊗ B_j
    chunk_states = torch.einsum("bcjgn,bcjgrp->bcgrpn", bs, decayed)
    # 3. recurrence over chunk boundaries: the state entering chunk z
    chunk_decay = torch.exp(last[:, :, 0])[..., None, None]  # [b, c, g, r, 1, 1]
    state = torch.zeros_like(chunk_states[:, 0])
    entering = []
    for z in range(nc):
        entering.append(state)
        state = chunk_decay[:, z] * state + chunk_states[:, z]
    states = torch.stack(entering, dim=1)  # [b, c, g, r, p, n]
    # 4. contribution of the entering state to every position of the chunk
    y_off = torch.einsum("bcign,bcgrpn->bcigrp", cs, states) * torch.exp(a_cum.clamp(min=EXP_FLOOR))[..., None]
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
