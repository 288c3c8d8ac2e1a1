"""Hyena-X (paper §4.1; introduced by the paper): differs from Hyena-SE by having no inner filter.

``z = shortconv(Linear(D→3D)(u)); q, k, v = split(z); y = q·(k·v); out = Linear(D→D)(y)`` — a local gated
convolution whose only token mixing is the K=4 causal featurizer conv. 4D²+4D + 3(K+1)D parameters (5,330,304 at
D=1152).
"""
from __future__ import annotations

from graft_core.operators.hyena_se import HyenaSE


class HyenaX(HyenaSE):
    """Hyena-X: featurizer conv, two Hadamard gates, no inner filter.

    Args:
        dim: model width D.
        kernel_size: taps K of the causal featurizer convolution.
    """

    inner = False
