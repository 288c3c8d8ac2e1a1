"""The Fréchet distance used for sFID (no library computes sFID), written once, as ADM's evaluator does it.

``FD = |μ1 − μ2|² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½``. As in ADM / pytorch-fid / TTUR, when the product is
near-singular (dead ReLU features give zero rows in Σ — common in the digit CNN's and Inception's spatial maps),
``eps·I`` is added to both covariances before the square root. Difference from ADM: "near-singular" is detected by
the square root's relative residual ``‖X·X − A‖_F / ‖A‖_F`` as well as by non-finite entries (scipy ≥ 1.16 no longer
returns an error estimate, and a singular product often gives a finite but wrong root).
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

RESIDUAL_TOL = 1e-3


def statistics(features: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and covariance of ``[N, D]`` features (``np.cov``, rows = samples), as ADM / torch-fidelity / clean-fid."""
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need [N >= 2, D] features, got shape {features.shape}")
    return {"mu": np.mean(features, axis=0), "sigma": np.cov(features, rowvar=False)}


def _sqrtm(a: np.ndarray) -> tuple[np.ndarray, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Matrix is singular and may not have a square root": handled by the caller
        root = linalg.sqrtm(a)
    if not np.isfinite(root).all():
        return root, float("inf")
    scale = max(np.linalg.norm(a, "fro"), np.finfo(np.float64).tiny)
    return root, float(np.linalg.norm(root @ root - a, "fro") / scale)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between two Gaussians, regularised with ``eps·I`` when ``Σ1·Σ2`` is near-singular."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean, residual = _sqrtm(sigma1 @ sigma2)
    if residual > RESIDUAL_TOL:
        offset = np.eye(sigma1.shape[0]) * eps
        covmean, residual = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if residual > RESIDUAL_TOL:
            warnings.warn(f"Fréchet distance: sqrtm residual {residual:.1e} even after adding {eps}·I; "
                          f"the value may be inaccurate", RuntimeWarning, stacklevel=2)
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_exact(mu1, sigma1, mu2, sigma2) -> float:
    """Reference value without regularisation: ``tr (Σ1 Σ2)^½ = Σ √λ`` over the eigenvalues of ``Σ1 Σ2`` (real and
    ≥ 0 for PSD inputs; torch-fidelity's formula). Used by the tests to check ``frechet_distance``."""
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    eig = np.linalg.eigvals(np.asarray(sigma1, np.float64) @ np.asarray(sigma2, np.float64))
    tr_covmean = np.sum(np.sqrt(eig.astype(np.complex128)).real)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
