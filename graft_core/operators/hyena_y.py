"""Hyena-Y (paper §4.2; introduced by the paper): differs from Hyena-SE by having no featurizer conv.

``q, k, v = split(Linear(D→3D)(u)); y = q·innerconv(k·v); out = Linear(D→D)(y)``; the inner conv (K=4, causal,
depthwise over the token order) starts as identity (last tap 1, others 0, bias 0), so at init the operator is the
plain gated product ``q·k·v``. 4D²+4D + (K+1)D parameters (5,318,784 at D=1152).
"""
from __future__ import annotations

from graft_core.operators.hyena_se import HyenaSE


class HyenaY(HyenaSE):
    """Hyena-Y: two Hadamard gates around an identity-initialised causal inner conv, no featurizer conv.

    Args:
        dim: model width D.
        kernel_size: taps K of the causal inner convolution.
    """

    featurizer = False
