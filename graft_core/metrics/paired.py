"""Paired bootstrap of FID differences between evaluations that share their samples' seeds, labels and noise.

Why paired: every row of a table is sampled with the same seeds, labels and initial noise, so its FID and another
row's FID move together when the generated set is resampled. Resampling the sample *indices* once per draw and
recomputing both FIDs on the same indices (the reference statistics fixed) gives the spread of the *difference*,
which is much smaller than the two rows' unpaired spreads added up. No library computes this (torch-fidelity,
clean-fid and ADM's evaluator report point estimates), so it is written here.

Each evaluation keeps one vector of per-draw FIDs over shared index draws (``bootstrap_indices``: the draws depend
only on ``(N, draws, seed)``, so two rows with the same ``N`` resample the same indices); a paired difference is then
a subtraction of two stored vectors (``paired_difference``), cheap enough for summary time. Two estimators fill the
vector, named in the evaluation's ``pairing`` record so that only like is compared with like:

* ``exact`` (feature spaces up to ``EXACT_MAX_DIM``, the tiny preset's 128-dim digit features): the Fréchet distance
  recomputed on every resample (``frechet.frechet_distance``, one matrix square root per draw);
* ``linearised`` (Inception's 2,048 dimensions, where 200 square roots cost ~10 min per evaluation): the first-order
  (delta-method / influence-function) expansion of FID around the full generated set, ``FID(resample) ≈ FID +
  mean_{j in resample} IF_j``, with the per-sample influence ``IF_i`` from one eigendecomposition
  (``frechet_influence``; its derivative is checked against scipy's ``sqrtm`` by finite differences in
  ``tests/test_paired.py``, and its spread against the exact bootstrap).

The interval covers the sampling noise of the generated set only: the reference set, the trained weights and hence
the training seed are held fixed, so it says nothing about training-seed variance.
"""
from __future__ import annotations

import hashlib

import numpy as np

from graft_core.metrics.frechet import (bootstrap_indices, frechet_distance,  # noqa: F401 (re-exported)
                                        resampled_frechet)

BOOTSTRAP_DRAWS = 200  # as compute.FID_BOOTSTRAP
EXACT_MAX_DIM = 512  # above it: the linearised estimator
CONFIDENCE = 0.95
FEATURES_FILE = "features.npy"  # per-sample pool features of an evaluation, float32 [N, D]
BOOTSTRAP_FILE = "fid_bootstrap.npy"  # per-draw FIDs over bootstrap_indices(N, draws, seed), float64 [draws]


