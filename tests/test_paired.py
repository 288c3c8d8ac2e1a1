"""Paired bootstrap of FID differences (graft_core.metrics.paired): the estimators against exact references, the
pairing rule, and on micro the property it exists for (identical evaluations: exactly 0; a degraded generator: an
interval that excludes 0 while the two unpaired intervals overlap)."""
import numpy as np
import pytest
import scipy.linalg

from graft_core.metrics.paired import (NotPairedError, bootstrap_indices, check_paired, fid_bootstrap,
                                       frechet_influence, linearised_resampled_frechet, paired_difference,
                                       resampled_frechet)


def _features(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


def _weighted_fid_sqrtm(x, w, mu2, sigma2):
    """FID of the w-weighted set with scipy's sqrtm (ADM's formula), covariance scaled as np.cov's: N/(N−1)."""
    n = len(x)
    mu = w @ x
    c = x - mu
    sigma = n / (n - 1) * (c.T * w) @ c
    covmean = scipy.linalg.sqrtm(sigma @ sigma2).real
    return float((mu - mu2) @ (mu - mu2) + np.trace(sigma) + np.trace(sigma2) - 2 * np.trace(covmean))


def test_influence_is_the_derivative_of_the_sqrtm_fid():
    x, ref = _features(60, 6, 0), _features(500, 6, 1, shift=0.3)
    mu2, sigma2 = ref.mean(0), np.cov(ref, rowvar=False)
    fid, influence = frechet_influence(x, mu2, sigma2)
    uniform = np.full(len(x), 1 / len(x))
    assert fid == pytest.approx(_weighted_fid_sqrtm(x, uniform, mu2, sigma2), rel=1e-9)
    t = 1e-6
    for i in (0, 17, 59):
        w = (1 - t) * uniform
        w[i] += t
        fd = (_weighted_fid_sqrtm(x, w, mu2, sigma2) - fid) / t
        assert influence[i] == pytest.approx(fd, rel=1e-3, abs=1e-6)
    assert abs(influence.mean()) < 1e-9 * np.abs(influence).max()  # influences of a plug-in statistic sum to 0


def test_linearised_bootstrap_tracks_the_exact_one():
    x, y, ref = _features(400, 16, 0), _features(400, 16, 0, shift=0.05), _features(2000, 16, 1, shift=0.2)
    y += 0.1 * _features(400, 16, 3)  # a second "model": the same draws, slightly moved
    mu2, sigma2 = ref.mean(0), np.cov(ref, rowvar=False)
    idx = bootstrap_indices(400, 200, 2020)
    ex, ey = resampled_frechet(x, mu2, sigma2, idx), resampled_frechet(y, mu2, sigma2, idx)
    lx, ly = linearised_resampled_frechet(x, mu2, sigma2, idx), linearised_resampled_frechet(y, mu2, sigma2, idx)
    assert np.corrcoef(ex, lx)[0, 1] > 0.95
    assert np.std(lx) == pytest.approx(np.std(ex), rel=0.15)
    exact_d = np.std(ex - ey)
    assert np.std(lx - ly) == pytest.approx(exact_d, rel=0.15)
    assert exact_d < 0.5 * np.hypot(np.std(ex), np.std(ey))  # pairing is what makes the difference's spread small


def test_bootstrap_indices_are_shared_and_fixed():
    a, b = bootstrap_indices(50, 5, 7), bootstrap_indices(50, 5, 7)
    assert a.shape == (5, 50) and (a == b).all()
    assert not (bootstrap_indices(50, 5, 8) == a).all()
    x = _features(50, 4, 0)
    _, meta = fid_bootstrap(x, x.mean(0), np.cov(x, rowvar=False), draws=5, seed=7)
    assert meta == {"draws": 5, "seed": 7, "method": "exact"}


def test_identical_vectors_give_exactly_zero():
    v = np.random.default_rng(0).normal(10, 1, size=200)
    d = paired_difference(5.0, v, 5.0, v.copy())
    assert d["diff"] == 0 and d["std"] == 0 and d["lo"] == 0 and d["hi"] == 0 and not d["excludes_zero"]


def test_unpaired_records_are_refused_with_one_line():
    a = {"seed": 0, "batch_size": 100, "path": "in_process"}
    check_paired(a, dict(a))
    with pytest.raises(NotPairedError, match="batch_size differs") as err:
        check_paired(a, {**a, "batch_size": 50}, ("r3", "r6"))
    assert "\n" not in str(err.value) and "r3 vs r6" in str(err.value)
    with pytest.raises(NotPairedError, match="rerun its eval"):
        check_paired(a, {}, ("r3", "old"))


def test_compute_metrics_keeps_linearised_draws_above_the_exact_dimension(monkeypatch, micro_preset):
    from graft_core.metrics import compute

    monkeypatch.setattr(compute, "FID_BOOTSTRAP_MAX_DIM", 1)  # every feature space is "large"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 8, 8, 1), dtype=np.uint8)
    reference = rng.integers(0, 256, size=(60, 8, 8, 1), dtype=np.uint8)
    kept: dict = {}
    out = compute.compute_metrics(images, reference, extractor="digits", preset=micro_preset, metrics=["fid"],
                                  per_sample=kept)
    assert "fid_std" not in out  # the linearised draws serve differences only
    assert kept["bootstrap"]["method"] == "linearised" and kept["fid_bootstrap"].shape == (200,)
    assert kept["features"].shape[0] == 30 and kept["features"].dtype == np.float32


def _evaluate(model, preset, **kw):
    from graft_core.evaluation.evaluate import evaluate_model

    kept: dict = {}
    row = evaluate_model(model, preset, per_sample=kept, **kw)
    return row, kept


def test_micro_paired_difference_zero_for_identical_and_separates_a_degraded_generator(micro_teacher, micro_preset):
    a, ka = _evaluate(micro_teacher, micro_preset)
    again, kagain = _evaluate(micro_teacher, micro_preset)
    check_paired(ka["pairing"], kagain["pairing"])
    same = paired_difference(again["fid"], kagain["fid_bootstrap"], a["fid"], ka["fid_bootstrap"])
    assert same["diff"] == 0 and same["std"] == 0 and (same["lo"], same["hi"]) == (0, 0)
    # degraded: the same samples over-saturated (contrast × 1.5, then clipped) — worse FID, same draws
    b, kb = _evaluate(micro_teacher, micro_preset, decode=lambda x: x * 1.5)
    check_paired(ka["pairing"], kb["pairing"])
    d = paired_difference(b["fid"], kb["fid_bootstrap"], a["fid"], ka["fid_bootstrap"])
    assert d["diff"] > 0 and d["excludes_zero"] and d["lo"] > 0
    assert b["fid_lo"] < a["fid_hi"] and a["fid_lo"] < b["fid_hi"]  # the unpaired intervals overlap
    other, ko = _evaluate(micro_teacher, micro_preset, seed=1)
    with pytest.raises(NotPairedError, match="seed differs"):
        check_paired(ka["pairing"], ko["pairing"])
