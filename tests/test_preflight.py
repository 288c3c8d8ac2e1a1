"""Preflight checks the content of every paper prerequisite and names the command that makes a missing one."""
import json
import shutil

import pytest
from diffusers import AutoencoderKL

from benchmark import fakes
from benchmark.preflight import problems
from graft_core import imagenet as inet
from graft_core.presets import get_preset

KINDS = {"teacher", "capture", "stage1", "stage2", "eval"}


@pytest.fixture(scope="module")
def prereqs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prereqs")
    paths = fakes.make_all(root, classes=2, per_class=4, reference_images=4)
    vae = AutoencoderKL.from_pretrained(fakes._snapshot(paths.hf_home, fakes.VAE_REPO)).eval()
    out = root / "latents"
    for split, per_class in (("train", 4), ("val", 2)):
        src = fakes.make_imagefolder(root / "img" / split, classes=2, per_class=per_class, seed=len(split))
        inet.encode_imagenet(src, out, vae=vae, vae_name="fake", split=split, shard_size=4, resolution=256,
                             num_workers=0, batch_size=4, progress=False, shard_index=0, num_shards=1)
    inet.make_subsets(out, per_class={"stage1": 1, "heldout": 1, "pct10": 2})
    return paths, out


@pytest.fixture
def env(prereqs, monkeypatch):
    paths, out = prereqs
    for k, v in paths.environ().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GRAFTBENCH_IMAGENET", str(out))
    monkeypatch.setenv("GRAFTBENCH_ADM_REFERENCE", str(paths.reference))
    return paths, out


def paper():
    return {"paper": (get_preset("paper"), KINDS)}


def test_complete_fake_prerequisites_pass(env):
    assert problems(paper()) == []
    assert problems({"paper-smoke": (get_preset("paper-smoke"), KINDS)}) == []


def test_each_missing_prerequisite_is_one_line_naming_its_fix(env, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "nohf"))
    monkeypatch.delenv("GRAFTBENCH_INCEPTION_WEIGHTS")
    monkeypatch.setenv("GRAFTBENCH_ADM_REFERENCE", str(tmp_path / "none.npz"))
    monkeypatch.setenv("GRAFTBENCH_IMAGENET", str(tmp_path / "nolatents"))
    lines = problems(paper())
    assert len(lines) == 5 and all("\n" not in line for line in lines), lines
    dit, vae, latents, inception, ref = lines
    assert "facebook/DiT-XL-2-256" in dit and "huggingface-cli download facebook/DiT-XL-2-256" in dit
    assert "huggingface-cli download stabilityai/sd-vae-ft-ema" in vae
    assert "python -m benchmark.prepare imagenet" in latents and "benchmark.prepare subsets" in latents
    assert "GRAFTBENCH_INCEPTION_WEIGHTS" in inception and "torch-fidelity" in inception
    assert "VIRTUAL_imagenet256_labeled.npz" in ref
    # a plan without evaluation does not need the Inception weights or the reference batch
    assert len(problems({"paper": (get_preset("paper"), {"teacher", "capture", "stage1"})})) == 3


def test_placeholders_are_caught(env, monkeypatch, tmp_path):
    paths, out = env
    empty = tmp_path / "inception.pth"
    empty.write_bytes(b"")
    monkeypatch.setenv("GRAFTBENCH_INCEPTION_WEIGHTS", str(empty))
    junk = tmp_path / "latents"
    shutil.copytree(out, junk)
    (junk / "subsets" / "subsets.json").write_text("{junk")
    monkeypatch.setenv("GRAFTBENCH_IMAGENET", str(junk))
    hf = tmp_path / "hf"
    shutil.copytree(paths.hf_home, hf)
    snap = fakes._snapshot(hf, fakes.DIT_REPO) / "transformer"
    (snap / "diffusion_pytorch_model.safetensors").unlink()  # an empty snapshot: config only
    monkeypatch.setenv("HF_HOME", str(hf))
    lines = problems(paper())
    assert any("no weights file" in line for line in lines)
    assert any("not a subsets manifest" in line for line in lines)
    assert any("not a loadable state dict" in line for line in lines)


def test_a_checkpoint_of_another_structure_is_refused(env, monkeypatch, tmp_path):
    fakes.make_dit(tmp_path / "hf", num_layers=12)
    shutil.copytree(env[0].hf_home / "hub" / "models--stabilityai--sd-vae-ft-ema",
                    tmp_path / "hf" / "hub" / "models--stabilityai--sd-vae-ft-ema")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (line,) = problems(paper())
    assert "num_layers 12 (preset: 28)" in line


def test_missing_latent_shards_and_subsets_are_named(env, monkeypatch, tmp_path):
    _, out = env
    copy = tmp_path / "latents"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "subsets" / "subsets.json").read_text())
    del manifest["pct10"]
    (copy / "subsets" / "subsets.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("GRAFTBENCH_IMAGENET", str(copy))
    (line,) = problems(paper())
    assert "subset pct10 is not prepared" in line
    shutil.copytree(out, tmp_path / "l2")
    for done in (tmp_path / "l2" / "train" / "shards").glob("DONE_*"):
        done.unlink()
    monkeypatch.setenv("GRAFTBENCH_IMAGENET", str(tmp_path / "l2"))
    (line,) = problems(paper())
    assert "latent shard(s)" in line and "resumes" in line


def test_the_teacher_loader_refuses_another_structure_and_takes_the_width(prereqs, tmp_path):
    """Loaded in a subprocess: huggingface_hub reads HF_HOME once, at import."""
    import os
    import subprocess
    import sys

    code = ("from graft_core.presets import get_preset; from graft_core.teacher import load_teacher, effective_teacher;"
            "p = get_preset('paper-smoke'); m = load_teacher(p, train_if_missing=False);"
            "q = effective_teacher(p, m); print(q.teacher.hidden_size, q.teacher.num_layers)")
    env = {**os.environ, **prereqs[0].environ()}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["32", "28"]  # width from the checkpoint (2 × 16), depth from the preset
    fakes.make_dit(tmp_path / "hf", num_layers=12)
    env["HF_HOME"] = str(tmp_path / "hf")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "num_layers 12 (preset: 28)" in out.stderr
