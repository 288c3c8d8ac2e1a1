"""ADM-compatible evaluation of a sample ``.npz`` against a reference batch ``.npz`` (IS, FID, sFID, precision, recall).

Mirrors ``guided-diffusion/evaluations/evaluator.py`` (ADM) with our extractors (``graft_core.metrics``; paper preset:
``inception`` = torch-fidelity's TF-compatible Inception-v3 + ADM's 2023-dim ``mixed_6/conv[..., :7]`` spatial
features) and the metric math of ``graft_core.metrics.compute`` (FID, sFID, precision/recall with k = 3).

* Images are streamed from ``arr_0`` in batches (ADM's reader does the same), so a 50k × 256² batch (9.8 GB) is never
  held in memory; features run on the GPU when there is one.
* Reference statistics are **computed from the reference images** with our extractor and cached once next to the
  reference file (``<ref>.graftbench-<key>.npz``, key = hash of (file sha256, extractor, extractor weights sha256);
  falls back to ``$GRAFTBENCH_CACHE/adm_eval`` when that folder is read-only). The sample batch is cached the same way.
* ADM's reference batches also store whole-dataset statistics (``mu, sigma, mu_s, sigma_s``), which ADM's evaluator
  uses for FID/sFID instead of the 10k images' own statistics. When they are present (and the extractor is
  ``inception``) we report FID/sFID against them as well: ``fid_adm_stats`` / ``sfid_adm_stats`` (the numbers the
  paper's tables come from); see docs/data-preparation.md for how the two differ.
* IS follows ADM exactly: softmax of the bias-free logits, consecutive splits of 5,000 samples (10 at 50k), the
  mean over splits (``graft_core.metrics``' IS shuffles first; here the order of the ``.npz`` is kept as ADM does).

CLI (ADM's argument order)::

    python -m graft_core.evaluation.adm_eval VIRTUAL_imagenet256_labeled.npz samples.npz [--extractor inception] [--json OUT]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import zipfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from graft_core.config import stable_hash
from graft_core.errors import BatchFormatError, MissingWeightsError
from graft_core.runtime.paths import atomic_write_bytes, cache_root

CACHE_VERSION = 1
IS_SPLIT_SIZE = 5000  # ADM: compute_inception_score(activations, split_size=5000)
ADM_STATS = ("mu", "sigma", "mu_s", "sigma_s")


# --------------------------------------------------------------------------------------------------------------------
# Reading ADM batches
# --------------------------------------------------------------------------------------------------------------------


@contextmanager
def _open_member(path: Path, key: str, what: str):
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise BatchFormatError(f"{what} {path} is not a readable .npz ({type(err).__name__})") from None
    with zf:
        if f"{key}.npy" not in zf.namelist():
            keys = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
            raise BatchFormatError(f"{what} {path} has no {key} (keys: {', '.join(keys) or 'none'}); an ADM batch "
                                   f"stores its images as arr_0 uint8 [N, H, W, 3]")
        with zf.open(f"{key}.npy") as f:
            yield f


def _header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    return (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
            else np.lib.format.read_array_header_2_0(f))


def batch_info(path: Path, what: str = "sample batch") -> dict:
    """Shape of ``arr_0`` (checked without loading it) and which ADM statistics the file stores."""
    path = Path(path)
    with _open_member(path, "arr_0", what) as f:
        shape, fortran, dtype = _header(f)
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2] or fortran:
        raise BatchFormatError(f"{what} {path}: arr_0 is {dtype} {list(shape)}; expected uint8 [N, H, W, 3] "
                               f"(square images, 0..255, C order)")
    if shape[0] < 2:
        raise BatchFormatError(f"{what} {path}: arr_0 holds {shape[0]} image(s); statistics need at least 2")
    with zipfile.ZipFile(path) as zf:
        keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    stored = [k for k in ADM_STATS if k in keys]
    if stored and len(stored) != len(ADM_STATS):
        raise BatchFormatError(f"{what} {path} stores only {stored} of the ADM statistics {list(ADM_STATS)}")
    return {"num_images": shape[0], "resolution": shape[1], "has_adm_stats": bool(stored)}


def iter_images(path: Path, batch_size: int = 64, what: str = "sample batch") -> Iterator[np.ndarray]:
    """uint8 ``[b, H, W, 3]`` batches of ``arr_0``, read sequentially from the zip member."""
    info = batch_info(path, what)
    with _open_member(Path(path), "arr_0", what) as f:
        shape, _, _ = _header(f)
        per_image = int(np.prod(shape[1:]))
        for start in range(0, info["num_images"], batch_size):
            n = min(batch_size, info["num_images"] - start)
            data = f.read(n * per_image)
            if len(data) != n * per_image:
                raise BatchFormatError(f"{what} {path}: arr_0 is truncated at image {start}")
            yield np.frombuffer(data, dtype=np.uint8).reshape(n, *shape[1:])


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


# --------------------------------------------------------------------------------------------------------------------
# Features (streamed, cached per file)
# --------------------------------------------------------------------------------------------------------------------


def _resolve(extractor: str, weights: str | None, preset):
    from graft_core.metrics.extractors import get_extractor

    spec = get_extractor(extractor)
    return spec, Path(spec.weights(preset, weights))


def _device(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stream_features(path: Path, spec, weights: Path, *, device=None, batch_size: int = 64, what: str = "sample batch",
                    progress: bool = False) -> dict[str, np.ndarray]:
    """``pool``, ``logits`` and ``spatial`` features of every image of ``arr_0`` (float32 ``[N, D]`` each)."""
    from torch_fidelity.utils import create_feature_extractor
    from tqdm.auto import tqdm

    device = _device(device)
    roles = ("pool", "logits", "spatial")
    fe = create_feature_extractor(spec.fidelity_name, [spec.layers[r] for r in roles], cuda=False, verbose=False,
                                  feature_extractor_weights_path=str(weights)).to(device)
    out = {r: [] for r in roles}
    total = batch_info(path, what)["num_images"]
    with torch.inference_mode():
        for batch in tqdm(iter_images(path, batch_size, what), total=-(-total // batch_size), disable=not progress,
                          desc=f"features {Path(path).name}", mininterval=10):
            x = torch.from_numpy(batch.copy()).permute(0, 3, 1, 2).contiguous().to(device)
            for role, feat in zip(roles, fe(x)):
                out[role].append(feat.float().cpu().numpy())
    return {r: np.concatenate(v) for r, v in out.items()}


def cache_path(path: Path, key: str, cache_dir: Path | None) -> Path:
    """``<file>.graftbench-<key>.npz`` next to the file, else in ``cache_dir`` / ``$GRAFTBENCH_CACHE/adm_eval``."""
    path = Path(path)
    name = f"{path.name}.graftbench-{key}.npz"
    if cache_dir is not None:
        return Path(cache_dir) / name
    return path.with_name(name) if os.access(path.parent, os.W_OK) else cache_root() / "adm_eval" / name


def batch_features(path: Path, spec, weights: Path, *, cache_dir: Path | None = None, device=None,
                   batch_size: int = 64, what: str = "sample batch", progress: bool = False):
    """``FeatureSet`` (``pool``/``logits`` features, ``pool``/``spatial`` statistics) of one batch, cached on disk."""
    from graft_core.metrics.extractors import weights_digest
    from graft_core.metrics.features import FeatureSet
    from graft_core.metrics.frechet import statistics

    info = batch_info(path, what)
    key = stable_hash({"v": CACHE_VERSION, "sha256": file_sha256(path), "extractor": spec.name,
                       "weights": weights_digest(weights)})
    cached = cache_path(path, key, cache_dir)
    if cached.exists():
        with np.load(cached) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        feats = stream_features(path, spec, weights, device=device, batch_size=batch_size, what=what,
                                progress=progress)
        arrays = {"pool": feats["pool"], "logits": feats["logits"]}
        for role in ("pool", "spatial"):
            s = statistics(feats[role])
            arrays[f"{role}_mu"], arrays[f"{role}_sigma"] = s["mu"], s["sigma"]
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(cached, buf.getvalue())
    fs = FeatureSet({"pool": torch.from_numpy(arrays["pool"]), "logits": torch.from_numpy(arrays["logits"])},
                    {r: {"mu": arrays[f"{r}_mu"], "sigma": arrays[f"{r}_sigma"]} for r in ("pool", "spatial")},
                    info["num_images"])
    return fs, {"key": key, "cache": str(cached), **info}


def prepare_reference(npz: Path, *, extractor: str = "inception", weights: str | None = None, preset=None,
                      cache_dir: Path | None = None, device=None, batch_size: int = 64) -> dict:
    """Check a reference batch and cache its features (``python -m benchmark.prepare reference``)."""
    spec, weights_path = _resolve(extractor, weights, preset)
    batch_info(npz, "reference batch")  # shape/keys errors before any work
    _, meta = batch_features(npz, spec, weights_path, cache_dir=cache_dir, device=device, batch_size=batch_size,
                             what="reference batch", progress=True)
    return {"reference": str(npz), "sha256": file_sha256(npz), "extractor": extractor, **meta}


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------


def adm_inception_score(logits: np.ndarray, split_size: int = IS_SPLIT_SIZE) -> float:
    """ADM's IS: softmax, consecutive splits of ``split_size`` (the last may be shorter), mean of exp(E[KL])."""
    logits = np.asarray(logits, dtype=np.float64)
    preds = np.exp(logits - logits.max(1, keepdims=True))
    preds /= preds.sum(1, keepdims=True)
    scores = []
    for start in range(0, len(preds), split_size):
        part = preds[start: start + split_size]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))


