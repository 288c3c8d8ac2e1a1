"""Evaluate a model the way every table row is evaluated: sample → uint8 → metrics against the real training images.

``evaluate_model`` draws ``preset.eval.num_samples`` class-conditional samples with ``graft_core.evaluation.sampler.sample``
(scheduler, steps, CFG, batch size, bf16 and label mode from ``preset.eval``), converts them to uint8 and computes
``graft_core.metrics.compute_metrics`` against the real **train** images. Two control rows use the same code and
return the same dict shape, to read every table against:

* ``metric_floor``: held-out real images vs train real images (the best a model can score at this sample size);
* ``noise_control``: uniform-noise images vs train real images (what "no model" scores).

Real images come from the preset's data source (``graft_core.data.sources``). This in-process path is the tiny
preset's protocol; the paper protocol (50k samples against ADM's reference batch) is ``graft_core.evaluation.sample_at_scale``
followed by ``graft_core.evaluation.adm_eval``, run by the driver as a sampling array and a metrics job.
"""
from __future__ import annotations

import time

import numpy as np

from graft_core.data.sources import source_of
from graft_core.data.decoder import Decoder, decode_batches
from graft_core.metrics import compute_metrics
from graft_core.presets import Preset
from graft_core.evaluation.sampler import make_labels, sample
from graft_core.data.decoder import to_uint8


def real_images(preset: Preset, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, H, W, C]`` real images and their labels of the preset's dataset (``graft_core.data.sources``)."""
    return source_of(preset).real_images(preset, split)


def _row(images: np.ndarray, labels, preset: Preset, *, reference, extractor: str | None, weights: str | None,
         extra: dict, per_sample: dict | None = None) -> dict:
    if reference is None:
        reference = real_images(preset, "train")[0]
    start = time.time()
    metrics = compute_metrics(images, reference, extractor=extractor or preset.eval.extractor, preset=preset,
                              labels=labels, weights=weights, per_sample=per_sample)
    return {**metrics, "num_samples": int(len(images)), "extractor": extractor or preset.eval.extractor,
            "sample_seconds": 0.0, **extra, "metric_seconds": round(time.time() - start, 2)}


def evaluate_model(model, preset: Preset, *, num_samples: int | None = None, seed: int | None = None,
                   decode: Decoder | None = None, reference=None, extractor: str | None = None,
                   weights: str | None = None, progress: bool = False, per_sample: dict | None = None) -> dict:
    """Sample ``num_samples`` (default ``preset.eval.num_samples``) images and compute every metric.

    ``per_sample``: a dict to fill with what paired comparisons need (``metrics.paired``): the pool ``features``,
    the per-draw ``fid_bootstrap`` and the ``pairing`` record (``sampling_pairing``): what two evaluations must
    share for their samples to be the same draws.

    ``decode`` maps model-space samples to [-1, 1] images (required when the model samples latents: paper preset).
    Returns the metrics plus ``num_samples``, ``seed``, ``extractor``, ``sample_seconds`` (sampling + decoding) and
    ``metric_seconds``.
    """
    ev = preset.eval
    n = ev.num_samples if num_samples is None else num_samples
    seed = ev.seed if seed is None else seed
    if decode is None and not source_of(preset).pixel_space:
        raise ValueError(f"preset {preset.name!r} samples latents ({preset.data.name}); pass decode= "
                         f"(latents → [-1, 1] images: graft_core.data.sources.source_of(preset).decoder(preset))")
    labels = make_labels(n, preset.teacher.num_classes, ev.label_mode, seed)
    start = time.time()
    x = sample(model, labels, teacher=preset.teacher, scheduler=ev.scheduler, steps=ev.steps,
               guidance_scale=ev.guidance_scale, seed=seed, batch_size=ev.batch_size, bf16=ev.bf16, progress=progress,
               guidance_channels=ev.guidance_channels)
    x = decode_batches(decode, x, ev.batch_size)
    sample_seconds = time.time() - start
    row = _row(to_uint8(x), labels, preset, reference=reference, extractor=extractor, weights=weights,
               extra={"seed": seed, "sample_seconds": round(sample_seconds, 4)}, per_sample=per_sample)
    if per_sample is not None and "bootstrap" in per_sample:
        per_sample["pairing"] = {**sampling_pairing(preset, seed=seed, labels=labels, reference=reference),
                                 "extractor": extractor or ev.extractor, "bootstrap": per_sample.pop("bootstrap")}
    return row


def sampling_pairing(preset: Preset, *, seed: int, labels, reference=None) -> dict:
    """What makes two in-process evaluations draw the same samples' noise: ``graft_core.evaluation.sampler.sample`` draws batch
    ``i``'s initial noise from ``seed + i`` in batches of ``batch_size``, so seed, batch size, labels and the sampler
    settings must match (the sharded path, ``sample_at_scale``, seeds per shard: a different ``path``)."""
    from graft_core.metrics.paired import labels_digest

    ev = preset.eval
    return {"path": "in_process", "noise": "per batch: torch.Generator(seed + batch index)", "seed": int(seed),
            "batch_size": ev.batch_size, "num_samples": int(len(labels)), "labels": labels_digest(labels),
            "scheduler": ev.scheduler, "steps": ev.steps, "guidance_scale": ev.guidance_scale,
            "guidance_channels": ev.guidance_channels, "bf16": ev.bf16,
            "reference": "train" if reference is None else "given"}


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
