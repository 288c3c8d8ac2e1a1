"""The Mamba-2 state-space-duality (SSD) scan in pure PyTorch, plus the naive recurrence it must equal.

The recurrence, per head h (state ``S ∈ R^{P×N}``, P = headdim, N = d_state, one (B, C) pair per group):

    S_t = exp(dt_t·A_h) · S_{t-1} + (dt_t · x_t) ⊗ B_t        y_t = S_t · C_t

``ssd_chunked`` evaluates it in chunks of Q tokens: quadratic (attention-like) inside a chunk, a linear recurrence
over chunk states between chunks. Structure follows ``ssd_minimal_discrete`` from state-spaces/mamba
(``mamba_ssm/modules/ssd_minimal.py``, Apache-2.0, © 2024 Albert Gu and Tri Dao), rewritten here so that (i) heads
share their group's C·Bᵀ product instead of recomputing it, (ii) groups > 1 are handled per group, (iii) any length
works (the sequence is zero-padded to a multiple of Q; padded steps have dt = 0 and come after every real token, so
they change nothing), (iv) chunk states are carried by a loop over chunks — linear in N/Q instead of the minimal
version's quadratic chunk-to-chunk matrix — and (v) the intra-chunk decays ``exp(s_i − s_j)`` of chunk-local
cumulative sums ``s`` are never materialised per head when they can be factored (``_separable``): as
``exp(s_i − f) · exp(f − s_j)`` through a block's first token ``f`` they become per-token scales around one C·Bᵀ
matmul shared by all heads of a group (no library does this on CPU; the fused Triton kernels exponentiate the
differences per head, as ``_exact`` does). Decays too wide to factor in blocks of ≥ 8 tokens fall back to
``_exact``, whose arguments are clamped at −50 so that no float32 denormal appears (~30× slower on CPU) and whose
intra-chunk step runs over cache-sized slices with a hand-written backward. Runs in float32 (also under autocast).
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


# Below −87.3 float32 exp() underflows to denormals / zero, which this CPU computes ~30× slower (and products with
# denormals are slow too). Decay arguments are clamped at _LOG_FLOOR (e^−50 ≈ 2e−22, far below float32 resolution
# next to the diagonal term, whose decay is exactly 1), so no denormal ever appears.
_LOG_FLOOR = -50.0
# Step 1 runs over slices of the (batch × chunk) rows holding about this many decay elements (1 MiB of float32): the
# [rows, R, Q, Q] weights then never exist whole (260 MB per layer at batch 1000), every elementwise pass over them
# stays in cache, and the small temporaries come from the heap instead of freshly page-faulted memory.
_SLICE_ELEMENTS = 1 << 18
# The separable scan keeps each decay factor within e^±_SEPARABLE_BOUND (e^60 ≈ 1e26: products with the inputs keep
# ~1e12 of float32 headroom, and e^−60 is far from denormal). Where some head's dt·|A| summed over a chunk exceeds it,
# the chunk is factored in blocks of half its length, and so on (at mamba_ssm's initialisation, dt ≤ 0.1 and
# |A| ≤ 16, blocks of 32 tokens always fit); below _MIN_SEPARABLE_BLOCK tokens the exact path runs instead.
_SEPARABLE_BOUND = 60.0
_MIN_SEPARABLE_BLOCK = 8
# Floor of the factors between blocks (exp(f_I − f_J), exp(s_end − f_J)): they multiply inputs already scaled by up to
# e^_SEPARABLE_BOUND, so a floor at _LOG_FLOOR would make a vanishing decay e^10; at −80 (still a normal float32) the
# error of a clamped term is below e^(−80+60) ≈ 2e−9.
_FACTOR_FLOOR = -80.0


def _decay(s: torch.Tensor) -> torch.Tensor:
    """``exp(clamp(s_i − s_j, _LOG_FLOOR, 0))`` as ``[..., i, j]``: one new tensor, clamped and exponentiated in place.

    Clamping at 0 only touches j > i (``s`` is non-increasing), where the caller's masked C·Bᵀ is 0: no overflow."""
    return torch.sub(s[..., :, None], s[..., None, :]).clamp_(_LOG_FLOOR, 0.0).exp_()


