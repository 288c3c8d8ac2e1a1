"""Model space → pixels (and pixels → the uint8 images every metric reads): the one wrapper around a diffusers ``AutoencoderKL`` that every latent model decodes with.

DiT samples SD-VAE latents (× 0.18215, paper §2), PixArt-Σ SD-XL VAE latents (× its ``config.scaling_factor``);
evaluation, the ImageNet "real" images, sharded sampling and GenEval all turn them into [-1, 1] images the same way
(``vae.decode(z / scale).sample``, float32), in batches that bound the VAE's memory. A pixel-space model (digits)
has no decoder: its samples are the images.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

Decoder = Callable[[torch.Tensor], torch.Tensor]  # model-space samples → [-1, 1] pixels [B, 3, H, W]


def vae_decoder(vae, *, scale: float | None = None) -> Decoder:
    """``z ↦ vae.decode(z / scale).sample`` in float32, clamped to [-1, 1], computed on the VAE's device and dtype.
    ``scale``: the latents' scaling factor (default ``vae.config.scaling_factor``)."""
    param = next(vae.parameters())
    scale = vae.config.scaling_factor if scale is None else scale

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z.to(device=param.device, dtype=param.dtype) / scale).sample.float().clamp(-1, 1)

    return decode


def decode_batches(decode: Decoder | None, samples: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``decode`` over ``samples`` in batches of ``batch_size`` (no autograd) → float32 CPU images; ``decode=None``:
    the samples are pixels already."""
    if decode is None:
        return samples.float().cpu()
    with torch.inference_mode():
        return torch.cat([decode(chunk).float().cpu() for chunk in samples.split(batch_size)])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float ``[N, C, H, W]`` → uint8 ``[N, H, W, C]`` (the ADM ``.npz`` layout)."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()
