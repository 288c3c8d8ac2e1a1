"""The metric registry and ``compute_metrics`` — ADM's metric set (IS, FID, sFID, precision/recall) plus KID, the
clean-fid FID and class accuracy, for any registered extractor.

Each metric is a function of two ``FeatureSet``s (samples, reference) registered under a name with the output keys it
fills. IS / FID / KID / precision-recall are torch-fidelity's own feature-level functions (the ones its
``calculate_metrics`` calls), ``fid_clean`` is clean-fid's ``frechet_distance`` on features from clean-fid's pipeline,
``sfid`` is ``frechet.frechet_distance`` on the spatial features, ``class_acc`` is argmax(logits) == label.

Protocol choices (ADM evaluator, ``guided-diffusion/evaluations/evaluator.py``): precision/recall with k = 3 nearest
neighbours (``prc_neighborhood=3``, torch-fidelity's default, set explicitly; both count the point itself, so the
radius is the distance to the 3rd other point); IS from the bias-free logits over 10 splits (ADM: splits of 5,000 →
10 splits at 50k samples); KID subsets of ``min(1000, N, M)``.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from graft_core.metrics.extractors import ExtractorSpec, get_extractor
from graft_core.metrics.features import FeatureSet, extract_features, quiet_clean_fid, reference_features
from graft_core.metrics.frechet import frechet_distance
from graft_core.presets import Preset

# BLAS threads for the metric arithmetic (eigh, matmuls). OpenBLAS with 2 threads on a busy 2-core machine spins
# instead of working: a 448×448 eigh took 14 s with 2 threads vs 0.07 s with 1, KID 21 s vs 8.5 s (load ≈ 8).
BLAS_THREADS = int(os.environ.get("GRAFTBENCH_METRIC_BLAS_THREADS", "1"))

DEFAULT_OPTIONS = {
    "rng_seed": 2020,  # torch-fidelity's default seed for IS shuffling and KID subsets
    "isc_splits": 10,
    "kid_subsets": 100,
    "kid_subset_size": 1000,  # capped at min(N, M)
    "prc_neighborhood": 3,  # ADM's k
    "prc_batch_size": 10000,
}


@dataclass
class MetricContext:
    spec: ExtractorSpec
    labels: np.ndarray | None
    options: dict = field(default_factory=lambda: dict(DEFAULT_OPTIONS))
    # per-sample arrays a metric keeps for later paired comparisons (``metrics.paired``): filled only when asked
    per_sample: dict | None = None

    def fidelity_kwargs(self, **extra) -> dict:
        """kwargs for torch-fidelity's metric functions: CPU, quiet, no feature cache."""
        return {"cuda": False, "cache": False, "save_cpu_ram": True, "verbose": False, **extra}


@dataclass(frozen=True)
class Metric:
    name: str
    keys: tuple[str, ...]
    roles: tuple[str, ...]  # sample feature roles it reads
    fn: Callable[[FeatureSet, FeatureSet, MetricContext], dict]
    applies: Callable[[MetricContext], bool] = lambda ctx: True


METRICS: dict[str, Metric] = {}


def register_metric(name: str, keys: tuple[str, ...], roles: tuple[str, ...],
                    applies: Callable[[MetricContext], bool] | None = None):
    def deco(fn):
        if name in METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        METRICS[name] = Metric(name, keys, roles, fn, applies or (lambda ctx: True))
        return fn

    return deco


@register_metric("is", ("is", "is_std"), ("logits",))
def _inception_score(fake: FeatureSet, real: FeatureSet, ctx: MetricContext) -> dict:
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    logits = fake["logits"]
    out = isc_features_to_metric(logits, splits=min(ctx.options["isc_splits"], len(logits)), shuffle=True,
                                 rng_seed=ctx.options["rng_seed"])
    return {"is": out[KEY_METRIC_ISC_MEAN], "is_std": out[KEY_METRIC_ISC_STD]}


