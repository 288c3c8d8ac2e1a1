"""Sample-quality metrics: ADM's set (IS, FID, sFID, precision/recall) + KID, clean-fid FID and class accuracy.

Extractors (``EXTRACTORS``): ``digits`` (a small CNN trained on the digits; tiny/micro presets) and ``inception``
(Inception-v3, the ADM evaluator's features; paper preset, weights supplied by the user). Both are torch-fidelity
feature extractors. Entry point: ``compute_metrics(samples, reference, extractor=..., preset=..., labels=...)``.

Names are imported lazily, so ``python -m graft_core.metrics.classifier`` runs without importing torch-fidelity first.
"""
import importlib

_EXPORTS = {
    "compute_metrics": "compute", "METRICS": "compute", "DEFAULT_OPTIONS": "compute", "register_metric": "compute",
    "EXTRACTORS": "extractors", "get_extractor": "extractors", "register_extractor": "extractors",
    "resolve_inception_weights": "extractors", "InceptionWeightsMissingError": "extractors",
    "INCEPTION_WEIGHTS_ENV": "extractors",
    "FeatureSet": "features", "extract_features": "features", "reference_features": "features",
    "clean_fid_folders": "features",
    "frechet_distance": "frechet",
    "load_classifier": "classifier", "classifier_dir": "classifier", "train_classifier": "classifier",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
