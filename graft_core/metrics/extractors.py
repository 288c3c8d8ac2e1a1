"""Feature extractors for the metrics, as torch-fidelity ``FeatureExtractorBase`` subclasses, plus our registry.

Two extractors, one per preset:

* ``digits`` → torch-fidelity name ``graftbench-digits``: the trained digit CNN (``classifier.py``). Features
  ``pool`` (penultimate, FID/KID/PRC), ``logits`` (IS, class accuracy), ``spatial`` (sFID).
  ``feature_extractor_weights_path`` is the classifier *folder*.
* ``inception`` → torch-fidelity name ``graftbench-inception-v3``: torch-fidelity's ``inception-v3-compat``
  unchanged (``2048`` pool_3, ``logits_unbiased`` as ADM's IS) plus ``spatial``: the first 7 channels of
  ``mixed_6/conv`` (= ``Mixed_6d.branch1x1`` after ReLU, 17×17) flattened in NHWC order → 2023 dims, the sFID
  features of ADM's evaluator. Weights: ``feature_extractor_weights_path`` or ``$GRAFTBENCH_INCEPTION_WEIGHTS``
  (torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``); never downloaded.

Both registered names also work through the plain torch-fidelity API::

    torch_fidelity.calculate_metrics(input1=ds, input2=ds_ref, feature_extractor="graftbench-digits",
                                     feature_extractor_weights_path=str(classifier_dir(preset)), fid=True, ...)

Each extractor class also has ``clean_features`` (float images in 0..255, ``[N, 3, H, W]`` → pooled features), the
callable handed to clean-fid as ``custom_feat_extractor``; ``ExtractorSpec.clean_resize`` is the resize it goes with.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
import torch_fidelity
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from graft_core.metrics.classifier import classifier_dir, load_classifier_dir
from graft_core.presets import Preset
from graft_core.runtime.cache import sha256_file
from graft_core.errors import MissingWeightsError

INCEPTION_WEIGHTS_ENV = "GRAFTBENCH_INCEPTION_WEIGHTS"
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
ADM_SPATIAL_CHANNELS = 7  # ADM evaluator: mixed_6/conv:0[..., :7]


class InceptionWeightsMissingError(MissingWeightsError):
    """The Inception-v3 weights file for the paper metrics is not on disk (these machines cannot download it)."""


# ----------------------------------------------------------------------------------------------------------------
# torch-fidelity extractors
# ----------------------------------------------------------------------------------------------------------------


def _check_uint8(x: torch.Tensor) -> None:
    if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
        raise TypeError(f"expected uint8 images [N, 3, H, W], got {getattr(x, 'dtype', type(x))} "
                        f"{tuple(getattr(x, 'shape', ()))}")


class DigitsFeatureExtractor(torch_fidelity.FeatureExtractorBase):
    """The digit CNN as a torch-fidelity extractor; grayscale digits arrive repeated to 3 channels (channel 0 used)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, list(features_list))
        if feature_extractor_weights_path is None:
            raise MissingWeightsError("the 'graftbench-digits' extractor needs feature_extractor_weights_path= "
                                      "(a classifier folder, see graft_core.metrics.classifier.classifier_dir)")
        self.net = load_classifier_dir(Path(feature_extractor_weights_path))

    @staticmethod
    def get_provided_features_list():
        return "pool", "logits", "spatial"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 16, 16, dtype=torch.uint8)

    def forward(self, x):
        _check_uint8(x)
        if x.shape[-1] != self.net.resolution or x.shape[-2] != self.net.resolution:
            raise ValueError(f"the digit classifier takes {self.net.resolution}×{self.net.resolution} images, "
                             f"got {tuple(x.shape[-2:])}")
        feats = self.net.features(x[:, :1].float() / 127.5 - 1)
        return tuple(feats[k].float() for k in self.features_list)

    def clean_features(self, x: torch.Tensor) -> torch.Tensor:
        """clean-fid entry: float ``[N, 3, H, W]`` in 0..255 → pooled features. The CNN is defined on 8-bit images,
        so the floats (``ToTensor()*255`` of uint8, off by ~1e-5) are rounded back to uint8 first."""
        x = x.round().clamp(0, 255).to(torch.uint8)
        return self.net.features(x[:, :1].float() / 127.5 - 1)["pool"]


