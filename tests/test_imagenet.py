"""ImageNet → SD-VAE latents and the fixed subsets, on a fake ImageFolder tree and a random-init micro VAE."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graft_core.data import imagenet as inet
from graft_core.errors import SettingsMismatch

RES = 32  # pixels; the micro VAE below downsamples 8× like the SD-VAE → 4×4 latents


def make_fake_imagenet(root: Path) -> Path:
    """3 classes × 3 images of odd sizes and modes (RGB JPEG, grayscale PNG, RGBA PNG, one 2× too big)."""
    rng = np.random.default_rng(0)
    sizes = [(37, 53), (61, 41), (150, 70)]
    for c in ("n0003", "n0001", "n0002"):
        (root / c).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            if i == 0:
                img.save(root / c / f"{c}_{i}.JPEG")
            else:
                img.convert("L" if i == 1 else "RGBA").save(root / c / f"{c}_{i}.png")
    (root / "n0001" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def vae():
    from benchmark.fakes.prerequisites import sd_vae

    return sd_vae(8, layers_per_block=1, norm_num_groups=4, sample_size=RES)


@pytest.fixture
def fake_imagenet(tmp_path):
    return make_fake_imagenet(tmp_path / "imagenet" / "train")


def encode(src, out, vae, **kw):
    kw = {"shard_size": 4, "resolution": RES, "num_workers": 0, "batch_size": 3, "progress": False,
          "shard_index": 0, "num_shards": 1, "vae_name": "micro", **kw}
    return inet.encode_imagenet(src, out, vae=vae, **kw)


def test_center_crop_matches_adm_shapes():
    for w, h in [(37, 53), (61, 41), (150, 70), (600, 257)]:
        img = Image.fromarray(np.zeros((h, w, 3), np.uint8))
        assert inet.center_crop_arr(img, RES).shape == (RES, RES, 3)
    # centre crop: a white vertical band in the middle of a wide image survives, the black borders are cut
    arr = np.zeros((32, 96, 3), np.uint8)
    arr[:, 40:56] = 255
    out = inet.center_crop_arr(Image.fromarray(arr), 32)
    assert out[:, 8:24].min() == 255 and out[:, :6].max() == 0


def test_index_is_sorted_and_hashed(fake_imagenet):
    index = inet.scan_image_folder(fake_imagenet)
    assert index.classes == ("n0001", "n0002", "n0003")
    assert list(index.files) == sorted(index.files) and len(index.files) == 9  # notes.txt is skipped
    assert index.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert index.hash == inet.scan_image_folder(fake_imagenet).hash


def test_wrong_layouts_are_one_line_errors(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.JPEG")
    with pytest.raises(inet.DataLayoutError, match="no class sub-folders"):
        inet.scan_image_folder(flat)
    (tmp_path / "empty" / "n01").mkdir(parents=True)
    with pytest.raises(inet.DataLayoutError, match="no images"):
        inet.scan_image_folder(tmp_path / "empty")
    with pytest.raises(inet.DataLayoutError, match="not a folder"):
        inet.scan_image_folder(tmp_path / "missing")


def test_latents_do_not_depend_on_sharding(fake_imagenet, tmp_path, vae):
    one = encode(fake_imagenet, tmp_path / "a", vae, shard_size=9, batch_size=9)
    assert one["encoded"] == [0] and one["num_images"] == 9
    for task in (0, 1):  # two Slurm array tasks, shard files of 4
        encode(fake_imagenet, tmp_path / "b", vae, shard_index=task, num_shards=2)
    a, la = inet.load_latents(tmp_path / "a" / "train")
    b, lb = inet.load_latents(tmp_path / "b" / "train")
    assert a.shape == (9, 4, RES // 8, RES // 8) and torch.equal(la, lb)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    flips = np.concatenate([np.load(inet.shard_files(tmp_path / "b" / "train", s)["flips"]) for s in range(3)])
    assert 0 < flips.sum() < 9  # one random flip per image, seeded per image
    sub, _ = inet.load_latents(tmp_path / "b" / "train", np.array([7, 2, 5]))
    torch.testing.assert_close(sub, a[[7, 2, 5]], atol=1e-5, rtol=1e-5)


def test_resume_recomputes_only_the_unfinished_shard(fake_imagenet, tmp_path, vae, monkeypatch):
    out = tmp_path / "out"
    first = encode(fake_imagenet, out, vae)
    assert first["encoded"] == [0, 1, 2]
    split = out / "train"
    before = {s: inet.shard_files(split, s)["latents"].stat().st_mtime_ns for s in range(3)}
    reference, _ = inet.load_latents(split)
    inet.shard_files(split, 1)["DONE"].unlink()  # a job killed after writing the latents, before its marker
    calls = []
    real = inet.encode_batch
    monkeypatch.setattr(inet, "encode_batch", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    again = encode(fake_imagenet, out, vae)
    assert again["encoded"] == [1] and again["skipped"] == [0, 2]
    assert sum(calls) == 4  # only shard 1's four images went through the VAE
    after = {s: inet.shard_files(split, s)["latents"].stat().st_mtime_ns for s in range(3)}
    assert after[0] == before[0] and after[2] == before[2]
    torch.testing.assert_close(inet.load_latents(split)[0], reference)
    assert encode(fake_imagenet, out, vae)["encoded"] == []  # everything done: nothing to do


def test_other_settings_in_the_same_folder_are_refused(fake_imagenet, tmp_path, vae):
    encode(fake_imagenet, tmp_path / "out", vae)
    with pytest.raises(SettingsMismatch, match="seed"):
        encode(fake_imagenet, tmp_path / "out", vae, seed=1)


def test_missing_shards_are_reported(fake_imagenet, tmp_path, vae):
    from benchmark.hints import with_hint

    encode(fake_imagenet, tmp_path / "out", vae, shard_index=0, num_shards=2)  # shards 0 and 2 only
    with pytest.raises(FileNotFoundError, match=r"shards \[1\]") as err:
        inet.load_latents(tmp_path / "out" / "train")
    assert isinstance(err.value, inet.NotPrepared) and err.value.what == "shards" and err.value.missing == (1,)
    assert "benchmark" not in str(err.value)  # the engine states the facts; the driver names the command
    assert with_hint(err.value).endswith("run `python -m benchmark.prepare imagenet` (it resumes)")


def test_the_prepare_cli_passes_the_slurm_array_task_as_the_shard():
    from benchmark.prepare import shard_task

    assert shard_task(None, None, env={}) == (None, None)
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert shard_task(None, None, env=env) == (2, 4)  # --array=1-4 → 0-based task 2
    assert shard_task(1, 2, env=env) == (1, 2)  # the options win
    inet.check_shard_task(3, 4)
    with pytest.raises(ValueError):
        inet.check_shard_task(4, 4)


def test_a_missing_index_is_a_typed_error_and_the_driver_adds_the_command(tmp_path):
    from benchmark.hints import with_hint

    with pytest.raises(inet.NotPrepared) as no_index:
        inet.make_subsets(tmp_path / "empty")
    assert no_index.value.what == "index" and "benchmark" not in str(no_index.value)
    assert isinstance(no_index.value, inet.DataLayoutError)  # still a user error for benchmark.prepare
    assert "python -m benchmark.prepare imagenet --src PATH" in with_hint(no_index.value)


def test_subsets_are_nested_stratified_and_hashed(fake_imagenet, tmp_path):
    out = tmp_path / "out"
    inet.load_or_build_index(fake_imagenet, out / "train")
    manifest = inet.make_subsets(out, per_class={"stage1": 1, "pct10": 2, "pct20": 3})
    assert {k: v["count"] for k, v in manifest.items()} == {"stage1": 3, "pct10": 6, "pct20": 9}
    index = inet.read_index(out / "train" / "index")
    s1, entry = inet.load_subset(out, "stage1")
    s10, _ = inet.load_subset(out, "pct10")
    assert np.bincount(index.labels[s10]).tolist() == [2, 2, 2]
    assert set(s1) <= set(s10)  # nested
    assert entry["sha256"] == inet.list_hash([index.files[i] for i in s1])
    assert inet.make_subsets(out, per_class={"stage1": 1})["stage1"]["sha256"] == entry["sha256"]  # reproducible
    assert inet.make_subsets(out, seed=1, per_class={"stage1": 1})["stage1"]["sha256"] != entry["sha256"]
    (out / "subsets" / "pct10.txt").write_text("n0001/n0001_0.JPEG\n")
    with pytest.raises(ValueError, match="modified"):
        inet.load_subset(out, "pct10")
    with pytest.raises(ValueError, match="asks for 4 per class"):
        inet.make_subsets(out, per_class={"big": 4})


def test_paper_subset_sizes():
    assert inet.SUBSETS["pct10"][1] * 1000 == 128_000 and inet.SUBSETS["stage1"][1] * 1000 == 8_000
    assert [inet.subset_name(f) for f in (0.0063, 0.05, 0.10, 0.20, 0.25)] == \
        ["pct0.63", "pct5", "pct10", "pct20", "pct25"]
    for name, (_, k) in inet.SUBSETS.items():
        if name.startswith("pct"):
            assert k == round(float(name[3:]) / 100 * inet.NOMINAL_PER_CLASS)


def test_real_sd_vae_config_builds():
    """The sd-vae-ft-ema architecture (config values of the Hub model) builds offline and maps 64 px → 8×8×4."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        norm_num_groups=32, sample_size=256, scaling_factor=inet.LATENT_SCALE).eval()
    assert 83e6 < sum(p.numel() for p in vae.parameters()) < 84.5e6
    with torch.inference_mode():
        z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert z.shape == (1, 4, 8, 8)


