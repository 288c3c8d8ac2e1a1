"""Evaluate a model the way every table row is evaluated: sample → uint8 → metrics against the real training images.

``evaluate_model`` draws ``preset.eval.num_samples`` class-conditional samples with ``graft_core.sampler.sample``
(scheduler, steps, CFG, batch size, bf16 and label mode from ``preset.eval``), converts them to uint8 and computes
``graft_core.metrics.compute_metrics`` against the real **train** images. Two control rows use the same code and
return the same dict shape, to read every table against:

* ``metric_floor``: held-out real images vs train real images (the best a model can score at this sample size);
* ``noise_control``: uniform-noise images vs train real images (what "no model" scores).

Real images come from ``DATA_SOURCES`` (by ``preset.data.name``). The paper preset's DiT samples SD-VAE latents:
pass ``decode=`` (latents → [-1, 1] images) and ``reference=`` (real uint8 images or a ``FeatureSet``) until an
``imagenet`` data source is registered.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from graft_core.metrics import compute_metrics
from graft_core.presets import Preset
from graft_core.sampler import make_labels, sample, to_uint8

Decoder = Callable[[torch.Tensor], torch.Tensor]  # model-space samples [N, C, h, w] → images [N, 3|1, H, W] in [-1, 1]


@dataclass(frozen=True)
class DataSource:
    """Real images of one dataset as uint8 ``[N, H, W, C]`` + labels, per split (``train`` | ``heldout``)."""

    real: Callable[[Preset, str], tuple[np.ndarray, np.ndarray]]
    pixel_space: bool  # False: the model samples latents that need ``decode``


def _digits(preset: Preset, split: str) -> tuple[np.ndarray, np.ndarray]:
    from graft_core.data import load_digits

    data = load_digits(preset.data)
    images, labels = {"train": (data.train_images, data.train_labels),
                      "heldout": (data.heldout_images, data.heldout_labels)}[split]
    return to_uint8(images), labels.numpy()


DATA_SOURCES: dict[str, DataSource] = {"digits": DataSource(_digits, pixel_space=True)}


def register_data_source(name: str, source: DataSource) -> None:
    if name in DATA_SOURCES:
        raise ValueError(f"data source {name!r} registered twice")
    DATA_SOURCES[name] = source


def data_source(preset: Preset) -> DataSource:
    try:
        return DATA_SOURCES[preset.data.name]
    except KeyError:
        raise NotImplementedError(
            f"no real-image source for data {preset.data.name!r} (known: {', '.join(DATA_SOURCES)}); pass "
            f"reference= (uint8 [N, H, W, 3] or a FeatureSet) or register_data_source({preset.data.name!r}, ...)"
        ) from None


def real_images(preset: Preset, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, H, W, C]`` real images and their labels of the preset's dataset."""
    return data_source(preset).real(preset, split)


def _row(images: np.ndarray, labels, preset: Preset, *, reference, extractor: str | None, weights: str | None,
         extra: dict) -> dict:
    if reference is None:
        reference = real_images(preset, "train")[0]
    start = time.time()
    metrics = compute_metrics(images, reference, extractor=extractor or preset.eval.extractor, preset=preset,
                              labels=labels, weights=weights)
    return {**metrics, "num_samples": int(len(images)), "extractor": extractor or preset.eval.extractor,
            "sample_seconds": 0.0, **extra, "metric_seconds": round(time.time() - start, 2)}


def evaluate_model(model, preset: Preset, *, num_samples: int | None = None, seed: int | None = None,
                   decode: Decoder | None = None, reference=None, extractor: str | None = None,
                   weights: str | None = None, progress: bool = False) -> dict:
    """Sample ``num_samples`` (default ``preset.eval.num_samples``) images and compute every metric.

    ``decode`` maps model-space samples to [-1, 1] images (required when the model samples latents: paper preset).
    Returns the metrics plus ``num_samples``, ``seed``, ``extractor``, ``sample_seconds`` (sampling + decoding) and
    ``metric_seconds``.
    """
    ev = preset.eval
    n = ev.num_samples if num_samples is None else num_samples
    seed = ev.seed if seed is None else seed
    if decode is None and not (preset.data.name in DATA_SOURCES and DATA_SOURCES[preset.data.name].pixel_space):
        raise ValueError(f"preset {preset.name!r} samples latents ({preset.data.name}); pass decode= "
                         f"(latents → [-1, 1] images, e.g. an SD-VAE decode)")
    labels = make_labels(n, preset.teacher.num_classes, ev.label_mode, seed)
    start = time.time()
    x = sample(model, labels, teacher=preset.teacher, scheduler=ev.scheduler, steps=ev.steps,
               guidance_scale=ev.guidance_scale, seed=seed, batch_size=ev.batch_size, bf16=ev.bf16, progress=progress,
               guidance_channels=ev.guidance_channels)
    if decode is not None:
        with torch.inference_mode():
            x = torch.cat([decode(chunk).float().cpu() for chunk in x.split(ev.batch_size)])
    sample_seconds = time.time() - start
    return _row(to_uint8(x), labels, preset, reference=reference, extractor=extractor, weights=weights,
                extra={"seed": seed, "sample_seconds": round(sample_seconds, 4)})


def metric_floor(preset: Preset, *, reference=None, extractor: str | None = None, weights: str | None = None) -> dict:
    """Held-out real images (all of them, with their labels) scored as if they were samples."""
    images, labels = real_images(preset, "heldout")
    return _row(images, labels, preset, reference=reference, extractor=extractor, weights=weights,
                extra={"seed": None})


def noise_control(preset: Preset, *, num_samples: int | None = None, seed: int | None = None, reference=None,
                  extractor: str | None = None, weights: str | None = None) -> dict:
    """Uniform-noise uint8 images (shape and channels of the real images) scored as samples; labels as a model's
    (``make_labels``), so ``class_acc`` shows chance level."""
    n = preset.eval.num_samples if num_samples is None else num_samples
    seed = preset.eval.seed if seed is None else seed
    if reference is None:
        reference = real_images(preset, "train")[0]
    shape = reference.shape[1:] if isinstance(reference, np.ndarray) else (preset.data.resolution,) * 2 + (3,)
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = make_labels(n, preset.teacher.num_classes, preset.eval.label_mode, seed)
    return _row(images, labels, preset, reference=reference, extractor=extractor, weights=weights,
                extra={"seed": seed})
