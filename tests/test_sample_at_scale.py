"""Sharded, resumable sampling → ADM .npz, with a random-init micro DiT (learned σ) and a random-init micro VAE."""
import numpy as np
import pytest
import torch

from graft_core.evaluation import sample_at_scale as sas
from graft_core.errors import SettingsMismatch
from graft_core.presets import TeacherConfig
from graft_core.evaluation.sampler import make_labels
from graft_core.models.teacher import build_dit

RES = 32
CFG = TeacherConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                    sample_size=RES // 8, patch_size=2, num_classes=3)
PLAN = dict(num_samples=10, shard_size=4, steps=4, guidance_scale=1.5, scheduler="ddpm", batch_size=3, progress=False)


def micro_vae():
    from benchmark.fakes.prerequisites import sd_vae

    return sd_vae(8, layers_per_block=1, norm_num_groups=4, sample_size=RES)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    dit = build_dit(CFG).eval()
    for p in dit.parameters():  # adaLN-Zero starts at zero output: give the blocks something to do
        torch.nn.init.normal_(p, std=0.05)
    return dit, micro_vae()


def run(models, out, **kw):
    dit, vae = models
    return sas.sample_to_npz(dit, CFG, out, vae=vae, **{**PLAN, **kw})


def test_merged_npz_has_the_adm_layout(models, tmp_path):
    path = run(models, tmp_path / "s", rank=0, world_size=1)
    with np.load(path) as z:
        images, labels = z["arr_0"], z["arr_1"]
    assert images.shape == (10, RES, RES, 3) and images.dtype == np.uint8
    assert labels.tolist() == make_labels(10, 3, "uniform", seed=0).tolist()  # i.i.d. uniform, as ADM/DiT
    assert images.std() > 0
    from graft_core.evaluation.adm_eval import batch_info, iter_images

    assert batch_info(path)["num_images"] == 10
    assert np.array_equal(np.concatenate(list(iter_images(path, batch_size=4))), images)  # ADM-style streaming read


def test_number_of_workers_does_not_change_the_samples(models, tmp_path):
    one = run(models, tmp_path / "one", rank=0, world_size=1)
    assert run(models, tmp_path / "two", rank=0, world_size=2) is None  # shard 1 is still missing
    two = run(models, tmp_path / "two", rank=1, world_size=2)
    with np.load(one) as a, np.load(two) as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])


def test_resume_recomputes_only_the_killed_shard(models, tmp_path, monkeypatch):
    out = tmp_path / "s"
    merged = run(models, out, rank=0, world_size=1)
    first = merged.read_bytes()
    npz1, done1 = sas.shard_paths(out, 1)
    mtimes = {s: sas.shard_paths(out, s)[0].stat().st_mtime_ns for s in (0, 2)}
    done1.unlink()  # killed after writing (part of) the shard, before its DONE marker
    npz1.write_bytes(npz1.read_bytes()[:100])
    calls = []
    real = sas.sample
    monkeypatch.setattr(sas, "sample", lambda model, y, **kw: calls.append(len(y)) or real(model, y, **kw))
    report = sas.sample_shards(models[0], CFG, out, vae=models[1], rank=0, world_size=1, **PLAN)
    assert report["sampled"] == [1] and report["skipped"] == [0, 2] and calls == [4]
    assert {s: sas.shard_paths(out, s)[0].stat().st_mtime_ns for s in (0, 2)} == mtimes
    assert sas.merge_shards(out).read_bytes() == first  # the resumed shard reproduces the lost one bit for bit


def test_merge_needs_every_shard(models, tmp_path):
    out = tmp_path / "s"
    sas.sample_shards(models[0], CFG, out, vae=models[1], rank=0, world_size=3, **PLAN)  # shard 0 of 0..2
    assert sas.missing_shards(out) == [1, 2]
    with pytest.raises(FileNotFoundError, match=r"shards \[1, 2\]"):
        sas.merge_shards(out)


def test_another_plan_in_the_same_folder_is_refused(models, tmp_path):
    run(models, tmp_path / "s", rank=0, world_size=1)
    with pytest.raises(SettingsMismatch, match="guidance_scale"):
        run(models, tmp_path / "s", rank=0, world_size=1, guidance_scale=4.0)


def test_seeds_per_shard():
    assert sas.shard_seed(0, 1) - sas.shard_seed(0, 0) == 1000 and sas.shard_seed(1, 0) == 1_000_000
    with pytest.raises(ValueError, match="1000 batches"):
        sas.sampling_plan(CFG, num_samples=10, shard_size=64_000, steps=1, guidance_scale=1.0, scheduler="ddpm",
                          global_seed=0, batch_size=64, label_mode="uniform")


def test_pixel_space_models_need_no_vae(tmp_path):
    cfg = TeacherConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1,
                        sample_size=8, patch_size=2, num_classes=3)
    path = sas.sample_to_npz(build_dit(cfg).eval(), cfg, tmp_path / "px", vae=None, **{**PLAN, "scheduler": "ddim"},
                             rank=0, world_size=1)
    with np.load(path) as z:
        assert z["arr_0"].shape == (10, 8, 8, 3)  # grayscale repeated to RGB for the Inception-style extractors


def test_cli_samples_a_saved_model_and_reports_missing_weights(tmp_path, capsys, monkeypatch):
    from graft_core.presets import get_preset

    micro = get_preset("micro")
    build_dit(micro.teacher).save_pretrained(tmp_path / "dit")
    sas.main(["--out", str(tmp_path / "s"), "--preset", "micro", "--model", str(tmp_path / "dit"),
              "--num-samples", "6", "--shard-size", "3"])
    with np.load(tmp_path / "s" / sas.MERGED) as z:
        assert z["arr_0"].shape == (6, 8, 8, 3)
    capsys.readouterr()  # drop the progress bars
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    cfg_dir = tmp_path / "paper-dit"
    build_dit(CFG).save_pretrained(cfg_dir)  # a model is given, the SD-VAE is not in the (empty) HF cache
    with pytest.raises(SystemExit) as exit_:
        sas.main(["--out", str(tmp_path / "p"), "--preset", "paper", "--model", str(cfg_dir)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "huggingface-cli download stabilityai/sd-vae-ft-ema" in err


def test_prepare_samples_takes_the_slurm_array_task_as_its_shard(tmp_path, monkeypatch):
    """The engine reads no Slurm variable; ``python -m benchmark.prepare samples`` passes the array task on."""
    from benchmark.prepare import main as prepare
    from graft_core.presets import get_preset

    build_dit(get_preset("micro").teacher).save_pretrained(tmp_path / "dit")
    args = ["samples", "--out", str(tmp_path / "s"), "--preset", "micro", "--model", str(tmp_path / "dit"),
            "--num-samples", "6", "--shard-size", "3"]
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")  # --array=1-2: the second task → shard 1 of 2
    assert prepare(args) == 0
    assert sas.missing_shards(tmp_path / "s") == [0]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert prepare(args) == 0
    with np.load(tmp_path / "s" / sas.MERGED) as z:
        assert z["arr_0"].shape == (6, 8, 8, 3)
