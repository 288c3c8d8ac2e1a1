"""ADM-compatible evaluation of .npz batches with a fake Inception extractor, and the whole paper-data path in seconds.

The fake extractor is a tiny registered torch-fidelity extractor that provides the real Inception extractor's feature
names (``2048`` pooled, ``logits_unbiased``, ``spatial``) at small widths, with its weights read from a file (so the
cache key sees a weights digest exactly as with the real Inception ``.pth``).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image

from graft_core.evaluation import adm_eval
from graft_core.metrics.extractors import EXTRACTORS, ExtractorSpec, register_extractor
from graft_core.errors import MissingWeightsError

FAKE = "fake-inception"


class FakeInception(torch_fidelity.FeatureExtractorBase):
    """Conv stem (→ 16 pooled features), a 10-way linear head without bias, a 7×4×4 'spatial' map."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, list(features_list))
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(16, 10, bias=False)
        self.load_state_dict(torch.load(feature_extractor_weights_path))

    @staticmethod
    def get_provided_features_list():
        return "2048", "logits_unbiased", "spatial"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "2048", "kid": "2048", "prc": "2048"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        h = torch.tanh(self.conv(x.float() / 127.5 - 1))
        out = {"2048": h.mean((2, 3)), "spatial": torch.nn.functional.adaptive_avg_pool2d(h[:, :7], 4).flatten(1)}
        out["logits_unbiased"] = 4 * self.head(out["2048"])
        return tuple(out[k] for k in self.features_list)


def _fake_weights(preset, given):
    if not given or not Path(given).is_file():
        raise MissingWeightsError(f"fake weights {given!r} not found")
    return Path(given)