def _slices(x: torch.Tensor):
    rows = x.shape[0]
    step = max(1, _SLICE_ELEMENTS // (x[0].numel() // x.shape[-1] * x.shape[-2]))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


def _bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """``out = a @ b`` over every leading dimension, written into ``out`` (contiguous)."""
    q, k = a.shape[-2:]
    torch.bmm(a.reshape(-1, q, k), b.reshape(-1, k, b.shape[-1]), out=out.view(-1, q, b.shape[-1]))


def _intra_forward(x: torch.Tensor, s: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x)
    for sl in _slices(x):
        _bmm(_decay(s[sl]).mul_(cb[sl]), x[sl], y[sl])
    return y


class _IntraChunk(torch.autograd.Function):
    """``y[m, g, r, i] = Σ_j exp(s[m, g, r, i] − s[m, g, r, j]) · cb[m, g, 0, i, j] · x[m, g, r, j]``.

    ``x [M, G, R, Q, P]``, ``s [M, G, R, Q]`` (chunk-local cumulative dt·A), ``cb [M, G, 1, Q, Q]`` (C_i·B_j with the
    upper triangle zeroed; shared by the R heads of a group) → ``y [M, G, R, Q, P]``, all contiguous. Computed slice by
    slice of M (see ``_SLICE_ELEMENTS``); the backward recomputes the decays per slice instead of saving them
    (flash-attention style: saved memory is that of the inputs), and needs two bmm and four elementwise/reduction
    passes over each slice's [R, Q, Q] block.
    """

    @staticmethod
    def forward(ctx, x, s, cb):
        ctx.save_for_backward(x, s, cb)
        return _intra_forward(x, s, cb)

    @staticmethod
    def backward(ctx, gy):
        x, s, cb = ctx.saved_tensors
        gy = gy.contiguous()
        gx, gs, gcb = torch.empty_like(x), torch.empty_like(s), torch.empty_like(cb)
        for sl in _slices(x):
            decay, cbs = _decay(s[sl]), cb[sl]
            gw = torch.empty_like(decay)
            _bmm(gy[sl], x[sl].transpose(-1, -2), gw)  # dL/dweights
            gw.mul_(decay)  # dL/dcb per head
            torch.sum(gw, dim=-3, keepdim=True, out=gcb[sl])
            e = gw.mul_(cbs)  # dL/d(s_i − s_j) = weights · dL/dweights, since d exp(u)/du = exp(u)
            torch.sub(e.sum(-1), e.sum(-2), out=gs[sl])
            _bmm(decay.mul_(cbs).transpose(-1, -2), gy[sl], gx[sl])
        return gx, gs, gcb


def _intra_chunk(x: torch.Tensor, s: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """Step 1 of the scan on ``[*, G, R, Q, P]`` blocks (see ``_IntraChunk``), leading dims flattened."""
    lead = x.shape[:-4]
    x, s, cb = (t.reshape((-1,) + t.shape[len(lead):]) for t in (x, s, cb))
    if torch.is_grad_enabled() and (x.requires_grad or s.requires_grad or cb.requires_grad):
        y = _IntraChunk.apply(x.contiguous(), s.contiguous(), cb.contiguous())
    else:
        y = _intra_forward(x.contiguous(), s.contiguous(), cb.contiguous())
    return y.view(lead + y.shape[1:])


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                chunk_size: int = 64) -> torch.Tensor:
    """Chunked SSD scan. ``x [B, L, H, P]``, ``dt [B, L, H]`` (already softplus'ed), ``a [H]`` (negative),
    ``b, c [B, L, G, N]`` → ``y [B, L, H, P]`` (without the D skip term). The chunk is ``min(chunk_size, L)``.

    Always float32, also under autocast (which would otherwise run the products in bf16). When the whole sequence is
    one chunk (L ≤ chunk_size: the tiny preset's 64 tokens) only step 1 runs — there is no entering state."""
    groups = _check(x, dt, a, b, c)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    with torch.autocast(x.device.type, enabled=False):
        return _chunked(x, dt.float(), a.float(), b.float(), c.float(), groups=groups, chunk_size=chunk_size)


def _chunked(x, dt, a, b, c, *, groups: int, chunk_size: int) -> torch.Tensor:
    """``ssd_chunked`` on float32 dt, a, b, c; ``x`` in any float dtype, which is also the output's."""
    bsz, length, heads, p = x.shape
    q = min(chunk_size, length)
    pad = (-length) % q
    if pad:
        x, dt, b, c = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, b, c))
    nc, r = (length + pad) // q, heads // groups
    da = (dt * a).view(bsz, nc, q, groups, r)  # ≤ 0
    s = torch.cumsum(da, dim=2)  # chunk-local cumulative decays [b, c, q, g, r]
    block = _separable_block(da)
    if block:
        y = _separable(x, dt, s, b, c, groups=groups, block=block)
    else:
        y = _exact(x, dt, s, b, c, groups=groups, q=q)
    if not (torch.is_grad_enabled() and y.requires_grad):  # one pass: output dtype at once
        return x.new_empty(y.shape, dtype=x.dtype).copy_(y).view(bsz, nc * q, heads, p)[:, :length]
    return y.reshape(bsz, nc * q, heads, p)[:, :length].to(x.dtype)