class InceptionFeatureExtractor(FeatureExtractorInceptionV3):
    """torch-fidelity's ``inception-v3-compat`` plus ADM's ``spatial`` (sFID) features; refuses to download."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        path = resolve_inception_weights(feature_extractor_weights_path)
        features_list = list(features_list)
        # The parent computes its features in one pass and stops after the last one asked for; "768" (after
        # Mixed_6e) is the cheapest one that makes it run through Mixed_6d when only "spatial" is wanted.
        self._parent_features = [f for f in features_list if f != "spatial"] or ["768"]
        super().__init__(name, features_list, feature_extractor_weights_path=str(path), **kwargs)

    @staticmethod
    def get_provided_features_list():
        return FeatureExtractorInceptionV3.get_provided_features_list() + ("spatial",)

    def forward(self, x):
        _check_uint8(x)
        captured = {}
        want_spatial = "spatial" in self.features_list
        hook = (self.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: captured.__setitem__("s", o))
                if want_spatial else None)
        requested, self.features_list = self.features_list, self._parent_features
        try:
            out = dict(zip(self._parent_features, super().forward(x), strict=True))
        finally:
            self.features_list = requested
            if hook is not None:
                hook.remove()
        if want_spatial:
            s = captured["s"][:, :ADM_SPATIAL_CHANNELS]  # [N, 7, 17, 17], ReLU output as TF's mixed_6/conv:0
            out["spatial"] = s.permute(0, 2, 3, 1).flatten(1).float()
        return tuple(out[k] for k in requested)

    def clean_features(self, x: torch.Tensor) -> torch.Tensor:
        """clean-fid entry: float ``[N, 3, 299, 299]`` in 0..255 (already resized by clean-fid's PIL bicubic, not
        re-quantised) → pool_3 features, i.e. the torch-fidelity forward minus its uint8 check and TF-1 resize."""
        if x.shape[-2:] != (self.INPUT_IMAGE_SIZE, self.INPUT_IMAGE_SIZE):
            raise ValueError(f"clean-fid path expects 299×299 inputs (mode='clean'), got {tuple(x.shape[-2:])}")
        x = (x.to(self.feature_extractor_internal_dtype) - 128) / 128
        for layer in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                      "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                      "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool"):
            x = getattr(self, layer)(x)
        return torch.flatten(x, 1).float()


def resolve_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception-v3 weights file: ``path``, else ``$GRAFTBENCH_INCEPTION_WEIGHTS``; fail fast if absent."""
    given = path if path is not None else os.environ.get(INCEPTION_WEIGHTS_ENV)
    if given and Path(given).is_file():
        return Path(given)
    where = f"{given!r} does not exist" if given else "no path given"
    raise InceptionWeightsMissingError(
        f"Inception-v3 weights not found ({where}): download {INCEPTION_WEIGHTS_FILE} from "
        f"https://github.com/toshas/torch-fidelity/releases/tag/v0.2.0 on a machine with internet, copy it here and "
        f"set {INCEPTION_WEIGHTS_ENV}=/path/to/{INCEPTION_WEIGHTS_FILE} (or pass weights=...)")


# ----------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractorSpec:
    """How the metrics use one extractor.

    ``layers`` maps our feature roles (``pool``: FID/KID/PRC, ``logits``: IS/class accuracy, ``spatial``: sFID) to
    the extractor's torch-fidelity feature names. ``weights(preset, given)`` resolves the weights path (raising
    ``MissingWeightsError``); ``is_classifier`` says the logits index the data's own classes (class accuracy is
    meaningful); ``clean_resize`` is the clean-fid resize: ``None`` = native resolution, ``"clean"`` = clean-fid's
    PIL-bicubic resize to 299 (the clean-fid protocol for Inception).
    """

    name: str
    fidelity_name: str
    cls: type
    layers: dict[str, str]
    weights: Callable[[Preset, str | None], Path]
    is_classifier: bool
    clean_resize: str | None
    description: str = field(default="", compare=False)


EXTRACTORS: dict[str, ExtractorSpec] = {}


def register_extractor(spec: ExtractorSpec) -> ExtractorSpec:
    if spec.name in EXTRACTORS:
        raise ValueError(f"extractor {spec.name!r} registered twice")
    EXTRACTORS[spec.name] = spec
    if spec.fidelity_name not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(spec.fidelity_name, spec.cls)
    return spec


def get_extractor(name: str) -> ExtractorSpec:
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; choose one of: {', '.join(sorted(EXTRACTORS))}") from None


def _digits_weights(preset: Preset, given: str | None) -> Path:
    return Path(given) if given is not None else classifier_dir(preset)


def _inception_weights(preset: Preset, given: str | None) -> Path:
    return resolve_inception_weights(given)


register_extractor(ExtractorSpec(
    name="digits", fidelity_name="graftbench-digits", cls=DigitsFeatureExtractor,
    layers={"pool": "pool", "logits": "logits", "spatial": "spatial"}, weights=_digits_weights,
    is_classifier=True, clean_resize=None,
    description="digit CNN trained on the digits train split (tiny/micro presets)"))
register_extractor(ExtractorSpec(
    name="inception", fidelity_name="graftbench-inception-v3", cls=InceptionFeatureExtractor,
    layers={"pool": "2048", "logits": "logits_unbiased", "spatial": "spatial"}, weights=_inception_weights,
    is_classifier=False, clean_resize="clean",
    description="Inception-v3 (TF 2015-12-05 weights, torch-fidelity port) as in the ADM evaluator (paper preset)"))


@lru_cache(maxsize=4)
def build_extractor(name: str, weights_path: str, device: str = "cpu") -> torch_fidelity.FeatureExtractorBase:
    """An extractor instance with all of its roles' features, through torch-fidelity's own factory."""
    from torch_fidelity.utils import create_feature_extractor

    spec = get_extractor(name)
    return create_feature_extractor(spec.fidelity_name, list(spec.layers.values()), cuda=device == "cuda",
                                    feature_extractor_weights_path=weights_path, verbose=False)


@lru_cache(maxsize=16)
def _weights_digest(path: str, mtime_ns: int, size: int) -> str:
    p = Path(path)
    if p.is_dir():  # a classifier folder: its meta records the weights' sha256 (checked on load)
        from graft_core.metrics.classifier import read_meta

        return read_meta(p)["sha256"]
    return sha256_file(p)


def weights_digest(path: Path) -> str:
    """Content identity of an extractor's weights (keys the reference-feature cache)."""
    st = Path(path).stat()
    return _weights_digest(str(path), st.st_mtime_ns, st.st_size)