FID_BOOTSTRAP = 200  # resamples of the generated set for fid_std / fid_lo / fid_hi (fixed seed; ~0.5 s at N=2,000)
# Only for small feature spaces (the tiny preset's digit-classifier features): each resample costs one matrix square
# root of the feature covariance, ~3 s at Inception's 2,048 dimensions on a CPU (200 resamples ≈ 10 min per
# evaluation), and the paper protocol's 50k samples make the spread small anyway.
FID_BOOTSTRAP_MAX_DIM = 512


@register_metric("fid", ("fid", "fid_std", "fid_lo", "fid_hi"), ("pool",))
def _fid(fake: FeatureSet, real: FeatureSet, ctx: MetricContext) -> dict:
    """torch-fidelity's FID, plus its bootstrap spread over the generated set (the reference statistics fixed) when
    the generated features are at hand and small (``FID_BOOTSTRAP_MAX_DIM``). When the caller keeps per-sample data
    (``ctx.per_sample``), the per-draw FIDs are kept for paired differences (``metrics.paired``; above
    ``FID_BOOTSTRAP_MAX_DIM`` by the linearised estimator, which gives no ``fid_std``: only differences use it)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    from graft_core.metrics.paired import fid_bootstrap

    a, b = fake.frechet_stats("pool"), real.frechet_stats("pool")
    if a["mu"].dtype != b["mu"].dtype:  # e.g. a reference built from float64 statistics; torch-fidelity asserts equal
        a, b = ({k: v.astype(np.float64) for k, v in s.items()} for s in (a, b))
    out = {"fid": fid_statistics_to_metric(a, b, False)[KEY_METRIC_FID]}
    if "pool" not in fake.features or FID_BOOTSTRAP < 2:
        return out
    x = fake.features["pool"].cpu().numpy()
    small = x.shape[-1] <= FID_BOOTSTRAP_MAX_DIM
    if small or ctx.per_sample is not None:
        values, meta = fid_bootstrap(x, b["mu"], b["sigma"], draws=FID_BOOTSTRAP, seed=ctx.options["rng_seed"],
                                     method="exact" if small else "linearised")
        if small:
            lo, hi = np.percentile(values, [2.5, 97.5])
            out.update(fid_std=float(values.std(ddof=1)), fid_lo=float(lo), fid_hi=float(hi))
        if ctx.per_sample is not None:
            ctx.per_sample.update(features=x.astype(np.float32), fid_bootstrap=values, bootstrap=meta)
    return out


@register_metric("fid_clean", ("fid_clean",), ("clean",))
def _fid_clean(fake: FeatureSet, real: FeatureSet, ctx: MetricContext) -> dict:
    from cleanfid.fid import frechet_distance as clean_frechet

    a, b = fake.frechet_stats("clean"), real.frechet_stats("clean")
    with quiet_clean_fid():
        value = clean_frechet(a["mu"], a["sigma"], b["mu"], b["sigma"])
    return {"fid_clean": float(value)}


@register_metric("sfid", ("sfid",), ("spatial",))
def _sfid(fake: FeatureSet, real: FeatureSet, ctx: MetricContext) -> dict:
    a, b = fake.frechet_stats("spatial"), real.frechet_stats("spatial")
    return {"sfid": frechet_distance(a["mu"], a["sigma"], b["mu"], b["sigma"])}


@register_metric("kid", ("kid", "kid_std"), ("pool",))
def _kid(fake: FeatureSet, real: FeatureSet, ctx: MetricContext) -> dict:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    f1, f2 = fake["pool"], real["pool"]
    size = min(ctx.options["kid_subset_size"], len(f1), len(f2))
    out = kid_features_to_metric(f1, f2, **ctx.fidelity_kwargs(kid_subsets=ctx.options["kid_subsets"],
                                                              kid_subset_size=size, rng_seed=ctx.options["rng_seed"]))
    return {"kid": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD]}


@register_metric("prc", ("precision", "recall"), ("pool",))
def _precision_recall(fake: FeatureSet, real: FeatureSet, ctx: MetricContext) -> dict:
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    # torch-fidelity's convention: features_1 = generated, features_2 = real.
    out = prc_features_to_metric(fake["pool"], real["pool"], **ctx.fidelity_kwargs(
        prc_neighborhood=ctx.options["prc_neighborhood"], prc_batch_size=ctx.options["prc_batch_size"]))
    return {"precision": out[KEY_METRIC_PRECISION], "recall": out[KEY_METRIC_RECALL]}


@register_metric("class_acc", ("class_acc",), ("logits",),
                 applies=lambda ctx: ctx.labels is not None and ctx.spec.is_classifier)
def _class_accuracy(fake: FeatureSet, real: FeatureSet, ctx: MetricContext) -> dict:
    pred = fake["logits"].argmax(1).numpy()
    return {"class_acc": float(np.mean(pred == ctx.labels))}


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def compute_metrics(samples: np.ndarray, reference: np.ndarray | FeatureSet, *, extractor: str, preset: Preset,
                    labels: np.ndarray | torch.Tensor | Sequence[int] | None = None, weights: str | None = None,
                    metrics: Sequence[str] | None = None, batch_size: int = 200, disk_cache: bool = True,
                    device: str | None = None, per_sample: dict | None = None, **options) -> dict[str, float]:
    """All registered metrics of ``samples`` against ``reference`` under one extractor.

    Args:
        samples: uint8 ``[N, H, W, C]`` (C = 1 or 3), the ADM ``.npz`` layout.
        reference: uint8 ``[M, H, W, C]`` real images, or a ``FeatureSet`` (e.g. from precomputed statistics).
            Real-set features are cached in memory and on disk by content, so many rows share one extraction.
        extractor: ``"digits"`` or ``"inception"`` (``EXTRACTORS``).
        preset: finds the digit classifier (trained into the cache if missing).
        labels: the conditioning class of each sample; adds ``class_acc`` when the extractor is a classifier.
        weights: extractor weights (classifier folder / Inception ``.pth``); default: the preset's classifier /
            ``$GRAFTBENCH_INCEPTION_WEIGHTS``. Missing weights raise ``MissingWeightsError`` before any work.
        metrics: names from ``METRICS`` (default: all that apply).
        device: where the extractor runs (default: CUDA when available, else CPU; the metric arithmetic is CPU).
            Torch's CPU thread count is left to the caller; BLAS runs on ``BLAS_THREADS`` threads.
        per_sample: a dict to fill with the generated set's per-sample data for paired comparisons
            (``features``: pool features, ``fid_bootstrap``: per-draw FIDs, ``bootstrap``: how they were drawn).
        options: overrides of ``DEFAULT_OPTIONS`` (``rng_seed``, ``kid_subset_size``, ...).

    Returns ``{"is", "is_std", "fid", "fid_std", "fid_lo", "fid_hi", "fid_clean", "sfid", "kid", "kid_std",
    "precision", "recall"[, "class_acc"]}``.
    """
    spec = get_extractor(extractor)
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown metric options {sorted(unknown)}; known: {', '.join(DEFAULT_OPTIONS)}")
    labels_np = None if labels is None else np.asarray(torch.as_tensor(labels).cpu()).astype(np.int64)
    if labels_np is not None and len(labels_np) != len(samples):
        raise ValueError(f"{len(labels_np)} labels for {len(samples)} samples")
    ctx = MetricContext(spec, labels_np, {**DEFAULT_OPTIONS, **options}, per_sample)
    names = list(METRICS) if metrics is None else list(metrics)
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose from: {', '.join(METRICS)}")
    chosen = [METRICS[n] for n in names if METRICS[n].applies(ctx)]
    weights_path = spec.weights(preset, weights)
    roles = {r for m in chosen for r in m.roles}
    fake = extract_features(samples, spec, weights_path, roles=tuple(sorted(roles - {"clean"})),
                            clean="clean" in roles, batch_size=batch_size, device=device)
    real = reference if isinstance(reference, FeatureSet) else reference_features(
        reference, spec, weights_path, disk=disk_cache, batch_size=batch_size, device=device)
    out: dict[str, float] = {}
    with _blas_threads(BLAS_THREADS):
        for metric in chosen:
            out.update(metric.fn(fake, real, ctx))
    return out


def _blas_threads(n: int):
    try:
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")
