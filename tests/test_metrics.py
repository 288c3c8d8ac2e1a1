"""Metrics: digit-classifier cache, torch-fidelity / clean-fid agreement, sanity of every metric, Inception path."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from graft_core.data import load_digits
from graft_core.metrics import compute_metrics
from graft_core.metrics import features as features_mod
from graft_core.metrics.classifier import (WEIGHTS_FILE, classifier_dir, classifier_key, find_classifier,
                                           load_classifier_dir, read_meta, train_classifier)
from graft_core.metrics.compute import METRICS, register_metric
from graft_core.metrics.extractors import (EXTRACTORS, INCEPTION_WEIGHTS_ENV, InceptionFeatureExtractor,
                                           InceptionWeightsMissingError, get_extractor, register_extractor)
from graft_core.metrics.features import UInt8Images, as_nchw_uint8, clean_fid_folders
from graft_core.metrics.frechet import frechet_distance, statistics
from graft_core.presets import get_preset
from graft_core.data.decoder import to_uint8
from graft_core.errors import MissingWeightsError


@pytest.fixture(scope="session")
def metrics_preset(micro_preset):
    """micro with a 3-epoch classifier: micro's own 1-epoch one is a smoke-test model (~60 % held-out)."""
    return micro_preset.replace(classifier=dataclasses.replace(micro_preset.classifier, epochs=3))


