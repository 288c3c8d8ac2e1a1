"""Sliding-window attention, SWA (paper §4.4; Table 3: w=4, bidirectional).

Differs from ``mha`` only by a band mask: query ``i`` attends to keys ``i-w … i+w`` of the 1D raster-ordered token
sequence (2w+1 keys; not a 2D window). Same parameters as MHA (ΔParam 0 %). The official code uses flash-attn's
``window_size=(4, 4)``; here SDPA with a boolean band mask computes the same function (and so costs full attention on
CPU — the FLOP saving is counted analytically in ``graft_core.grafting.accounting``).
"""
from __future__ import annotations

import torch

from graft_core.operators.mha import MHA


def band_mask(n: int, window: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[n, n]`` boolean, True where ``|i - j| <= window``."""
    idx = torch.arange(n, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window


class SlidingWindowAttention(MHA):
    """Bidirectional sliding-window MHA over the 1D token order.

    Args:
        dim: model width D.
        num_heads: number of heads; must divide D.
        window: keys on each side of the query (w); 0 means each token attends only to itself.
    """

    def __init__(self, dim: int, *, num_heads: int, window: int = 4):
        super().__init__(dim, num_heads=num_heads)
        if window < 0:
            raise ValueError(f"SlidingWindowAttention: window must be >= 0, got {window}")
        self.window = window
        self._mask_cache: dict[tuple[int, str], torch.Tensor] = {}

    def attn_mask(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, str(device))
        if key not in self._mask_cache:
            self._mask_cache[key] = band_mask(n, self.window, device)
        return self._mask_cache[key]

    def extra_repr(self) -> str:
        return f"window={self.window}"
