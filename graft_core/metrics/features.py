"""Features of an image set under one extractor, through torch-fidelity (and clean-fid), with a reference cache.

``FeatureSet`` holds the per-role features (``pool``, ``logits``, ``spatial``, ``clean``) and their Fréchet
statistics, computed once. ``reference_features`` memoises the real set in memory and on disk
(``cache_root()/metrics/reference/<key>/reference.npz``, key = extractor + weights sha256 + image content hash, an
artefact-cache entry: concurrent jobs extract it once), keeping only what the two-set metrics need (``pool`` features
for KID / precision-recall, the statistics for FID / sFID / clean FID), so that evaluating many rows against the same
reference extracts its features once.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import Dataset

from graft_core.runtime import cache
from graft_core.config import stable_hash
from graft_core.metrics.extractors import ExtractorSpec, build_extractor, weights_digest
from graft_core.metrics.frechet import statistics
from graft_core.runtime.paths import atomic_write_bytes, cache_root

REFERENCE_FILE = "reference.npz"

CACHE_VERSION = 1
FRECHET_ROLES = ("pool", "spatial", "clean")  # roles whose Fréchet statistics a reference keeps


class UInt8Images(Dataset):
    """uint8 ``[N, 3, H, W]`` tensors for torch-fidelity's loader."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def as_nchw_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` (C = 1 or 3; the ADM ``.npz`` layout) → uint8 ``[N, 3, H, W]`` (gray repeated)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise TypeError(f"expected uint8 images [N, H, W, 1|3], got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).contiguous()


@dataclass
class FeatureSet:
    """Features (role → ``[N, D]`` float32 tensor) of one image set and their Fréchet statistics (role → mu/sigma)."""

    features: dict[str, torch.Tensor]
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    num_images: int = 0

    def frechet_stats(self, role: str) -> dict[str, np.ndarray]:
        if role not in self.stats:
            if role not in self.features:
                raise KeyError(f"feature set has neither features nor statistics for {role!r}")
            self.stats[role] = statistics(self.features[role].numpy())
        return self.stats[role]

    def __getitem__(self, role: str) -> torch.Tensor:
        if role not in self.features:
            raise KeyError(f"feature set has no {role!r} features (a cached reference keeps only "
                           f"{sorted(self.features)})")
        return self.features[role]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def extract_features(images: np.ndarray, spec: ExtractorSpec, weights: Path, *, roles=("pool", "logits", "spatial"),
                     clean: bool = True, batch_size: int = 200, device: str | None = None) -> FeatureSet:
    """One pass of torch-fidelity's extraction loop over ``images`` (+ clean-fid's pipeline when ``clean``).

    Features come back on the CPU whatever ``device`` (default: CUDA when available) ran the extractor."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    device = device or default_device()
    x = as_nchw_uint8(images)
    fe = build_extractor(spec.name, str(weights), device)
    feats: dict[str, torch.Tensor] = {}
    if roles:
        out = get_featuresdict_from_dataset(UInt8Images(x), fe, batch_size, cuda=device == "cuda",
                                            save_cpu_ram=True, verbose=False)
        feats = {role: out[spec.layers[role]].float() for role in roles}
    if clean:
        feats["clean"] = torch.from_numpy(clean_features(x, spec, fe, batch_size=batch_size, device=device))
    return FeatureSet(feats, num_images=len(x))


def clean_features(x: torch.Tensor, spec: ExtractorSpec, fe, *, batch_size: int = 200,
                   device: str = "cpu") -> np.ndarray:
    """clean-fid's feature pipeline on in-memory images: per-image resize (``cleanfid.resize.build_resizer``, or none
    at native resolution), ``ToTensor`` scaling exactly as ``cleanfid.utils.ResizeDataset.__getitem__``, then
    ``cleanfid.fid.get_batch_features`` with the extractor's ``clean_features`` as the custom feature extractor.
    (clean-fid itself reads images only from folders or generators; ``clean_fid_folders`` is that official path.)"""
    from cleanfid.fid import get_batch_features
    from cleanfid.resize import build_resizer

    fn_resize = build_resizer(spec.clean_resize) if spec.clean_resize else (lambda a: a)
    to_tensor = torchvision.transforms.ToTensor()
    nhwc = x.permute(0, 2, 3, 1).numpy()
    out = []
    with torch.no_grad():
        for start in range(0, len(nhwc), batch_size):
            batch = []
            for img in nhwc[start:start + batch_size]:
                r = fn_resize(img)
                batch.append(to_tensor(np.array(r)) * 255 if r.dtype == np.uint8 else to_tensor(r))
            out.append(get_batch_features(torch.stack(batch), fe.clean_features, torch.device(device)))
    return np.concatenate(out).astype(np.float32)


class _LinalgWithSqrtmDisp:
    """``scipy.linalg`` as clean-fid 0.1.35 (its latest release) calls it: ``sqrtm(A, disp=False)`` returning
    ``(root, error estimate)``. scipy 1.18 removed ``disp``; this restores that call's result over the new
    ``sqrtm`` (the estimate is scipy's former formula, ‖X·X − A‖²_F / ‖A‖_F). Written here because no release of
    clean-fid handles it."""

    def __getattr__(self, name):
        from scipy import linalg

        return getattr(linalg, name)

    @staticmethod
    def sqrtm(a, disp=True):
        from scipy import linalg

        root = linalg.sqrtm(a)
        if disp:
            return root
        return root, linalg.norm(root @ root - a, "fro") ** 2 / linalg.norm(a, "fro")


@contextlib.contextmanager
def quiet_clean_fid():
    """Silence clean-fid's scipy warnings (deprecated ``sqrtm(disp=False)``, singular-matrix ``LinAlgWarning``: it
    handles singularity itself by adding eps·I) and re-emit its printed "singular product" notice as a warning. With
    scipy >= 1.18 (no ``disp``) clean-fid's module sees ``_LinalgWithSqrtmDisp`` for the duration."""
    import inspect

    from cleanfid import fid as cfid
    from scipy import linalg

    shim = "disp" not in inspect.signature(linalg.sqrtm).parameters
    if shim:
        cfid.linalg = _LinalgWithSqrtmDisp()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if shim:
            cfid.linalg = linalg
    if printed.getvalue().strip():
        warnings.warn(f"clean-fid: {printed.getvalue().strip()}", RuntimeWarning, stacklevel=3)


