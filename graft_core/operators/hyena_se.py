"""Hyena-SE (paper §4.3; from the StripedHyena-2 "multi-hybrid" work) — the sibling Hyena-X and Hyena-Y derive from.

Dense featurizer ``Linear(D→3D)``, a short causal depthwise conv over the raster token order (the "featurizer",
3D channels, K taps), two Hadamard gates with a causal depthwise "inner filter" (D channels, K taps, identity init)
between them, and ``Linear(D→D)``. Parameter names follow the official code (``in_proj``, ``short_filter``,
``inner_filter``, ``out_proj``) so its stage-1 checkpoints load strictly. 4D²+4D + 4(K+1)D parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from graft_core.operators.base import CausalDepthwiseConv1d, GraftOperator, check_positive


class HyenaSE(GraftOperator):
    """Hyena-SE: featurizer conv + identity-initialised inner conv between the two gates.

    Args:
        dim: model width D.
        kernel_size: taps K of the causal depthwise convolutions (Table 3: K=4).
    """

    featurizer = True  # short conv on q, k, v (Hyena-Y drops it)
    inner = True  # inner conv on k·v (Hyena-X drops it)

    def __init__(self, dim: int, *, kernel_size: int = 4):
        super().__init__()
        check_positive(type(self).__name__, dim=dim, kernel_size=kernel_size)
        self.dim, self.kernel_size = dim, kernel_size
        self.in_proj = nn.Linear(dim, 3 * dim)
        if self.featurizer:
            self.short_filter = CausalDepthwiseConv1d(3 * dim, kernel_size)
        if self.inner:
            self.inner_filter = CausalDepthwiseConv1d(dim, kernel_size)
            self.inner_filter.init_identity()  # starts as the plain gated product q·(k·v)
        self.out_proj = nn.Linear(dim, dim)

    def mix(self, u: torch.Tensor) -> torch.Tensor:
        z = self.in_proj(u)  # [B, N, 3D]; the convolutions run over the token axis, token-major (forward_tokens)
        if self.featurizer:
            z = self.short_filter.forward_tokens(z)
        q, k, v = z.split(self.dim, dim=-1)
        v = k * v
        if self.inner:
            v = self.inner_filter.forward_tokens(v)
        return self.out_proj(q * v)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