def test_missing_vae_weights_is_a_one_line_error(tmp_path, monkeypatch):
    from graft_core.errors import MissingWeightsError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="huggingface-cli download stabilityai/sd-vae-ft-ema") as err:
        inet.load_vae(tmp_path / "no-such-vae")
    assert "\n" not in str(err.value) and "--vae PATH" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------------
# CLI: python -m benchmark.prepare
# ---------------------------------------------------------------------------------------------------------------------


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    from benchmark.prepare import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.JPEG")
    assert main(["imagenet", "--src", str(flat), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no class sub-folders" in err
    good = make_fake_imagenet(tmp_path / "good")
    assert main(["imagenet", "--src", str(good), "--out", str(tmp_path / "o"), "--vae", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "huggingface-cli download" in err


def test_cli_end_to_end_with_a_local_vae(fake_imagenet, tmp_path, vae, capsys):
    """`--vae PATH` to a saved (random) VAE: encode in two array tasks, then the subsets."""
    from benchmark.prepare import main

    vae.save_pretrained(tmp_path / "vae")
    out = tmp_path / "out"
    base = ["imagenet", "--src", str(fake_imagenet), "--out", str(out), "--vae", str(tmp_path / "vae"),
            "--resolution", str(RES), "--shard-size", "4", "--num-workers", "0", "--quiet", "--device", "cpu"]
    for task in ("0", "1"):
        assert main(base + ["--num-shards", "2", "--shard-index", task]) == 0
    assert inet.done_shards(out / "train") == [0, 1, 2]
    assert main(["subsets", "--out", str(out), "--per-class", "stage1=1", "--per-class", "pct10=2"]) == 0
    manifest = json.loads((out / "subsets" / "subsets.json").read_text())
    assert manifest["stage1"]["count"] == 3 and manifest["pct10"]["count"] == 6
    latents, labels, indices, sha = inet.subset_latents("pct10", out)
    assert latents.shape == (6, 4, RES // 8, RES // 8) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert sha == manifest["pct10"]["sha256"] and len(indices) == 6


def test_cli_subprocess_wrong_layout(tmp_path):
    """The real entry point: one line on stderr, exit code 2 (no VAE is loaded for a bad folder)."""
    (tmp_path / "flat").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRAFTBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "benchmark.prepare", "imagenet", "--src", str(tmp_path / "flat")],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
