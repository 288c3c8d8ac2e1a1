"""Depth → width (paper §4.9, Table 6, Fig. 5): run consecutive block pairs side by side.

Blocks ``2i`` and ``2i+1`` both read the same input ``x``; each one's residual delta ``d = block(x) − x`` is
concatenated and a learned ``Linear(2D → D)`` merges them: ``x ← x + W·[d_a; d_b] + b``. Both blocks keep their
pretrained weights (norms, adaLN, gates included), so a 28-block DiT-XL/2 becomes 14 "wide" layers.

Merge initialisation (the paper's is UNKNOWN, §13): ``W = [I, I]``, ``b = 0`` — the merge starts as the sum of the
two deltas, ``x + d_a(x) + d_b(x)``. The sequential pair computes ``x + d_a(x) + d_b(x + d_a(x))``, so the two agree
to first order in ``d_a`` (exactly when block b's delta does not depend on its input shift). Averaging (``W = [I/2,
I/2]``) would halve every layer's update; ``[I, 0]`` would drop block b. Test: ``tests/test_restructure.py``.

Parameter count: +14·(2D·D + D) = +37.2M at D=1152 (675M → 712M when diffusers' per-block copy of the timestep/label
embedder is counted once, as the DiT paper does; see ``graft_core.grafting.accounting.count_params``).
"""
from __future__ import annotations

import torch
from torch import nn


class ParallelPair(nn.Module):
    """Two transformer blocks on the same input, merged by a linear map of their residual deltas.

    Quacks like a diffusers block: takes the block's call arguments and passes them to both blocks; ``norm1`` is the
    first block's (the DiT output head reads its conditioning from ``transformer_blocks[0].norm1.emb``).
    """

    def __init__(self, first: nn.Module, second: nn.Module, dim: int):
        super().__init__()
        self.blocks = nn.ModuleList([first, second])
        ref = next(first.parameters())
        self.merge = nn.Linear(2 * dim, dim, device=ref.device, dtype=ref.dtype)
        if ref.device.type != "meta":
            with torch.no_grad():
                eye = torch.eye(dim, device=ref.device, dtype=ref.dtype)
                self.merge.weight.copy_(torch.cat([eye, eye], dim=1))  # W = [I, I]: sum of the two deltas
                self.merge.bias.zero_()

    @property
    def norm1(self) -> nn.Module:
        return self.blocks[0].norm1

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        deltas = [block(hidden_states, *args, **kwargs) - hidden_states for block in self.blocks]
        return hidden_states + self.merge(torch.cat(deltas, dim=-1))


def to_parallel_pairs(model: nn.Module) -> nn.Module:
    """Rewire ``model.transformer_blocks`` (even count) into pairs (2i, 2i+1) run in parallel; in place, returns it.

    ``model.config`` keeps the original ``num_layers`` (diffusers configs are frozen); ``model.graft_restructure``
    records the edit (``surgery.graft`` refuses to graft a restructured model).
    """
    if getattr(model, "graft_restructure", None):
        raise ValueError(f"model is already restructured ({model.graft_restructure})")
    blocks = list(model.transformer_blocks)
    if len(blocks) % 2:
        raise ValueError(f"depth→width pairs consecutive blocks; got an odd number of blocks ({len(blocks)})")
    dim = int(model.config.num_attention_heads) * int(model.config.attention_head_dim)
    model.transformer_blocks = nn.ModuleList(
        ParallelPair(blocks[i], blocks[i + 1], dim) for i in range(0, len(blocks), 2))
    model.graft_restructure = "parallel_pairs"
    return model


def merge_params(num_layers: int, dim: int) -> int:
    """Parameters the merges add: (num_layers / 2) · (2D·D + D)."""
    return (num_layers // 2) * (2 * dim * dim + dim)
