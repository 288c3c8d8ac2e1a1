"""Multi-head self-attention — the self-grafting control (paper §3, Table 2).

A fresh operator with exactly the teacher's parameters and parameter names (diffusers ``Attention``: ``to_q``,
``to_k``, ``to_v``, ``to_out.0``, all with bias), so a teacher ``attn1`` state dict loads into it unchanged and the
forward repeats diffusers' ``AttnProcessor2_0`` op for op (bit-identical outputs), or — ``kernel = "classic"``, the
choice of ``graft_core.models.teacher.use_fast_attention`` on CPU at short sequences — its classic ``AttnProcessor``
(baddbmm → softmax → bmm; same function, a much faster backward on CPU). 4·D² + 4·D parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from graft_core.operators.base import GraftOperator, check_positive


class MHA(GraftOperator):
    """Softmax multi-head self-attention with diffusers-compatible parameter names.

    Args:
        dim: model width D.
        num_heads: number of heads; must divide D.
    """

    def __init__(self, dim: int, *, num_heads: int):
        super().__init__()
        check_positive(type(self).__name__, dim=dim, num_heads=num_heads)
        if dim % num_heads:
            raise ValueError(f"{type(self).__name__}: num_heads={num_heads} must divide dim={dim}")
        self.dim, self.num_heads = dim, num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # index 0 as in diffusers (index 1 there is a Dropout)
        self.kernel = "sdpa"  # "sdpa" (AttnProcessor2_0) | "classic" (AttnProcessor): how, not what, is computed

    def attn_mask(self, n: int, device: torch.device) -> torch.Tensor | None:
        """Which keys each query may see (``None`` = all); overridden by sliding-window attention."""
        return None

    def mix(self, u: torch.Tensor) -> torch.Tensor:
        b, n, _ = u.shape
        heads, head_dim = self.num_heads, self.dim // self.num_heads
        q = self.to_q(u).view(b, -1, heads, head_dim).transpose(1, 2)
        k = self.to_k(u).view(b, -1, heads, head_dim).transpose(1, 2)
        v = self.to_v(u).view(b, -1, heads, head_dim).transpose(1, 2)
        mask = self.attn_mask(n, u.device)
        if self.kernel == "classic":
            y = classic_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
        y = y.transpose(1, 2).reshape(b, -1, heads * head_dim).to(q.dtype)
        return self.to_out[0](y)

    def init_from_teacher(self, original: nn.Module) -> None:
        """Copy a diffusers ``Attention`` (or another ``MHA``) of the same size into this operator, strictly; the
        kernel follows the original's processor, so the copy computes bit-identically."""
        state = {k: v for k, v in original.state_dict().items() if not k.startswith("processor")}
        self.load_state_dict(state, strict=True)
        processor = type(getattr(original, "processor", None)).__name__
        self.kernel = getattr(original, "kernel", "classic" if processor == "AttnProcessor" else "sdpa")


def classic_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q·kᵀ/√d)·v`` as diffusers' ``AttnProcessor`` computes it (heads folded into the batch, baddbmm with
    α = 1/√d, softmax, bmm); ``mask`` = boolean keys-visible ``[N, N]``. Inputs and output ``[B, H, N, d]``."""
    b, h, n, d = q.shape
    q, k, v = (t.reshape(b * h, n, d) for t in (q, k, v))
    scores = torch.baddbmm(torch.empty(b * h, n, n, dtype=q.dtype, device=q.device), q, k.transpose(-1, -2),
                           beta=0, alpha=d ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1).to(q.dtype)
    return torch.bmm(probs, v).view(b, h, n, d)
