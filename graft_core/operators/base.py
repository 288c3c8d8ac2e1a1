"""What every replacement operator shares: the diffusers call contract and the causal depthwise convolution.

diffusers calls ``attn1(x, encoder_hidden_states=None, attention_mask=None, **cross_attention_kwargs)`` and ``ff(x)``
(diffusers' ``BasicTransformerBlock``). Operators subclass ``GraftOperator`` and implement only ``mix(u)`` on
``[B, N, D]``; the base class absorbs the keyword arguments and refuses the ones a self-mixer cannot honour.
"""
from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

try:  # CUDA kernel used by the official code; optional, PyTorch fallback below
    from causal_conv1d import causal_conv1d_fn as _causal_conv1d_fn
except ImportError:  # pragma: no cover - not installable on CPU machines
    _causal_conv1d_fn = None


class GraftOperator(nn.Module, metaclass=abc.ABCMeta):
    """Base class: ``forward`` checks the call and delegates to ``mix``; subclasses set ``self.dim``."""

    dim: int

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        # Extra kwargs (cross_attention_kwargs such as ``step_frac``) are ignored on purpose: diffusers forwards them
        # to every attn1. A real mask or cross-attention states would silently change the meaning, so those fail.
        if encoder_hidden_states is not None:
            raise ValueError(f"{type(self).__name__} is a self-mixing operator; it cannot take encoder_hidden_states "
                             f"(graft only attn1/ff, never the cross-attention attn2)")
        if attention_mask is not None:
            raise ValueError(f"{type(self).__name__} does not support an attention_mask")
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.dim:
            raise ValueError(f"{type(self).__name__} expects [B, N, {self.dim}] input, "
                             f"got {tuple(hidden_states.shape)}")
        return self.mix(hidden_states)

    @abc.abstractmethod
    def mix(self, u: torch.Tensor) -> torch.Tensor:
        """``[B, N, D] → [B, N, D]``: the operator itself (each operator defines it)."""


def _shifts(taps: int, length: int):
    """``(k, shift)`` of each tap that reaches into a sequence of ``length``: tap k reads ``shift`` tokens back."""
    return [(k, taps - 1 - k) for k in range(taps) if taps - 1 - k < length]


def _token_conv(z: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``y[:, l] = bias + Σ_k w[k] ⊙ z[:, l − (K−1) + k]`` on token-major ``z [B, L, C]``, ``w [K, C]``."""
    length = z.shape[1]
    y = torch.addcmul(bias, z, w[-1]) if bias is not None else z * w[-1]
    for k, shift in _shifts(w.shape[0], length)[:-1]:  # the last tap (shift 0) is the line above
        y[:, shift:].addcmul_(z[:, :length - shift], w[k])
    return y


class _TokenConv(torch.autograd.Function):
    """``_token_conv`` with a hand-written backward. Autograd's own backward of the K in-place shifted multiply-adds
    zero-fills and copies a full ``[B, L, C]`` gradient per tap (as_strided/slice backward); this one is K shifted
    multiply-adds for dz (the same filter run anti-causally) and K multiply-reductions for dw. Measured on 1 CPU
    thread at [256, 64, 384] (the tiny Hyena-X/Mamba-2 conv): forward + backward 62–75 vs 166 ms in float32, 31–35 vs
    133 ms in bf16; a Hyena-X stage-1 step at batch 80 40 vs 61 ms."""

    @staticmethod
    def forward(ctx, z, w, bias):
        ctx.save_for_backward(z, w)
        return _token_conv(z, w, bias)

    @staticmethod
    def backward(ctx, gy):
        z, w = ctx.saved_tensors
        length, shifts = z.shape[1], _shifts(w.shape[0], z.shape[1])
        gz = gw = gb = None
        if ctx.needs_input_grad[0]:
            gz = gy * w[-1]
            for k, shift in shifts[:-1]:
                gz[:, :length - shift].addcmul_(gy[:, shift:], w[k])
        if ctx.needs_input_grad[1]:
            gw = torch.zeros_like(w)
            for k, shift in shifts:
                gw[k] = torch.mul(gy[:, shift:], z[:, :length - shift]).sum((0, 1))
        if ctx.needs_input_grad[2]:  # False when there is no bias
            gb = gy.sum((0, 1))
        return gz, gw, gb


class CausalDepthwiseConv1d(nn.Conv1d):
    """Depthwise 1D convolution over the last axis of ``[B, C, L]``; output ``l`` sees inputs ``l-K+1 … l``.

    Same parameters (``weight [C, 1, K]``, ``bias [C]``) as the official ``CausalConv1D_filter`` so released
    checkpoints load; computed with left padding instead of the ``causal_conv1d`` CUDA kernel unless that kernel is
    importable and the input is on a GPU.
    """

    def __init__(self, channels: int, kernel_size: int, *, bias: bool = True):
        if channels < 1 or kernel_size < 1:
            raise ValueError(f"channels and kernel_size must be positive, got {channels}, {kernel_size}")
        super().__init__(channels, channels, kernel_size, groups=channels, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _causal_conv1d_fn is not None and x.is_cuda:  # pragma: no cover - GPU only
            return _causal_conv1d_fn(x.contiguous(), self.weight.squeeze(1), bias=self.bias, activation=None)
        return F.conv1d(F.pad(x, (self.kernel_size[0] - 1, 0)), self.weight, self.bias, groups=self.groups)

    def forward_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """The same map on token-major ``[B, L, C]`` (the layout of the projections around it), without transposing.

        On CPU, ``transpose → padded copy → F.conv1d → transpose`` of a ``[B, 3D, N]`` tensor costs more than the
        convolution itself (benchmarks/operators.py measured Hyena-X at 0.63 of its FLOP-ratio speed-up at N=16,384
        that way, 0.98 like this): here the K taps are K shifted multiply-adds along L on contiguous rows,
        ``y[l] = bias + Σ_k w_k ⊙ z[l − (K−1) + k]``. Exact up to float rounding order; differentiable.
        """
        if _causal_conv1d_fn is not None and z.is_cuda:  # pragma: no cover - GPU only: the kernel wants [B, C, L]
            return self(z.transpose(1, 2)).transpose(1, 2)
        w = self.weight[:, 0, :].t().to(z.dtype).contiguous()  # [K, C]; rows contiguous (strided ones are 3× slower)
        bias = self.bias.to(z.dtype) if self.bias is not None else None
        if torch.is_grad_enabled() and (z.requires_grad or w.requires_grad):
            return _TokenConv.apply(z, w, bias)
        return _token_conv(z, w, bias)

    def init_identity(self) -> None:
        """Pass-through filter: last tap 1, others 0, bias 0 (the Hyena-Y/SE inner filter init)."""
        with torch.no_grad():
            self.weight.zero_()
            self.weight[:, 0, -1] = 1.0
            if self.bias is not None:
                self.bias.zero_()


def check_positive(owner: str, **values: int | float) -> None:
    """Constructor validation shared by the operators (ValueError, never assert)."""
    for name, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"{owner}: {name} must be positive, got {value!r}")