def _sym_sqrt(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_influence(features: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                      rtol: float = 1e-10) -> tuple[float, np.ndarray]:
    """FID of ``features`` and each sample's influence on it (the derivative of FID along the weight of sample i).

    With ``c_i = x_i − μ``, ``k = N/(N−1)`` (the covariance is ``np.cov``'s, ``k`` × the weighted second moment),
    ``R = Σ2^½`` and ``M = R Σ R = U Λ Uᵀ``: ``dμ = c_i``, ``dΣ = k c_i c_iᵀ − Σ`` and ``d tr M^½ = ½ tr(M^-½ R dΣ R)``,
    so ``IF_i = 2 (μ − μ2)·c_i + k |c_i|² − tr Σ − 2 (½ k |Λ^-¼ Uᵀ R c_i|² − ½ tr Λ^½)``.
    Directions with ``λ ≈ 0`` (``λ ≤ rtol·λ_max``) are dropped: no resample leaves the span of the generated set, so
    their term is 0 for every bootstrap draw. Costs one eigendecomposition of a D×D matrix and O(N·D²).
    """
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    k = n / (n - 1)
    mu, mu2 = x.mean(axis=0), np.asarray(mu2, dtype=np.float64)
    c = x - mu
    sigma = c.T @ c / (n - 1)
    root2 = _sym_sqrt(np.asarray(sigma2, dtype=np.float64))
    lam, u = np.linalg.eigh(root2 @ sigma @ root2)
    keep = lam > rtol * max(lam[-1], np.finfo(np.float64).tiny)
    proj = (c @ root2 @ u[:, keep]) * lam[keep] ** -0.25
    tr_sqrt = float(np.sum(np.sqrt(lam[keep])))
    influence = (2 * c @ (mu - mu2) + k * np.einsum("nd,nd->n", c, c) - np.trace(sigma)
                 - (k * np.einsum("nk,nk->n", proj, proj) - tr_sqrt))
    fid = float((mu - mu2) @ (mu - mu2) + np.trace(sigma) + np.trace(sigma2) - 2 * tr_sqrt)
    return fid, influence


def linearised_resampled_frechet(features: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                                 indices: np.ndarray) -> np.ndarray:
    """``FID + mean(IF[indices[b]])`` per draw: the first-order bootstrap of ``frechet_influence``."""
    fid, influence = frechet_influence(features, mu2, sigma2)
    return fid + influence[indices].mean(axis=1)


ESTIMATORS = {"exact": resampled_frechet, "linearised": linearised_resampled_frechet}


def estimator_for(dim: int) -> str:
    return "exact" if dim <= EXACT_MAX_DIM else "linearised"


def fid_bootstrap(features: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, draws: int = BOOTSTRAP_DRAWS,
                  seed: int = 2020, method: str | None = None) -> tuple[np.ndarray, dict]:
    """Per-draw FIDs over the shared index draws and the record that says how they were made."""
    x = np.asarray(features)
    method = method or estimator_for(x.shape[1])
    values = ESTIMATORS[method](x, mu2, sigma2, bootstrap_indices(len(x), draws, seed))
    return values, {"draws": int(draws), "seed": int(seed), "method": method}


def labels_digest(labels) -> str:
    """Short content hash of the conditioning labels (int64), so that pairing can check they are the same."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes()).hexdigest()[:16]


class NotPairedError(ValueError):
    """Two evaluations whose samples do not share seeds, labels, noise or bootstrap draws."""


def check_paired(a: dict, b: dict, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise ``NotPairedError`` (one line naming the first field that differs) unless the pairing records match."""
    if not a or not b:
        missing = names[0] if not a else names[1]
        raise NotPairedError(f"{missing}: no pairing record (evaluated before paired comparisons existed); "
                             f"rerun its eval step to compare it")
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise NotPairedError(f"{names[0]} vs {names[1]} are not paired: {key} differs "
                                 f"({a.get(key)!r} vs {b.get(key)!r}); a paired difference needs the same samples")


def paired_difference(fid_a: float, boot_a: np.ndarray, fid_b: float, boot_b: np.ndarray, *,
                      confidence: float = CONFIDENCE) -> dict:
    """``a − b`` with the spread of its paired bootstrap: ``diff`` (full sets), ``mean`` / ``std`` of the per-draw
    differences, and the interval ``diff + percentiles(d − mean d)`` (centred on the full-set difference: resampling
    with replacement biases each FID upward, a shift that mostly but not exactly cancels in the difference).
    ``excludes_zero``: the interval lies strictly on one side of 0. Identical evaluations give exactly 0 and 0."""
    boot_a, boot_b = np.asarray(boot_a, dtype=np.float64), np.asarray(boot_b, dtype=np.float64)
    if boot_a.shape != boot_b.shape:
        raise NotPairedError(f"bootstrap vectors differ in length: {boot_a.shape} vs {boot_b.shape}")
    d = boot_a - boot_b
    diff = float(fid_a) - float(fid_b)
    tail = 100 * (1 - confidence) / 2
    lo, hi = (diff + np.percentile(d - d.mean(), [tail, 100 - tail])) if d.any() else (diff, diff)
    return {"diff": diff, "mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
            "lo": float(lo), "hi": float(hi), "confidence": confidence,
            "excludes_zero": bool(lo > 0 or hi < 0)}


def save_per_sample(out_dir, per_sample: dict) -> list[str]:
    """Write an evaluation's ``features`` and ``fid_bootstrap`` next to its metrics (``FEATURES_FILE``,
    ``BOOTSTRAP_FILE``; atomic, so a killed job leaves no half file); returns the file names."""
    import io
    from pathlib import Path

    from graft_core.runtime.paths import atomic_write_bytes

    written = []
    for key, name in (("features", FEATURES_FILE), ("fid_bootstrap", BOOTSTRAP_FILE)):
        if key in per_sample:
            buf = io.BytesIO()
            np.save(buf, per_sample[key])
            atomic_write_bytes(Path(out_dir) / name, buf.getvalue())
            written.append(name)
    return written
