"""Mamba-2 (paper §4.5; Table 3: d_state=64, E=2) — the "linear attention" entry.

Same module as ``mamba_ssm.Mamba2(d_model=D, d_state=64, d_conv=4, expand=2, headdim=16)`` with library defaults
(ngroups 1, no projection biases, conv bias, gated RMSNorm after the scan, D skip per head), with its parameter names
(``in_proj``, ``conv1d``, ``dt_bias``, ``A_log``, ``D``, ``norm.weight``, ``out_proj``) and its initialisation, so
released weights load. One forward (causal) scan over the raster-ordered tokens, as in the official code.

mamba-ssm is CUDA-only; the scan here is the pure-PyTorch chunked SSD of ``graft_core.operators.ssd``. When
``mamba_ssm``'s Triton kernel is importable and the input is on a GPU, that kernel is used instead (same math).
Parameters: D·(2·E·D + 2·G·N + H) + (K+1)·(E·D + 2·G·N) + 3·H + E·D + E·D·D (8,290,864 at D=1152).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from graft_core.operators.base import CausalDepthwiseConv1d, GraftOperator, check_positive
from graft_core.operators.ssd import ssd_chunked

try:  # pragma: no cover - CUDA only
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as _cuda_scan
except ImportError:
    _cuda_scan = None


# Without autograd, ``mix`` runs batches of more than this many tokens in pieces of at most this many.
_PIECE_TOKENS = 4096


class GatedRMSNorm(nn.Module):
    """``rmsnorm(y · silu(z)) · weight`` per group of channels (mamba_ssm ``RMSNormGated``, norm_before_gate=False)."""

    def __init__(self, dim: int, *, group_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.group_size, self.eps = group_size, eps

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = y.dtype
        gate = F.silu(z.float())
        if torch.is_grad_enabled():
            h = (gate * y).unflatten(-1, (-1, self.group_size))  # float32 (type promotion; no copy of y)
            h = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + self.eps)
            return (h.flatten(-2) * self.weight.float()).to(dtype)
        # no autograd (sampling): the same formula in place, mean square as one reduction
        h = gate.mul_(y).unflatten(-1, (-1, self.group_size))
        ms = torch.linalg.vector_norm(h, dim=-1, keepdim=True).square_().div_(self.group_size)
        h = h.mul_(ms.add_(self.eps).rsqrt_()).flatten(-2)
        return h.mul_(self.weight.float()).to(dtype)


class Mamba2(GraftOperator):
    """Mamba-2 selective state-space mixer (causal scan over the token order).

    Args:
        dim: model width D.
        d_state: SSM state size N per head.
        expand: inner width E·D.
        headdim: channels P per SSM head; must divide E·D (H = E·D / P heads).
        d_conv: taps of the causal depthwise conv on (x, B, C).
        ngroups: number of (B, C) groups shared by the heads; must divide H.
        chunk_size: SSD chunk length Q (the result does not depend on it; min(Q, N) is used).
        A_init_range, dt_min, dt_max, dt_init_floor: mamba_ssm's initialisation ranges.
    """

    def __init__(self, dim: int, *, d_state: int = 64, expand: int = 2, headdim: int = 16, d_conv: int = 4,
                 ngroups: int = 1, chunk_size: int = 64, A_init_range: tuple[float, float] = (1.0, 16.0),
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        check_positive("Mamba2", dim=dim, d_state=d_state, expand=expand, headdim=headdim, d_conv=d_conv,
                       ngroups=ngroups, chunk_size=chunk_size, dt_min=dt_min, dt_max=dt_max)
        d_inner = expand * dim
        if d_inner % headdim:
            raise ValueError(f"Mamba2: headdim={headdim} must divide expand*dim={d_inner}")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"Mamba2: ngroups={ngroups} must divide the number of heads {nheads}")
        lo, hi = A_init_range
        if not 0 < lo <= hi:
            raise ValueError(f"Mamba2: A_init_range must satisfy 0 < lo <= hi, got {A_init_range}")
        self.dim, self.d_state, self.expand, self.headdim = dim, d_state, expand, headdim
        self.d_inner, self.nheads, self.ngroups, self.chunk_size = d_inner, nheads, ngroups, chunk_size
        conv_dim = d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(dim, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=False)  # [z, x, B, C, dt]
        self.conv1d = CausalDepthwiseConv1d(conv_dim, d_conv)
        dt = torch.exp(torch.rand(nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.empty(nheads).uniform_(lo, hi).log())
        self.D = nn.Parameter(torch.ones(nheads))
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // ngroups)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def scan(self, x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
             c: torch.Tensor) -> torch.Tensor:
        if _cuda_scan is not None and x.is_cuda:  # pragma: no cover - GPU only
            return _cuda_scan(x, dt, a, b, c, chunk_size=256)
        return ssd_chunked(x, dt, a, b, c, chunk_size=self.chunk_size)

    def mix(self, u: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and u.shape[0] > 1 and u.shape[0] * u.shape[1] > _PIECE_TOKENS:
            # sampling (batch 1000): the same rows in pieces, so every intermediate stays in cache
            return torch.cat([self._mix(piece) for piece in u.split(max(1, _PIECE_TOKENS // u.shape[1]))])
        return self._mix(u)

    def _mix(self, u: torch.Tensor) -> torch.Tensor:
        bsz, n, _ = u.shape
        gn = self.ngroups * self.d_state
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.d_inner + 2 * gn, self.nheads], dim=-1)
        xbc = F.silu(self.conv1d.forward_tokens(xbc))
        x, b, c = xbc.split([self.d_inner, gn, gn], dim=-1)
        x = x.reshape(bsz, n, self.nheads, self.headdim)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        a = -torch.exp(self.A_log.float())
        y = self.scan(x, dt, a, b.reshape(bsz, n, self.ngroups, -1), c.reshape(bsz, n, self.ngroups, -1))
        # D skip per head, as one [H·P] vector along the channels: broadcasting a [H, 1] factor over P is ~6× slower
        # in bf16 on CPU (no vectorised inner loop)
        d_skip = self.D.to(x.dtype).repeat_interleave(self.headdim)
        y = torch.addcmul(y.reshape(bsz, n, self.d_inner), x.reshape(bsz, n, self.d_inner), d_skip)
        y = self.norm(y, z)
        return self.out_proj(y)

    def extra_repr(self) -> str:
        return (f"d_state={self.d_state}, expand={self.expand}, headdim={self.headdim}, nheads={self.nheads}, "
                f"ngroups={self.ngroups}, chunk_size={self.chunk_size}")