def _separable_block(da: torch.Tensor) -> int | None:
    """The largest block ``q, q/2, q/4, … ≥ _MIN_SEPARABLE_BLOCK`` (dividing the chunk q) over which every head's
    decay sum stays within ``_SEPARABLE_BOUND``, so that ``_separable`` can factor the decays block by block; None:
    use ``_exact``. ``da [b, c, q, g, r]``. The result does not depend on the block, only its rounding does."""
    q = block = da.shape[2]
    while True:
        if -da.unflatten(2, (q // block, block)).sum(3).min() <= _SEPARABLE_BOUND:  # False for NaN too
            return block
        if block % 2 or block // 2 < _MIN_SEPARABLE_BLOCK:
            return None
        block //= 2


def _separable(x, dt, s, b, c, *, groups: int, block: int) -> torch.Tensor:
    """The scan with the decays factored through each block's first token ``f``:
    ``exp(s_i − s_j) = exp(s_i − f_I) · exp(f_I − f_J) · exp(f_J − s_j)`` (token i in block I, j in block J ≤ I).
    The outer factors stay within ``e^±_SEPARABLE_BOUND`` (``_separable_block``), the middle one is ≤ 1 per head and
    block pair; token i depends on no later token, bit for bit. The intra-chunk step is then one ``C·Bᵀ`` matmul
    per group and block column applied to all the group's heads at once (``[q, k] @ [k, R·P]``) — no per-head
    ``[Q, Q]`` decay tensor, the cost of the exact step; at the tiny preset's decays the block is the whole chunk
    (one matmul). Chunk end states come from the same scaled inputs. Token-major throughout (``x``'s own layout):
    ``y [b, c, q, g, r, p]``. Autograd differentiates it as written."""
    bsz, nc, q, _g, r = s.shape
    p, n, k = x.shape[-1], b.shape[-1], block
    nb = q // k
    first = s[:, :, ::k]  # [b, c, nb, g, r]: each block's first token
    ref = first.repeat_interleave(k, dim=2) if nb > 1 else first  # per token: its block's first token
    w_in = torch.exp(ref - s) * dt.view(s.shape)  # ≥ dt
    w_out = torch.exp(s - ref)  # ≤ 1
    u = x.reshape(bsz, nc, q, groups, r, p) * w_in[..., None]  # dt_j · exp(f_J − s_j) · x_j, float32
    bs, cs = b.view(bsz, nc, q, groups, n).transpose(2, 3), c.view(bsz, nc, q, groups, n).transpose(2, 3)
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    cb = torch.matmul(cs, bs.transpose(-1, -2)).masked_fill(~causal, 0.0)  # [b, c, g, q, q]
    ug = u.transpose(2, 3).reshape(bsz, nc, groups, q, r * p)  # [b, c, g, q, r·p] (a view when g = 1)
    first_h = first.permute(0, 1, 3, 2, 4)  # [b, c, g, nb, r]
    # 1. inside each chunk, block column J: rows of blocks I ≥ J, all heads of the group in one matmul
    z = None
    for j in range(nb):
        part = torch.matmul(cb[..., j * k:, j * k:(j + 1) * k], ug[..., j * k:(j + 1) * k, :])
        if j < nb - 1:  # exp(f_I − f_J) per head for I = J, …, nb − 1 (1 for I = J)
            between = torch.exp((first_h[:, :, :, j:] - first_h[:, :, :, j:j + 1]).clamp(min=_FACTOR_FLOOR))
            part = (part.view(bsz, nc, groups, nb - j, k, r, p) * between[:, :, :, :, None, :, None]).view_as(part)
        z = part if z is None else torch.cat([z[..., :j * k, :], z[..., j * k:, :] + part], dim=-2)
    if nc > 1:
        # 2. each chunk's end state Σ_j exp(s_end − s_j)·dt_j·x_j ⊗ B_j = Σ_J exp(s_end − f_J) · Σ_{j∈J} u_j ⊗ B_j
        to_end = torch.exp((s[:, :, -1:] - ref).clamp(min=_FACTOR_FLOOR))  # [b, c, q or 1, g, r]
        ue = (u * to_end[..., None]).transpose(2, 3).reshape(bsz, nc, groups, q, r * p)
        ends = torch.matmul(ue.transpose(-1, -2), bs).view(bsz, nc, groups, r, p, n)
        states = _entering_states(ends, s[:, :, -1])  # 3. the state entering each chunk [b, c, g, r, p, n]
        # 4. its contribution exp(s_i)·C_i·state = exp(s_i − f_I) · exp(f_I)·C_i·state, added to z before the
        #    common exp(s_i − f_I) factor
        inter = torch.matmul(cs, states.view(bsz, nc, groups, r * p, n).transpose(-1, -2))  # [b, c, g, q, r·p]
        from_first = torch.exp(ref.clamp(min=_LOG_FLOOR)).expand(bsz, nc, q, groups, r).transpose(2, 3)
        z = z + (inter.view(bsz, nc, groups, q, r, p) * from_first[..., None]).flatten(-2)
    return z.view(bsz, nc, groups, q, r, p).transpose(2, 3) * w_out[..., None]  # [b, c, q, g, r, p]


def _entering_states(chunk_states: torch.Tensor, chunk_sum: torch.Tensor) -> torch.Tensor:
    """Step 3, the recurrence over chunk boundaries: the state entering each chunk ``[b, c, g, r, p, n]`` from each
    chunk's end state ``chunk_states [b, c, g, r, p, n]`` and its summed decay ``chunk_sum [b, c, g, r]``."""
    chunk_decay = torch.exp(chunk_sum.clamp(min=_LOG_FLOOR))[..., None, None]
    state = torch.zeros_like(chunk_states[:, 0])
    entering = []
    for z in range(chunk_states.shape[1]):
        entering.append(state)
        state = chunk_decay[:, z] * state + chunk_states[:, z]
    return torch.stack(entering, dim=1)


def _exact(x, dt, s, b, c, *, groups: int, q: int) -> torch.Tensor:
    """The scan with exact, clamped per-head decays ``exp(clamp(s_i − s_j, _LOG_FLOOR))`` (the fallback when a
    chunk's decay range is too wide to factor). Returns ``y [b, c, q, g, r, p]``."""
    bsz, padded, heads, p = x.shape
    n = b.shape[-1]
    nc, r = padded // q, heads // groups
    # heads-major layouts [b, c, g, r, q, ·]: every product below is a plain (batched) matmul on contiguous blocks
    x_hm = x.reshape(bsz, nc, q, groups, r, p).permute(0, 1, 3, 4, 2, 5)
    dt_hm = dt.view(bsz, nc, q, groups, r).permute(0, 1, 3, 4, 2)[..., None]
    if torch.is_grad_enabled() and (x.requires_grad or dt.requires_grad):
        xs = (x_hm * dt_hm).contiguous()  # dt·x in float32
    else:  # one pass: read x (any dtype), write dt·x in float32 straight into the heads-major layout
        xs = torch.mul(x_hm, dt_hm, out=x.new_empty(x_hm.shape, dtype=torch.float32))
    a_cum = s.permute(0, 1, 3, 4, 2)  # [b, c, g, r, q]
    bs = b.view(bsz, nc, q, groups, n).transpose(2, 3)  # [b, c, g, q, n]
    cs = c.view(bsz, nc, q, groups, n).transpose(2, 3)

    # 1. inside each chunk: y_i = Σ_{j<=i} (C_i·B_j) · exp(Σ_{j<k<=i} a_k) · x_j  (attention-like, causal);
    #    C·Bᵀ once per group, causal mask applied to it (small) rather than to the per-head decays
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    cb = torch.matmul(cs, bs.transpose(-1, -2)).masked_fill(~causal, 0.0)[:, :, :, None]  # [b, c, g, 1, q, q]
    y = _intra_chunk(xs, a_cum, cb)  # [b, c, g, r, q, p]
    if nc > 1:
        # 2. state each chunk contributes at its end: Σ_j exp(cumA_end − cumA_j) · x_j ⊗ B_j
        to_end = torch.exp((a_cum[..., -1:] - a_cum).clamp(min=_LOG_FLOOR))[..., None]  # [b, c, g, r, q, 1]
        chunk_states = torch.matmul((xs * to_end).transpose(-1, -2), bs[:, :, :, None])  # [b, c, g, r, p, n]
        states = _entering_states(chunk_states, a_cum[..., -1])  # 3. [b, c, g, r, p, n]
        # 4. contribution of the entering state to every position of the chunk
        from_start = torch.exp(a_cum.clamp(min=_LOG_FLOOR))[..., None]  # [b, c, g, r, q, 1]
        y = y + torch.matmul(cs[:, :, :, None], states.transpose(-1, -2)) * from_start
    return y.permute(0, 1, 4, 2, 3, 5)  # [b, c, q, g, r, p]


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