def evaluate_npz(sample_npz: Path, reference_npz: Path, *, extractor: str = "inception", weights: str | None = None,
                 preset=None, cache_dir: Path | None = None, device=None, batch_size: int = 64,
                 adm_stats: bool | None = None, progress: bool = False, per_sample: dict | None = None) -> dict:
    """IS, FID, sFID, precision, recall of ``sample_npz`` against ``reference_npz`` (both ADM batches).

    ``per_sample``: a dict to fill for paired comparisons (``metrics.paired``): the pool ``features`` and the
    per-draw FIDs (``fid_bootstrap``; linearised above 512 dimensions) against the statistics the reported ``fid``
    uses (the reference batch's stored ones under ``adm_stats``, else its images').

    ``adm_stats``: also report ``fid_adm_stats``/``sfid_adm_stats`` against the ``mu, sigma, mu_s, sigma_s`` stored in
    the reference (None → when present and the extractor is ``inception``, whose features they were made with).
    """
    from graft_core.metrics.compute import DEFAULT_OPTIONS, METRICS, MetricContext
    from graft_core.metrics.features import FeatureSet
    from graft_core.metrics.frechet import frechet_distance

    spec, weights_path = _resolve(extractor, weights, preset)
    ref_info = batch_info(reference_npz, "reference batch")
    batch_info(sample_npz, "sample batch")
    kw = dict(cache_dir=cache_dir, device=device, batch_size=batch_size, progress=progress)
    real, real_meta = batch_features(reference_npz, spec, weights_path, what="reference batch", **kw)
    fake, fake_meta = batch_features(sample_npz, spec, weights_path, what="sample batch", **kw)
    if adm_stats is None:
        adm_stats = ref_info["has_adm_stats"] and spec.name == "inception"
    # the draws go against the statistics of the reported FID: the reference images' here, the stored ones below
    ctx = MetricContext(spec, None, dict(DEFAULT_OPTIONS), per_sample if not adm_stats else None)
    out = {"is": adm_inception_score(fake["logits"].numpy())}
    for name in ("fid", "sfid"):
        out.update(METRICS[name].fn(fake, real, ctx))
    dev = _device(device)  # the k-NN distances (50k × 10k, 50k × 50k) are the slow part: on the GPU when there is one
    out.update(METRICS["prc"].fn(FeatureSet({"pool": fake["pool"].to(dev)}), FeatureSet({"pool": real["pool"].to(dev)}),
                                 ctx))
    if adm_stats:
        if not ref_info["has_adm_stats"]:
            raise BatchFormatError(f"reference batch {reference_npz} stores no ADM statistics {list(ADM_STATS)}")
        with np.load(reference_npz) as z:
            stored = {k: z[k] for k in ADM_STATS}
        for key, role, mu, sigma in (("fid_adm_stats", "pool", "mu", "sigma"),
                                     ("sfid_adm_stats", "spatial", "mu_s", "sigma_s")):
            ours = fake.frechet_stats(role)
            if stored[mu].shape != ours["mu"].shape:
                raise BatchFormatError(f"reference batch {reference_npz}: stored {mu} has shape {stored[mu].shape}, "
                                       f"the {spec.name} {role} features have {ours['mu'].shape}")
            out[key] = frechet_distance(ours["mu"], ours["sigma"], stored[mu], stored[sigma])
        if per_sample is not None:
            from graft_core.metrics.paired import fid_bootstrap

            x = fake["pool"].cpu().numpy()
            values, meta = fid_bootstrap(x, stored["mu"], stored["sigma"], seed=ctx.options["rng_seed"])
            per_sample.update(features=x.astype(np.float32), fid_bootstrap=values,
                              bootstrap={**meta, "against": "reference batch statistics (mu, sigma)"})
    out.update({"num_samples": fake_meta["num_images"], "num_reference": real_meta["num_images"],
                "sample_resolution": fake_meta["resolution"], "reference_resolution": real_meta["resolution"],
                "extractor": spec.name, "reference_sha256": file_sha256(reference_npz),
                "reference_key": real_meta["key"], "sample_key": fake_meta["key"],
                "is_split_size": IS_SPLIT_SIZE, "prc_neighborhood": ctx.options["prc_neighborhood"]})
    return out


def main(argv: list[str] | None = None) -> int:

    p = argparse.ArgumentParser(description="ADM-compatible IS/FID/sFID/precision/recall of a sample .npz")
    p.add_argument("ref_batch", type=Path, help="reference batch, e.g. VIRTUAL_imagenet256_labeled.npz")
    p.add_argument("sample_batch", type=Path, help="sample batch (arr_0 uint8 [N, H, W, 3])")
    p.add_argument("--extractor", default="inception")
    p.add_argument("--weights", help="extractor weights (default: $GRAFTBENCH_INCEPTION_WEIGHTS)")
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    try:
        res = evaluate_npz(args.sample_batch, args.ref_batch, extractor=args.extractor, weights=args.weights,
                           cache_dir=args.cache_dir, batch_size=args.batch_size, progress=True)
    except (BatchFormatError, MissingWeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for label, key in (("Inception Score", "is"), ("FID", "fid"), ("sFID", "sfid"), ("Precision", "precision"),
                       ("Recall", "recall"), ("FID (ADM stored stats)", "fid_adm_stats"),
                       ("sFID (ADM stored stats)", "sfid_adm_stats")):
        if key in res:
            print(f"{label}: {res[key]}")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(res, indent=2, sort_keys=True) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