def clean_fid_folders(fdir1: str | Path, fdir2: str | Path, spec: ExtractorSpec, weights: Path,
                      batch_size: int = 200, device: str | None = None) -> float:
    """FID between two image folders through the official ``cleanfid.fid.compute_fid`` with our extractor passed as
    ``custom_feat_extractor`` (no workers, no DataParallel; native-resolution extractors get an identity
    ``custom_fn_resize``)."""
    from cleanfid import fid as cfid

    device = device or default_device()
    fe = build_extractor(spec.name, str(weights), device)
    resize = None if spec.clean_resize else (lambda a: a)
    with quiet_clean_fid():
        return float(cfid.compute_fid(str(fdir1), str(fdir2), mode="clean", custom_feat_extractor=fe.clean_features,
                                      custom_fn_resize=resize, device=torch.device(device), num_workers=0,
                                      batch_size=batch_size, use_dataparallel=False, verbose=False))


# ----------------------------------------------------------------------------------------------------------------
# Reference cache
# ----------------------------------------------------------------------------------------------------------------

_MEMORY: dict[str, FeatureSet] = {}  # insertion-ordered; the oldest entry goes when more than MEMORY_ENTRIES
MEMORY_ENTRIES = 4


def images_digest(images: np.ndarray) -> str:
    images = np.ascontiguousarray(images)
    h = hashlib.sha256(f"{images.dtype}{images.shape}".encode())
    h.update(memoryview(images).cast("B"))
    return h.hexdigest()


def reference_key(images: np.ndarray, spec: ExtractorSpec, weights: Path) -> str:
    return stable_hash({"v": CACHE_VERSION, "extractor": spec.name, "weights": weights_digest(weights),
                        "images": images_digest(images)})


def reference_path(key: str) -> Path:
    """The ``.npz`` of a reference entry (inside its cache folder ``<key>/``)."""
    return cache_root() / "metrics" / "reference" / key / REFERENCE_FILE


def reference_features(images: np.ndarray, spec: ExtractorSpec, weights: Path, *, disk: bool = True,
                       batch_size: int = 200, device: str | None = None) -> FeatureSet:
    """The real set's ``pool`` features + Fréchet statistics, from memory, disk, or computed (then stored)."""
    key = reference_key(images, spec, weights)
    if key in _MEMORY:
        return _MEMORY[key]
    def compute() -> FeatureSet:
        full = extract_features(images, spec, weights, roles=("pool", "spatial"), clean=True, batch_size=batch_size,
                                device=device)
        return FeatureSet({"pool": full["pool"]}, {r: full.frechet_stats(r) for r in FRECHET_ROLES}, full.num_images)

    built: list[FeatureSet] = []

    def build(tmp: Path) -> None:
        fs = compute()
        arrays = {"pool": fs["pool"].numpy(), "num_images": np.array(fs.num_images)}
        for r in FRECHET_ROLES:
            arrays[f"{r}_mu"], arrays[f"{r}_sigma"] = fs.stats[r]["mu"], fs.stats[r]["sigma"]
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(tmp / REFERENCE_FILE, buf.getvalue())
        built.append(fs)

    if not disk:
        fs = compute()
    else:
        folder = cache.get_or_build(reference_path(key).parent, build, marker=REFERENCE_FILE)
        if built:
            fs = built[0]
        else:  # stored earlier or by a concurrent job
            cache.verify(folder, [REFERENCE_FILE])
            with np.load(folder / REFERENCE_FILE) as z:
                fs = FeatureSet({"pool": torch.from_numpy(z["pool"])},
                                {r: {"mu": z[f"{r}_mu"], "sigma": z[f"{r}_sigma"]} for r in FRECHET_ROLES},
                                int(z["num_images"]))
    _MEMORY[key] = fs
    while len(_MEMORY) > MEMORY_ENTRIES:
        del _MEMORY[next(iter(_MEMORY))]
    return fs


def clear_memory_cache() -> None:
    _MEMORY.clear()
