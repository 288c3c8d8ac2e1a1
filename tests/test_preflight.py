"""Preflight checks the content of every paper prerequisite and names the command that makes a missing one."""
import json
import shutil

import pytest

from benchmark.fakes import prerequisites as fakes
from benchmark.preflight import problems
from graft_core.presets import get_preset

KINDS = {"teacher", "capture", "stage1", "stage2", "eval"}


@pytest.fixture(scope="module")
def prereqs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prereqs")
    paths = fakes.make_all(root, classes=2, per_class=4, reference_images=4)
    return paths, fakes.encode_latents(root, paths.hf_home)


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

    code = ("from graft_core.presets import get_preset; from graft_core.models.teacher import load_teacher, effective_teacher;"
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


# ---------------------------------------------------------------------------------------------- text to image (table5)
T2I_KINDS = {"t2i:encode", "t2i:teacher", "t2i:synthetic", "t2i:capture", "t2i:stage1", "t2i:stage2", "t2i:sample",
             "t2i:eval", "t2i:latency"}
PIXART_REPOS = (fakes.PIXART_REPO, fakes.PIXART_PIPELINE_REPO)


def test_complete_fake_prerequisites_pass_with_t2i_rows(env):
    """make_all's set covers the DiT rows and the Table-5 rows of one launch."""
    assert problems({"paper": (get_preset("paper"), KINDS | T2I_KINDS)}) == []


@pytest.fixture(scope="module")
def t2i_prereqs(tmp_path_factory):
    """Only what the t2i rows need: PixArt-Σ's fakes (no DiT, no ImageNet), the prompt file, a GenEval checkout."""
    root = tmp_path_factory.mktemp("t2i-prereqs")
    fakes.make_pixart(root / "hf")
    return {"hf": root / "hf", "prompts": fakes.make_prompts(root / "prompts.txt"),
            "geneval": fakes.make_geneval(root / "geneval")}


def _repo_dir(hf, repo):
    return hf / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / fakes.FAKE_REVISION


@pytest.fixture
def t2i_env(t2i_prereqs, monkeypatch, tmp_path):
    """A private copy of the fakes (tests break pieces of it) and the environment pointing at it."""
    hf = tmp_path / "hf"
    for repo in PIXART_REPOS:
        name = f"models--{repo.replace('/', '--')}"
        shutil.copytree(t2i_prereqs["hf"] / "hub" / name, hf / "hub" / name)
    prompts = tmp_path / "prompts.txt"
    shutil.copy(t2i_prereqs["prompts"], prompts)
    geneval = tmp_path / "geneval"
    shutil.copytree(t2i_prereqs["geneval"], geneval)
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("GRAFTBENCH_PIXART_PROMPTS", str(prompts))
    monkeypatch.setenv("GRAFTBENCH_GENEVAL", str(geneval))
    monkeypatch.setenv("GRAFTBENCH_GENEVAL_DETECTOR", str(geneval / "models"))
    monkeypatch.setenv("GRAFTBENCH_GENEVAL_PYTHON", str(geneval / "env" / "bin" / "python"))  # its (fake) environment
    # nothing of the DiT/ImageNet side: a t2i-only plan must not ask for it
    monkeypatch.delenv("GRAFTBENCH_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("GRAFTBENCH_IMAGENET", str(tmp_path / "nolatents"))
    monkeypatch.setenv("GRAFTBENCH_ADM_REFERENCE", str(tmp_path / "none.npz"))
    return {"hf": hf, "transformer": _repo_dir(hf, fakes.PIXART_REPO) / "transformer",
            "pipe": _repo_dir(hf, fakes.PIXART_PIPELINE_REPO), "prompts": prompts, "geneval": geneval}


def t2i_plan(name="paper", kinds=T2I_KINDS):
    return {name: (get_preset(name), set(kinds))}


def test_complete_t2i_fakes_pass_without_any_dit_prerequisite(t2i_env):
    assert problems(t2i_plan()) == []
    assert problems(t2i_plan("paper-smoke")) == []
    # the small presets train their PixArt here: nothing to check, even with nothing present
    for name in ("tiny", "micro"):
        assert problems(t2i_plan(name)) == []


def _edit_json(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _shard_t5(e):
    """Split the T5 weights as the real (sharded) text_encoder is, then lose one shard."""
    folder = e["pipe"] / "text_encoder"
    weights = folder / "model.safetensors"
    shutil.copy(weights, folder / "model-00001-of-00002.safetensors")
    weights.unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))


BREAKS = {  # name → (break the fakes, text the one line must hold)
    "transformer config missing": (lambda e: (e["transformer"] / "config.json").unlink(),
                                   "huggingface-cli download PixArt-alpha/PixArt-Sigma-XL-2-2K-MS"),
    "transformer of another structure": (lambda e: _edit_json(e["transformer"] / "config.json", num_layers=12),
                                         "num_layers 12 (expected 28)"),
    "transformer weights missing": (lambda e: (e["transformer"] / "diffusion_pytorch_model.safetensors").unlink(),
                                    "no weights file in transformer/"),
    "transformer weights empty": (lambda e: (e["transformer"] / "diffusion_pytorch_model.safetensors").write_bytes(b""),
                                  "no weights file in transformer/"),
    "T5 encoder missing": (lambda e: shutil.rmtree(e["pipe"] / "text_encoder"), "T5 encoder: "),
    "T5 of another width": (lambda e: _edit_json(e["pipe"] / "text_encoder" / "config.json", d_model=48),
                            "d_model 48 differs from the PixArt-Σ transformer's caption_channels 32"),
    "T5 weights empty": (lambda e: (e["pipe"] / "text_encoder" / "model.safetensors").write_bytes(b""),
                         "no weights file in text_encoder/"),
    "T5 shard missing": (_shard_t5, "text_encoder/model-00002-of-00002.safetensors of model.safetensors.index.json "
                                    "is missing"),
    "tokenizer missing": (lambda e: (e["pipe"] / "tokenizer" / "spiece.model").unlink(),
                          "tokenizer/spiece.model is not in the Hugging Face cache"),
    "tokenizer junk": (lambda e: (e["pipe"] / "tokenizer" / "spiece.model").write_bytes(b"junk" * 10),
                       "is not a sentencepiece model"),
    "VAE missing": (lambda e: shutil.rmtree(e["pipe"] / "vae"), "PixArt-Σ VAE: "),
    "VAE of another structure": (lambda e: _edit_json(e["pipe"] / "vae" / "config.json", latent_channels=16),
                                 "latent_channels=16"),
    "VAE weights missing": (lambda e: (e["pipe"] / "vae" / "diffusion_pytorch_model.safetensors").unlink(),
                            "no weights file in vae/"),
    "prompt file missing": (lambda e: e["prompts"].unlink(), "set GRAFTBENCH_PIXART_PROMPTS"),
    "prompt file empty": (lambda e: e["prompts"].write_text("\n  \n"), "has no prompt"),
    "GenEval missing": (lambda e: shutil.rmtree(e["geneval"] / "evaluation"), "git clone https://github.com/djghosh13"),
    "GenEval detector missing": (lambda e: shutil.rmtree(e["geneval"] / "models"), "download_models.sh"),
    "GenEval detector empty": (lambda e: (e["geneval"] / "models" / fakes.GENEVAL_DETECTOR_FILE).write_bytes(b""),
                               "are empty (placeholder?)"),
    "GenEval metadata junk": (lambda e: (e["geneval"] / "prompts" / "evaluation_metadata.jsonl").write_text("{junk\n"),
                              "evaluation_metadata.jsonl does not parse"),
    "GenEval environment without mmdet": (lambda e: shutil.rmtree(e["geneval"] / "env" / "site" / "mmdet"),
                                           "mmdet does not import"),
    "GenEval environment with mmdet 3": (
        lambda e: (e["geneval"] / "env" / "site" / "mmdet" / "__init__.py").write_text('__version__ = "3.1.0"\n'),
        "needs mmdet 2.x"),
    "GenEval environment without the detector config": (
        lambda e: shutil.rmtree(e["geneval"] / "env" / "site" / "configs"), "configs/mask2former/"),
    "GenEval environment without CLIP weights": (
        lambda e: shutil.rmtree(e["geneval"] / "env" / "hf"), "ViT-L-14 'openai' weights are not in"),
    "GenEval metadata without prompt": (
        lambda e: (e["geneval"] / "prompts" / "evaluation_metadata.jsonl").write_text('{"tag": "colors"}\n'),
        "entry 1 of"),
}


@pytest.mark.parametrize("piece", sorted(BREAKS))
def test_each_missing_t2i_piece_is_one_line_naming_its_fix(t2i_env, piece):
    breaks, text = BREAKS[piece]
    breaks(t2i_env)
    lines = problems(t2i_plan())
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert text in lines[0], lines[0]


def test_missing_tokenizer_packages_are_one_line(t2i_env, monkeypatch):
    from graft_core.text_to_image import pixart

    monkeypatch.setattr(pixart, "missing_tokenizer_packages", lambda: ["sentencepiece", "protobuf"])
    (line,) = problems(t2i_plan())
    assert "pip install sentencepiece protobuf" in line


def test_vae_and_geneval_are_needed_only_by_the_t2i_eval(t2i_env, monkeypatch):
    shutil.rmtree(t2i_env["pipe"] / "vae")
    monkeypatch.delenv("GRAFTBENCH_GENEVAL")
    monkeypatch.delenv("GRAFTBENCH_GENEVAL_DETECTOR")
    assert len(problems(t2i_plan())) == 2
    assert problems(t2i_plan(kinds=T2I_KINDS - {"t2i:eval", "t2i:sample"})) == []


def test_geneval_python_must_be_an_interpreter(t2i_env, monkeypatch, tmp_path):
    monkeypatch.setenv("GRAFTBENCH_GENEVAL_PYTHON", str(tmp_path / "no-python"))
    (line,) = problems(t2i_plan())
    assert "GRAFTBENCH_GENEVAL_PYTHON" in line and "not an executable interpreter" in line