@pytest.fixture(scope="session")
def clf_dir(metrics_preset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier") / classifier_key(metrics_preset.classifier, metrics_preset.data)
    train_classifier(metrics_preset, folder)
    return folder


@pytest.fixture(scope="session")
def digits(metrics_preset):
    d = load_digits(metrics_preset.data)
    return {"train": to_uint8(d.train_images), "train_labels": d.train_labels.numpy(),
            "held": to_uint8(d.heldout_images), "held_labels": d.heldout_labels.numpy()}


def _metrics(samples, reference, preset, clf, **kw):
    return compute_metrics(samples, reference, extractor="digits", preset=preset, weights=str(clf), **kw)


# ---------------------------------------------------------------------------------------------------------------
# Classifier
# ---------------------------------------------------------------------------------------------------------------


def test_classifier_cache_reloads_bit_identically_and_training_is_deterministic(micro_preset, tmp_path):
    preset = micro_preset.replace(classifier=dataclasses.replace(micro_preset.classifier, seed=123))
    assert find_classifier(preset) is None
    folder = classifier_dir(preset)  # trains into cache_root()/classifiers/<key>
    stamp = (folder / WEIGHTS_FILE).stat().st_mtime_ns
    assert classifier_dir(preset) == folder and (folder / WEIGHTS_FILE).stat().st_mtime_ns == stamp  # no retrain
    a, b = load_classifier_dir(folder), load_classifier_dir(folder)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    assert torch.equal(a(x), b(x))
    meta = read_meta(folder)
    assert meta["key"] == classifier_key(preset.classifier, preset.data) and 0 <= meta["heldout_accuracy"] <= 1
    again = train_classifier(preset, tmp_path / "again")
    assert again["sha256"] == meta["sha256"]  # same seed → same weights


def test_corrupt_classifier_is_refused(metrics_preset, clf_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(clf_dir, copy)
    with open(copy / WEIGHTS_FILE, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match="corrupt"):
        load_classifier_dir(copy)


def test_missing_classifier_without_training_names_the_command(micro_preset):
    preset = micro_preset.replace(classifier=dataclasses.replace(micro_preset.classifier, seed=999))
    with pytest.raises(MissingWeightsError, match="python -m graft_core.metrics.classifier"):
        classifier_dir(preset, train_if_missing=False)


def test_shipped_tiny_classifier_is_current_and_accurate():
    tiny = get_preset("tiny")
    folder = find_classifier(tiny)
    assert folder is not None and "assets" in folder.parts, (
        "the shipped tiny classifier no longer matches ClassifierConfig/DataConfig; retrain it with "
        "`python -m graft_core.metrics.classifier --preset tiny --out graft_core/assets/classifiers`")
    meta = read_meta(folder)
    assert meta["heldout_accuracy"] >= 0.97
    load_classifier_dir(folder)  # sha256 checked on load


# ---------------------------------------------------------------------------------------------------------------
# Metric sanity
# ---------------------------------------------------------------------------------------------------------------


def test_identical_sets_are_ideal(metrics_preset, clf_dir, digits):
    x = digits["held"]
    m = _metrics(x, x, metrics_preset, clf_dir)
    assert abs(m["fid"]) < 1e-3 and abs(m["fid_clean"]) < 1e-3 and abs(m["sfid"]) < 1e-2
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    assert set(m) == {"is", "is_std", "fid", "fid_std", "fid_lo", "fid_hi", "fid_clean", "sfid", "kid", "kid_std",
                      "precision", "recall"}
    assert m["fid_lo"] <= m["fid_hi"] and m["fid_std"] >= 0


def test_metrics_separate_noise_from_data(metrics_preset, clf_dir, digits):
    train = digits["train"][::4]  # 1,200 images: keeps the k-NN radii of precision/recall cheap
    real = _metrics(digits["held"], train, metrics_preset, clf_dir, labels=digits["held_labels"])
    noise_images = np.random.default_rng(0).integers(0, 256, digits["held"].shape, dtype=np.uint8)
    noise = _metrics(noise_images, train, metrics_preset, clf_dir, labels=digits["held_labels"])
    assert noise["fid"] > 20 * real["fid"] and noise["sfid"] > 5 * real["sfid"]
    assert noise["kid"] > 20 * max(real["kid"], real["kid_std"])
    assert real["precision"] > 0.5 > noise["precision"] and real["recall"] > 0.5 > noise["recall"]
    assert real["is"] > noise["is"]
    assert real["class_acc"] > 0.75 > 0.3 > noise["class_acc"]  # trained classifier on real held-out; chance on noise


def test_torch_fidelity_calculate_metrics_gives_the_same_numbers(metrics_preset, clf_dir, digits):
    import torch_fidelity
    from threadpoolctl import threadpool_limits

    fake, real = digits["held"], digits["train"][:600]
    ours = _metrics(fake, real, metrics_preset, clf_dir, metrics=["is", "fid", "kid", "prc"])
    with threadpool_limits(limits=1, user_api="blas"):  # as compute_metrics does (BLAS_THREADS)
        theirs = torch_fidelity.calculate_metrics(
            input1=UInt8Images(as_nchw_uint8(fake)), input2=UInt8Images(as_nchw_uint8(real)),
            feature_extractor="graftbench-digits", feature_extractor_weights_path=str(clf_dir), isc=True, fid=True,
            kid=True, prc=True, kid_subset_size=len(fake), prc_neighborhood=3, batch_size=200, cuda=False, cache=False,
            save_cpu_ram=True, verbose=False)
    assert ours["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5, abs=1e-9)
    assert (ours["precision"], ours["recall"]) == (theirs["precision"], theirs["recall"])


def test_clean_fid_agrees_with_torch_fidelity_and_its_folder_api(metrics_preset, clf_dir, digits, tmp_path):
    from PIL import Image

    fake, real = digits["held"][:120], digits["train"][:150]
    m = _metrics(fake, real, metrics_preset, clf_dir, metrics=["fid", "fid_clean"])
    assert m["fid_clean"] == pytest.approx(m["fid"], rel=1e-4, abs=1e-6)
    for name, images in (("fake", fake), ("real", real)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img[..., 0]).save(tmp_path / name / f"{i:04d}.png")
    official = clean_fid_folders(tmp_path / "fake", tmp_path / "real", get_extractor("digits"), clf_dir)
    assert official == pytest.approx(m["fid_clean"], rel=1e-6, abs=1e-8)


def test_precision_recall_use_adm_k3():
    from torch_fidelity.defaults import DEFAULTS

    from graft_core.metrics import DEFAULT_OPTIONS

    assert DEFAULTS["prc_neighborhood"] == 3 and DEFAULT_OPTIONS["prc_neighborhood"] == 3


def _adm_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """ADM evaluator's formula (scipy sqrtm on the product, eps·I when the root is not finite)."""
    from scipy import linalg

    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


def test_frechet_distance_matches_adm_formula():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((500, 24)), rng.standard_normal((500, 24)) @ rng.standard_normal((24, 24)) + 0.3
    sa, sb = statistics(a), statistics(b)
    ours = frechet_distance(sa["mu"], sa["sigma"], sb["mu"], sb["sigma"])
    assert ours == pytest.approx(_adm_frechet(sa["mu"], sa["sigma"], sb["mu"], sb["sigma"]), rel=1e-8)


def test_frechet_distance_regularises_dead_features():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((400, 24)), rng.standard_normal((400, 24)) + 0.3
    a[:, :6] = 0.0  # dead ReLU units: zero rows/columns in the covariance, Σ1·Σ2 singular
    b[:, :6] = 0.0
    sa, sb = statistics(a), statistics(b)
    assert abs(frechet_distance(sa["mu"], sa["sigma"], sa["mu"], sa["sigma"])) < 1e-3
    value = frechet_distance(sa["mu"], sa["sigma"], sb["mu"], sb["sigma"])
    exact = fid_statistics_to_metric(sa, sb, False)["frechet_inception_distance"]  # Σ√eig(Σ1Σ2), no eps
    assert math.isfinite(value) and value == pytest.approx(exact, rel=1e-4)
    few = statistics(rng.standard_normal((10, 24)))  # N < D: rank-deficient
    assert math.isfinite(frechet_distance(few["mu"], few["sigma"], sb["mu"], sb["sigma"]))


def test_reference_features_are_cached_in_memory_and_on_disk(metrics_preset, clf_dir, digits, monkeypatch):
    calls = []
    real_extract = features_mod.extract_features
    monkeypatch.setattr(features_mod, "extract_features", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    ref = digits["train"][123:423]
    first = _metrics(digits["held"], ref, metrics_preset, clf_dir, metrics=["fid", "sfid", "prc"])
    assert len(calls) == 1
    assert _metrics(digits["held"], ref, metrics_preset, clf_dir, metrics=["fid", "sfid", "prc"]) == first
    assert len(calls) == 1  # memory
    features_mod.clear_memory_cache()
    assert _metrics(digits["held"], ref, metrics_preset, clf_dir, metrics=["fid", "sfid", "prc"]) == first
    assert len(calls) == 1  # disk


def test_class_acc_only_with_labels_and_a_classifier(metrics_preset, clf_dir, digits):
    x = digits["held"][:50]
    assert "class_acc" not in _metrics(x, x, metrics_preset, clf_dir, metrics=["class_acc"])
    with pytest.raises(ValueError, match="labels"):
        _metrics(x, x, metrics_preset, clf_dir, labels=[0, 1])


def test_registries_refuse_unknown_and_duplicate_names(metrics_preset, clf_dir, digits):
    with pytest.raises(ValueError, match="digits, inception"):
        get_extractor("lenet")
    with pytest.raises(ValueError, match="fid_clean"):
        _metrics(digits["held"], digits["held"], metrics_preset, clf_dir, metrics=["fidd"])
    with pytest.raises(ValueError, match="twice"):
        register_metric("fid", ("fid",), ("pool",))(lambda f, r, c: {})
    with pytest.raises(ValueError, match="twice"):
        register_extractor(EXTRACTORS["digits"])
    assert list(METRICS) == ["is", "fid", "fid_clean", "sfid", "kid", "prc", "class_acc"]


def test_uint8_nhwc_is_required(metrics_preset, clf_dir, digits):
    with pytest.raises(TypeError, match="uint8"):
        _metrics(digits["held"].astype(np.float32), digits["held"], metrics_preset, clf_dir)


# ---------------------------------------------------------------------------------------------------------------
# Inception (paper preset)
# ---------------------------------------------------------------------------------------------------------------


def test_missing_inception_weights_fail_fast_with_one_line(monkeypatch, micro_preset, digits, tmp_path):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    # fails before extracting anything (its speed target: benchmarks/metrics_speed.py)
    monkeypatch.setattr("graft_core.metrics.compute.extract_features",
                        lambda *a, **k: pytest.fail("features were extracted"))
    with pytest.raises(InceptionWeightsMissingError) as err:
        compute_metrics(digits["held"], digits["held"], extractor="inception", preset=get_preset("paper"))
    message = str(err.value)
    assert "\n" not in message and INCEPTION_WEIGHTS_ENV in message and "weights=" in message
    assert isinstance(err.value, MissingWeightsError) and isinstance(err.value, FileNotFoundError)
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(InceptionWeightsMissingError, match="nope.pth"):
        compute_metrics(digits["held"], digits["held"], extractor="inception", preset=micro_preset)


def test_torch_fidelity_api_with_our_inception_name_does_not_download(monkeypatch):
    import torch_fidelity

    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    x = UInt8Images(torch.zeros(4, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(InceptionWeightsMissingError):
        torch_fidelity.calculate_metrics(input1=x, input2=x, feature_extractor="graftbench-inception-v3", fid=True,
                                         cuda=False, cache=False, verbose=False)


@pytest.fixture()
def random_inception(monkeypatch, tmp_path):
    """Inception extractors with random weights (the real file cannot be downloaded here)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = tmp_path / "random.pth"
    torch.save({}, path)
    monkeypatch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    torch.manual_seed(0)
    ours = InceptionFeatureExtractor("graftbench-inception-v3", ["2048", "logits_unbiased", "spatial"],
                                     feature_extractor_weights_path=str(path))
    stock = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                        feature_extractor_weights_path=str(path))
    torch.nn.Module.load_state_dict(stock, ours.state_dict())
    return ours.eval(), stock.eval(), path


def test_inception_extractor_adds_adm_spatial_features(random_inception):
    ours, stock, _ = random_inception
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    captured = {}
    hook = stock.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: captured.setdefault("s", o.clone()))
    with torch.no_grad():
        pool, logits, spatial = ours(x)
        ref_pool, ref_logits = stock(x)
    hook.remove()
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008) and spatial.shape == (2, 17 * 17 * 7)
    assert torch.equal(pool, ref_pool) and torch.equal(logits, ref_logits)
    assert torch.equal(spatial, captured["s"][:, :7].permute(0, 2, 3, 1).reshape(2, -1))


def test_inception_clean_path_matches_uint8_path_at_299(random_inception):
    ours, _, _ = random_inception
    x = torch.randint(0, 256, (1, 3, 299, 299), dtype=torch.uint8)
    with torch.no_grad():
        pool = ours(x)[0]
        clean = ours.clean_features(x.float())
    torch.testing.assert_close(clean, pool, rtol=1e-4, atol=1e-4)


def test_compute_metrics_runs_on_the_inception_extractor(random_inception, digits, micro_preset):
    _, _, path = random_inception
    x = digits["held"][:4]
    m = compute_metrics(x, digits["train"][:4], extractor="inception", preset=get_preset("paper"),
                        labels=digits["held_labels"][:4], weights=str(path), metrics=["is", "prc", "class_acc"],
                        disk_cache=False)
    assert set(m) == {"is", "is_std", "precision", "recall"}  # no class accuracy: Inception's logits are not digits


def test_bootstrap_fid_spread_shrinks_with_samples_and_is_deterministic():
    from graft_core.metrics.frechet import bootstrap_frechet, frechet_distance, statistics

    rng = np.random.default_rng(0)
    ref = statistics(rng.normal(size=(5000, 32)))
    fake = rng.normal(0.3, 1.2, size=(2000, 32))
    big = bootstrap_frechet(fake, ref["mu"], ref["sigma"], num_resamples=200, seed=1)  # speed: benchmarks/metrics_speed
    small = bootstrap_frechet(fake[:200], ref["mu"], ref["sigma"], num_resamples=200, seed=1)
    assert bootstrap_frechet(fake, ref["mu"], ref["sigma"], num_resamples=200, seed=1) == big
    assert 0 < big["fid_std"] < small["fid_std"] / 2  # ~1/sqrt(N): 10x the samples, ~3x smaller
    s = statistics(fake)
    fid = frechet_distance(s["mu"], s["sigma"], ref["mu"], ref["sigma"])
    assert big["fid_lo"] < fid < big["fid_hi"]


def test_no_bootstrap_for_large_feature_spaces(metrics_preset, clf_dir, digits, monkeypatch):
    """Inception's 2,048-d features would cost ~10 min of matrix square roots per evaluation: no spread there."""
    from graft_core.metrics import compute

    monkeypatch.setattr(compute, "FID_BOOTSTRAP_MAX_DIM", 1)  # every feature space is "large"
    x = digits["held"]
    m = _metrics(x, x, metrics_preset, clf_dir)
    assert "fid" in m and not {"fid_std", "fid_lo", "fid_hi"} & set(m)


def test_clean_fid_runs_on_a_scipy_without_sqrtm_disp(monkeypatch):
    """clean-fid 0.1.35 calls ``scipy.linalg.sqrtm(..., disp=False)``, which scipy 1.18 removed: inside
    ``quiet_clean_fid`` its Fréchet distance still equals ours, and scipy's module is restored afterwards."""
    import scipy.linalg
    from cleanfid import fid as cfid

    real_sqrtm = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a: real_sqrtm(a))  # scipy >= 1.18's signature: no disp
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(0.3, 1.2, size=(200, 8))
    sa, sb = statistics(a), statistics(b)
    mu1, s1, mu2, s2 = sa["mu"], sa["sigma"], sb["mu"], sb["sigma"]
    with features_mod.quiet_clean_fid():
        value = cfid.frechet_distance(mu1, s1, mu2, s2)
    assert value == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-6)
    assert cfid.linalg is scipy.linalg
    root, err = features_mod._LinalgWithSqrtmDisp.sqrtm(s1 @ s2, disp=False)
    assert np.allclose(root @ root, s1 @ s2, atol=1e-8) and 0 <= err < 1e-6
