"""Replacement operators for grafting (paper §4) behind one exact-name registry.

    from graft_core import operators
    op = operators.build("hyena_x", 1152, num_heads=16, seq_len=256)
    operators.available("attn")          # ('hyena_se', 'hyena_x', 'hyena_y', 'mamba2', 'mha', 'swa')
    operators.operator_info("mlp_hyena_x").seq_len_bound   # True

Every operator maps ``[B, N, D] -> [B, N, D]`` and accepts the keyword arguments diffusers passes to ``attn1``.
Importing this package registers all of them (the imports below are the complete list).
"""
from graft_core.operators.registry import (OperatorInfo, available, build, operator_info,  # noqa: F401
                                           register_operator, SITES)
from graft_core.operators.base import CausalDepthwiseConv1d, GraftOperator  # noqa: F401
from graft_core.operators.mha import MHA  # noqa: F401
from graft_core.operators.swa import SlidingWindowAttention  # noqa: F401
from graft_core.operators.hyena_se import HyenaSE  # noqa: F401
from graft_core.operators.hyena_x import HyenaX  # noqa: F401
from graft_core.operators.hyena_y import HyenaY  # noqa: F401
from graft_core.operators.mamba2 import Mamba2  # noqa: F401
from graft_core.operators.mlp import MLP  # noqa: F401
from graft_core.operators.mlp_hyena_x import MLPHyenaX  # noqa: F401

from torch import nn as _nn


def init_from_teacher(op: _nn.Module, original: _nn.Module) -> _nn.Module:
    """Load the replaced module's weights into a same-architecture operator (self-graft ``mha``/``swa``/``mlp``).

    The result computes exactly what ``original`` computed (bit for bit for ``mha`` and ``mlp``); an operator with
    no weight mapping raises ``ValueError``.
    """
    loader = getattr(op, "init_from_teacher", None)
    if loader is None:
        raise ValueError(f"{type(op).__name__} has new parameters; it has no mapping from the teacher's weights "
                         f"(only mha, swa and mlp do)")
    loader(original)
    return op
