"""The Fréchet distance used for sFID (no library computes sFID), written once, following ADM's evaluator.

``FD = |μ1 − μ2|² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½``, with ADM's / pytorch-fid's regularisation: when the product is
near-singular (dead ReLU features give zero rows in Σ — common in the digit CNN's and Inception's spatial maps — and
so does N < D), ``eps·I`` is added to both covariances inside the square root (the traces keep the plain Σ).

How ``tr (Σ1 Σ2)^½`` is computed differs from ADM, not its value: ADM calls ``scipy.linalg.sqrtm`` on the
non-symmetric product; here it is ``Σ √λ`` over the eigenvalues of the symmetric PSD matrix ``Σ1^½ Σ2 Σ1^½``, which
has the same eigenvalues as ``Σ1 Σ2`` (``AB`` and ``BA`` share their spectrum). Two symmetric eigendecompositions
are real-valued by construction and much faster than scipy's Schur square root (seconds instead of tens of seconds
at D = 2023 on 2 cores). ``tests/test_metrics.py`` checks it against the sqrtm formula.
"""
from __future__ import annotations

import numpy as np

SINGULAR_RTOL = 1e-10  # λ_min ≤ SINGULAR_RTOL·λ_max counts as near-singular


def statistics(features: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and covariance of ``[N, D]`` features (``np.cov``, rows = samples), as ADM / torch-fidelity / clean-fid."""
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need [N >= 2, D] features, got shape {features.shape}")
    return {"mu": np.mean(features, axis=0), "sigma": np.cov(features, rowvar=False)}


def _near_singular(w: np.ndarray) -> bool:
    return w[0] <= SINGULAR_RTOL * max(w[-1], np.finfo(np.float64).tiny)


def _trace_sqrt_product(w1: np.ndarray, v1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr (Σ1 Σ2)^½`` with ``Σ1 = v1·diag(w1)·v1ᵀ`` (negative round-off eigenvalues clipped to 0)."""
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    lam = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    return float(np.sum(np.sqrt(np.clip(lam, 0, None))))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between two Gaussians; ``eps·I`` regularises a near-singular product (ADM's ``eps``)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    if not (np.isfinite(sigma1).all() and np.isfinite(sigma2).all()):
        raise ValueError("Fréchet distance: non-finite covariance (NaN/inf features?)")
    diff = mu1 - mu2
    w1, v1 = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    s2 = (sigma2 + sigma2.T) / 2
    if _near_singular(w1) or _near_singular(np.linalg.eigvalsh(s2)):
        w1, s2 = w1 + eps, s2 + np.eye(len(s2)) * eps  # eig(Σ1 + εI) = eig(Σ1) + ε, same eigenvectors
    tr_covmean = _trace_sqrt_product(w1, v1, s2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def bootstrap_indices(n: int, draws: int, seed: int) -> np.ndarray:
    """``[draws, n]`` resampled indices; the same for every evaluation with the same ``n`` (draw ``b`` = the
    ``b``-th ``rng.integers(0, n, n)`` of ``default_rng(seed)``, the sequence ``bootstrap_frechet`` uses;
    ``graft_core.metrics.paired`` pairs evaluations on it)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, n) for _ in range(draws)])


def resampled_frechet(features: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, indices: np.ndarray, *,
                      eps: float = 1e-6) -> np.ndarray:
    """The exact FID of every resample ``features[indices[b]]`` against the fixed reference ``(mu2, sigma2)``."""
    x = np.asarray(features, dtype=np.float64)
    values = np.empty(len(indices))
    for b, idx in enumerate(indices):
        s = x[idx]
        mu = s.mean(axis=0)
        centred = s - mu
        values[b] = frechet_distance(mu, centred.T @ centred / (len(idx) - 1), mu2, sigma2, eps=eps)
    return values


def bootstrap_frechet(features: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, num_resamples: int = 200,
                      seed: int = 0, eps: float = 1e-6) -> dict[str, float]:
    """Spread of the Fréchet distance over the generated set: ``num_resamples`` resamples of ``features`` (rows, with
    replacement, fixed ``seed``) against the fixed reference ``(mu2, sigma2)``. Returns ``fid_std`` (standard
    deviation of the resampled distances) and the 2.5 / 97.5 % percentiles ``fid_lo`` / ``fid_hi``. Sampling noise
    of the generated set only (the reference statistics and the model are held fixed)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need [N >= 2, D] features, got shape {x.shape}")
    values = resampled_frechet(x, mu2, sigma2, bootstrap_indices(len(x), num_resamples, seed), eps=eps)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return {"fid_std": float(values.std(ddof=1)), "fid_lo": float(lo), "fid_hi": float(hi)}
