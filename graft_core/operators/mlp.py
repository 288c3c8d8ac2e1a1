"""Two-layer MLP with a chosen expansion ratio (paper §4.6; r=4 is the self-graft, r=3 and r=6 the variants).

timm ``Mlp(in=D, hidden=int(D·r), act=GELU(tanh))`` with timm's parameter names (``fc1``, ``fc2``) so the official
checkpoints load; ``init_from_teacher`` maps a diffusers ``FeedForward`` (``net.0.proj``, ``net.2``) of the same
hidden size onto it. 2·D·h + h + D parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from graft_core.operators.base import GraftOperator, check_positive

# diffusers FeedForward (GELU with proj) → timm Mlp
_FEEDFORWARD_KEYS = {"net.0.proj.weight": "fc1.weight", "net.0.proj.bias": "fc1.bias",
                     "net.2.weight": "fc2.weight", "net.2.bias": "fc2.bias"}


class MLP(GraftOperator):
    """Linear(D→h) → GELU(tanh) → Linear(h→D), h = int(D·ratio).

    Args:
        dim: model width D.
        ratio: expansion ratio r (DiT's own MLP has r=4).
    """

    def __init__(self, dim: int, *, ratio: float = 4.0):
        super().__init__()
        check_positive(type(self).__name__, dim=dim, ratio=ratio)
        hidden = int(dim * ratio)
        if hidden < 1:
            raise ValueError(f"MLP: int(dim * ratio) = {hidden}; ratio={ratio} is too small for dim={dim}")
        self.dim, self.ratio, self.hidden = dim, ratio, hidden
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def mix(self, u: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(u)))

    def init_from_teacher(self, original: nn.Module) -> None:
        """Copy a diffusers ``FeedForward`` (GELU-tanh, same hidden size) or another ``MLP`` strictly."""
        state = original.state_dict()
        act = getattr(getattr(original, "net", [None])[0], "approximate", "tanh")
        if act != "tanh":
            raise ValueError(f"the teacher's MLP uses GELU(approximate={act!r}); this operator uses tanh GELU")
        if set(state) == set(_FEEDFORWARD_KEYS):
            state = {_FEEDFORWARD_KEYS[k]: v for k, v in state.items()}
        self.load_state_dict(state, strict=True)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, hidden={self.hidden}"