@pytest.fixture(scope="module", autouse=True)
def fake_extractor():
    """Registered for this module's tests only, so tests parameterised over the registry never see it."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    spec = register_extractor(ExtractorSpec(
        name=FAKE, fidelity_name="graftbench-test-fake-inception", cls=FakeInception,
        layers={"pool": "2048", "logits": "logits_unbiased", "spatial": "spatial"}, weights=_fake_weights,
        is_classifier=False, clean_resize=None))
    yield spec
    EXTRACTORS.pop(FAKE, None)
    FEATURE_EXTRACTORS_REGISTRY.pop(spec.fidelity_name, None)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    state = {"conv.weight": torch.randn(16, 3, 3, 3) * 0.5, "conv.bias": torch.zeros(16),
             "head.weight": torch.randn(10, 16)}
    path = tmp_path_factory.mktemp("fake") / "fake-inception.pth"
    torch.save(state, path)
    return str(path)


def images(n, seed, shift=0, res=32):
    """Smooth random colour fields (so the features are not pure noise); ``shift`` brightens them."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (n, 4, 4, 3))
    up = np.kron(low, np.ones((1, res // 4, res // 4, 1))) + rng.normal(0, 20, (n, res, res, 3)) + shift
    return up.clip(0, 255).astype(np.uint8)


def save(path, arr, **extra):
    np.savez(path, arr_0=arr, **extra)
    return path


def evaluate(sample, ref, weights, **kw):
    return adm_eval.evaluate_npz(sample, ref, extractor=FAKE, weights=weights, device="cpu", **kw)


def test_a_set_against_itself(tmp_path, weights):
    ref = save(tmp_path / "ref.npz", images(300, 0))
    res = evaluate(save(tmp_path / "same.npz", images(300, 0)), ref, weights)
    assert abs(res["fid"]) < 1e-3 and abs(res["sfid"]) < 1e-3
    assert res["precision"] == 1.0 and res["recall"] == 1.0
    assert res["num_samples"] == res["num_reference"] == 300
    other = evaluate(save(tmp_path / "other.npz", images(300, 1)), ref, weights)  # same distribution, new draw
    shifted = evaluate(save(tmp_path / "shift.npz", images(300, 1, shift=60)), ref, weights)
    assert 0 < other["fid"] < shifted["fid"] and other["sfid"] < shifted["sfid"]
    assert shifted["precision"] < other["precision"]


def test_inception_score_follows_adm():
    assert adm_eval.adm_inception_score(np.zeros((100, 10))) == pytest.approx(1.0)
    onehot = np.eye(10)[np.arange(100) % 10] * 50  # confident and diverse: IS → number of classes
    assert adm_eval.adm_inception_score(onehot) == pytest.approx(10.0, rel=1e-6)
    # consecutive splits of 5,000 in file order (no shuffling): a first half of class 0, a second half of class 1
    logits = np.zeros((10_000, 2))
    logits[:5000, 0] = logits[5000:, 1] = 50
    assert adm_eval.adm_inception_score(logits) == pytest.approx(1.0)  # each split is one class
    assert adm_eval.adm_inception_score(logits, split_size=10_000) == pytest.approx(2.0)


def test_reference_features_are_cached_next_to_the_file(tmp_path, weights, monkeypatch):
    ref = save(tmp_path / "ref.npz", images(64, 0))
    sample = save(tmp_path / "s.npz", images(64, 1))
    first = evaluate(sample, ref, weights)
    cached = sorted(p.name for p in tmp_path.glob("*.graftbench-*.npz"))
    assert cached == [f"ref.npz.graftbench-{first['reference_key']}.npz", f"s.npz.graftbench-{first['sample_key']}.npz"]
    monkeypatch.setattr(adm_eval, "stream_features", lambda *a, **k: pytest.fail("features recomputed"))
    assert evaluate(sample, ref, weights) == first
    monkeypatch.undo()
    save(ref, images(64, 2))  # new content → new sha256 → new key
    assert evaluate(sample, ref, weights)["reference_key"] != first["reference_key"]
    elsewhere = evaluate(sample, ref, weights, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2 and elsewhere["fid"] > 0


def test_stored_adm_statistics_are_used_when_asked(tmp_path, weights):
    real = images(200, 0)
    probe = adm_eval.batch_features(save(tmp_path / "probe.npz", real), EXTRACTORS[FAKE], Path(weights))[0]
    stats = {"mu": probe.stats["pool"]["mu"], "sigma": probe.stats["pool"]["sigma"],
             "mu_s": probe.stats["spatial"]["mu"], "sigma_s": probe.stats["spatial"]["sigma"]}
    ref = save(tmp_path / "ref.npz", real, **stats)
    res = evaluate(save(tmp_path / "s.npz", images(200, 1)), ref, weights, adm_stats=True)
    assert res["fid_adm_stats"] == pytest.approx(res["fid"], rel=1e-4)  # same images → same statistics
    assert res["sfid_adm_stats"] == pytest.approx(res["sfid"], rel=1e-4)
    assert "fid_adm_stats" not in evaluate(tmp_path / "s.npz", ref, weights)  # auto: only for the real Inception
    bad = save(tmp_path / "bad.npz", real, **{**stats, "mu": np.zeros(2048), "sigma": np.eye(2048)})
    with pytest.raises(adm_eval.BatchFormatError, match="stored mu has shape"):
        evaluate(tmp_path / "s.npz", bad, weights, adm_stats=True)


@pytest.mark.parametrize("content, message", [
    (b"not a zip", "not a readable .npz"),
    ({"images": np.zeros((4, 8, 8, 3), np.uint8)}, "has no arr_0 (keys: images)"),
    ({"arr_0": np.zeros((4, 8, 8, 3), np.float32)}, "float32"),
    ({"arr_0": np.zeros((4, 8, 8), np.uint8)}, "expected uint8 [N, H, W, 3]"),
    ({"arr_0": np.zeros((4, 3, 8, 8), np.uint8)}, "expected uint8 [N, H, W, 3]"),
    ({"arr_0": np.zeros((1, 8, 8, 3), np.uint8)}, "at least 2"),
    ({"arr_0": np.zeros((4, 8, 8, 3), np.uint8), "mu": np.zeros(3)}, "stores only ['mu']"),
])
def test_wrong_reference_batches_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "ref.npz"
    path.write_bytes(content) if isinstance(content, bytes) else np.savez(path, **content)
    with pytest.raises(adm_eval.BatchFormatError) as err:
        adm_eval.batch_info(path, "reference batch")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_errors_exit_2(tmp_path, weights, capsys, monkeypatch):
    from benchmark.prepare import main as prepare

    bad = save(tmp_path / "bad.npz", np.zeros((4, 3, 8, 8), np.uint8))
    assert prepare(["reference", "--npz", str(bad), "--extractor", FAKE, "--weights", weights]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reference batch" in err and "[N, H, W, 3]" in err
    monkeypatch.setenv("GRAFTBENCH_INCEPTION_WEIGHTS", str(tmp_path / "missing.pth"))
    good = save(tmp_path / "good.npz", images(8, 0))
    assert adm_eval.main([str(good), str(good)]) == 2  # default extractor: the real Inception, weights missing
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GRAFTBENCH_INCEPTION_WEIGHTS" in err


def test_cli_reference_and_evaluation(tmp_path, weights, capsys):
    from benchmark.prepare import main as prepare

    ref = save(tmp_path / "ref.npz", images(50, 0))
    assert prepare(["reference", "--npz", str(ref), "--extractor", FAKE, "--weights", weights]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["num_images"] == 50 and Path(meta["cache"]).exists()
    sample = save(tmp_path / "s.npz", images(50, 1))
    assert adm_eval.main([str(ref), str(sample), "--extractor", FAKE, "--weights", weights,
                          "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "FID:" in printed and "sFID:" in printed and "Precision:" in printed
    assert json.loads((tmp_path / "m.json").read_text())["reference_key"] == meta["key"]


def test_whole_path_prepare_sample_evaluate(tmp_path, weights):
    """Fake ImageNet → latents (micro VAE) → two training steps of a micro DiT on them → 4-shard sampling (resumed
    after a killed shard) → merged .npz → metrics against a reference batch of the centre-cropped images."""
    from diffusers import AutoencoderKL

    from graft_core.data import imagenet as inet
    from graft_core.evaluation import sample_at_scale as sas
    from graft_core.models.diffusion import diffusion_loss, make_train_scheduler
    from graft_core.presets import TeacherConfig
    from graft_core.models.teacher import build_dit

    res, rng = 32, np.random.default_rng(0)
    src = tmp_path / "train"
    for c in ("n01", "n02", "n03"):
        (src / c).mkdir(parents=True)
        for i, (w, h) in enumerate([(45, 33), (33, 70), (64, 64)]):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / c / f"{c}_{i}.JPEG")
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=4).eval()
    inet.encode_imagenet(src, tmp_path / "data", vae=vae, vae_name="micro", shard_size=4, resolution=res,
                         num_workers=0, progress=False, shard_index=0, num_shards=1)
    latents, labels = inet.load_latents(tmp_path / "data" / "train")

    cfg = TeacherConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                        sample_size=res // 8, patch_size=2, num_classes=3)
    dit = build_dit(cfg).train()
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-3)
    for _ in range(2):
        loss = diffusion_loss(dit, make_train_scheduler(cfg), latents, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dit.eval()

    plan = dict(num_samples=12, shard_size=3, steps=3, guidance_scale=1.5, batch_size=2, progress=False)
    for rank in range(4):  # four array tasks
        merged = sas.sample_to_npz(dit, cfg, tmp_path / "samples", vae=vae, rank=rank, world_size=4, **plan)
    sas.shard_paths(tmp_path / "samples", 2)[1].unlink()  # a killed task
    assert sas.sample_shards(dit, cfg, tmp_path / "samples", vae=vae, rank=2, world_size=4, **plan)["sampled"] == [2]
    merged = sas.merge_shards(tmp_path / "samples")
    one_task = sas.sample_to_npz(dit, cfg, tmp_path / "samples1", vae=vae, rank=0, world_size=1, **plan)

    index = inet.read_index(tmp_path / "data" / "train" / "index")
    real = np.stack([inet.load_image(src / f, f, res, 0)[0] for f in index.files])
    ref = save(tmp_path / "ref.npz", real)
    res4 = evaluate(merged, ref, weights)
    res1 = evaluate(one_task, ref, weights)
    for key in ("is", "fid", "sfid", "precision", "recall"):
        assert np.isfinite(res4[key]), key
        assert res4[key] == res1[key], key  # 1 task vs 4 tasks: the same samples, the same metrics
    assert res4["num_samples"] == 12 and res4["num_reference"] == 9


@pytest.mark.slow
def test_paired_draws_on_the_inception_sized_path(tmp_path, weights, monkeypatch):
    """The sharded path's per-draw FIDs go against the stored statistics (the reported FID's), by the linearised
    estimator that Inception's 2,048 dimensions get (forced here: the fake's features are small); the same samples
    give exactly 0, brightened samples a difference whose interval excludes 0."""
    from graft_core.metrics import paired
    from graft_core.metrics.paired import paired_difference

    monkeypatch.setattr(paired, "EXACT_MAX_DIM", 1)

    real = images(200, 0)
    probe = adm_eval.batch_features(save(tmp_path / "probe.npz", real), EXTRACTORS[FAKE], Path(weights))[0]
    stats = {"mu": probe.stats["pool"]["mu"], "sigma": probe.stats["pool"]["sigma"],
             "mu_s": probe.stats["spatial"]["mu"], "sigma_s": probe.stats["spatial"]["sigma"]}
    ref = save(tmp_path / "ref.npz", real, **stats)
    kept = [{}, {}, {}]
    runs = [evaluate(save(tmp_path / f"s{i}.npz", images(150, 1, shift=shift)), ref, weights, adm_stats=True,
                     per_sample=k) for i, (shift, k) in enumerate(zip((0, 0, 25), kept))]
    assert kept[0]["bootstrap"]["method"] == "linearised" and kept[0]["features"].shape[0] == 150
    draws = kept[0]["fid_bootstrap"]
    assert draws.shape == (200,) and np.isfinite(draws).all() and draws.std() > 0
    same = paired_difference(runs[1]["fid_adm_stats"], kept[1]["fid_bootstrap"], runs[0]["fid_adm_stats"],
                             kept[0]["fid_bootstrap"])
    assert same["diff"] == 0 and same["std"] == 0
    worse = paired_difference(runs[2]["fid_adm_stats"], kept[2]["fid_bootstrap"], runs[0]["fid_adm_stats"],
                              kept[0]["fid_bootstrap"])
    assert worse["diff"] > 0 and worse["excludes_zero"]


def test_prepare_reference_records_the_batch_the_evals_use(tmp_path, weights, capsys, monkeypatch):
    """What ``prepare reference --npz`` checked is what the evals score against, with no environment variable;
    ``$GRAFTBENCH_ADM_REFERENCE`` still overrides it; a file replaced after the check is one preflight line."""
    from benchmark import preflight
    from benchmark.prepare import main as prepare

    monkeypatch.setenv("GRAFTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(preflight.ADM_REFERENCE_ENV, raising=False)
    assert preflight.adm_reference_path() == tmp_path / "cache" / "adm" / preflight.ADM_REFERENCE_FILE  # nothing yet
    (tmp_path / "elsewhere").mkdir()
    ref = save(tmp_path / "elsewhere" / "ref.npz", images(8, 0))
    assert prepare(["reference", "--npz", str(ref), "--extractor", FAKE, "--weights", weights]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Path(out["recorded_in"]) == preflight.reference_record_path()
    assert preflight.adm_reference_path() == ref.resolve()
    record = preflight.recorded_reference()
    assert record["sha256"] == out["sha256"] and record["size"] == ref.stat().st_size
    monkeypatch.setenv(preflight.ADM_REFERENCE_ENV, str(tmp_path / "override.npz"))
    assert preflight.adm_reference_path() == tmp_path / "override.npz"
    monkeypatch.delenv(preflight.ADM_REFERENCE_ENV)
    save(ref, images(9, 1))  # replaced after the check
    from graft_core.presets import get_preset

    line = preflight.check_adm_reference(get_preset("paper"), {"eval"})
    assert "changed since `python -m benchmark.prepare reference` checked it" in line and "\n" not in line
