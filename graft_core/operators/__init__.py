"""Replacement operators for grafting (paper §4) behind one exact-name registry.

    from graft_core import operators
    op = operators.build("hyena_x", 1152, num_heads=16, seq_len=256)
    operators.available("attn")          # ('hyena_se', 'hyena_x', 'hyena_y', 'mamba2', 'mha', 'swa')
    operators.operator_info("mlp_hyena_x").seq_len_bound   # True
    operators.catalogue_rows("mlp")      # the Table-3/4 grid rows: mlp_r3, mlp_r6, mlp_hyena_x

Every operator maps ``[B, N, D] -> [B, N, D]`` and accepts the keyword arguments diffusers passes to ``attn1``.
Importing this package does not import torch: the built-ins are declared in ``catalogue`` and their classes
(``operators.HyenaX``, ...) are imported on first use; plugins register through ``register_operator``.
"""
from importlib import import_module as _import_module

from graft_core.operators.registry import (ENTRY_POINT_GROUP, PLUGIN_ENV, SITES, TEACHER_OPERATOR,  # noqa: F401
                                           CatalogueRow, OpCost, OperatorInfo, available, build, catalogue_row,
                                           catalogue_rows, load_plugins, operator_info, register_operator,
                                           register_row, use_plugins)

_CLASSES = {"CausalDepthwiseConv1d": "base", "GraftOperator": "base", "MHA": "mha", "SlidingWindowAttention": "swa",
            "HyenaSE": "hyena_se", "HyenaX": "hyena_x", "HyenaY": "hyena_y", "Mamba2": "mamba2", "MLP": "mlp",
            "MLPHyenaX": "mlp_hyena_x"}


def __getattr__(name: str):
    """The operator classes, imported (with torch) only when asked for."""
    if name in _CLASSES:
        return getattr(_import_module(f"graft_core.operators.{_CLASSES[name]}"), name)
    raise AttributeError(f"module 'graft_core.operators' has no attribute {name!r}")


def init_from_teacher(op, original):
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
