"""Hyena-X as an MLP replacement (paper §4.7): differs from Hyena-X by mixing channels instead of tokens.

``z = Linear(D→3·h)(u)`` (h = int(r·D)); a causal depthwise conv with one K-tap filter **per token** then runs along
the channel axis of ``z`` (``[B, N, 3h]`` is read as N channels of length 3h, exactly as the official code calls
``Conv1d`` on it); ``q, k, v = split(z, h)``; ``y = q·(k·v)``; ``out = Linear(h→D)(y)``. The conv has N channels, so
the module only works for the token count it was built for (``seq_len``-bound). Its dense FLOPs equal an r=4 MLP's
when r=2. 4·h·D + 3h + D + (K+1)·N parameters (10,626,176 at D=1152, N=256).
"""
from __future__ import annotations

import torch
from torch import nn

from graft_core.operators.base import CausalDepthwiseConv1d, GraftOperator, check_positive


class MLPHyenaX(GraftOperator):
    """Gated channel mixer with a per-token causal conv along the feature axis.

    Args:
        dim: model width D.
        seq_len: token count N (the conv's channel count).
        ratio: expansion r; hidden width h = int(r·D).
        kernel_size: taps K of the per-token causal conv.
    """

    def __init__(self, dim: int, *, seq_len: int, ratio: float = 2.0, kernel_size: int = 4):
        super().__init__()
        check_positive(type(self).__name__, dim=dim, seq_len=seq_len, ratio=ratio, kernel_size=kernel_size)
        hidden = int(dim * ratio)
        if hidden < 1:
            raise ValueError(f"MLPHyenaX: int(dim * ratio) = {hidden}; ratio={ratio} is too small for dim={dim}")
        self.dim, self.seq_len, self.ratio, self.hidden, self.kernel_size = dim, seq_len, ratio, hidden, kernel_size
        self.in_proj = nn.Linear(dim, 3 * hidden)
        self.short_filter = CausalDepthwiseConv1d(seq_len, kernel_size)
        self.out_proj = nn.Linear(hidden, dim)

    def mix(self, u: torch.Tensor) -> torch.Tensor:
        if u.shape[1] != self.seq_len:
            raise ValueError(f"MLPHyenaX was built for {self.seq_len} tokens (one conv filter per token), "
                             f"got {u.shape[1]}")
        z = self.short_filter(self.in_proj(u))  # [B, N, 3h]: tokens are the conv's channels
        q, k, v = z.split(self.hidden, dim=-1)
        return self.out_proj(q * (k * v))

    def extra_repr(self) -> str:
        return f"seq_len={self.seq_len}, ratio={self.ratio}, hidden={self.hidden}, kernel_size={self.kernel_size}"
