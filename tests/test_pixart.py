"""Text-to-image grafting (Table 5) on the micro preset: text encoder, layer rule, surgery on PixArt, LoRA stage 2,
the row function end to end, and the errors for missing PixArt-Σ / GenEval / prompt files."""
import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from graft_core.text_to_image import pixart
from graft_core.grafting.plan import GraftPlan
from graft_core.errors import MissingWeightsError
from graft_core.text_to_image.text import (DIGIT_WORDS, EOS, PROMPTS_ENV, HashTextEncoder, PromptTable, digit_prompts,
                             geneval_paths, geneval_score, prompt_digit, read_prompts, summarize_geneval, tokenize)


@pytest.fixture(scope="module")
def micro_pixart_dir(micro_preset, tmp_path_factory):
    """A micro text-to-image teacher trained in seconds (20 steps): real code path, no quality."""
    cfg = pixart.pixart_config(micro_preset)
    folder = tmp_path_factory.mktemp("pixart") / pixart.pixart_key(cfg, micro_preset.data)
    pixart.train_pixart(micro_preset, folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def micro_pixart(micro_pixart_dir):
    return pixart.load_pixart_dir(micro_pixart_dir)


def forward(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 8, 8, generator=g)
    with torch.no_grad():
        return model(x, timestep=torch.tensor([5, 400, 900]), class_labels=torch.tensor([7, 13, model.prompts.null_id]),
                     return_dict=False)[0]


def test_layer_rule_paper_and_scaled():
    assert pixart.pixart_layers(28) == pixart.PAPER_LAYERS  # 0-based, as printed
    assert pixart.pixart_layers(8) == (2, 4, 6, 7)  # interleaved middle + contiguous tail, half of the layers
    for n in range(1, 64):
        layers = pixart.pixart_layers(n)
        assert len(layers) == n // 2 and len(set(layers)) == len(layers) and all(0 <= i < n for i in layers)


def test_text_encoder_is_fixed_and_masks_padding():
    enc = HashTextEncoder(dim=16, max_tokens=6, seed=0)
    assert tokenize("A handwritten 7!", 6) == ["a", "handwritten", "7", EOS]
    assert tokenize("", 6) == [EOS] and len(tokenize("one two three four five six seven", 6)) == 6
    states, mask = enc.encode(["the digit seven", ""])
    again, _ = HashTextEncoder(dim=16, max_tokens=6, seed=0).encode(["the digit seven", ""])
    assert torch.equal(states, again)  # deterministic: hashed word vectors, no training, no download
    assert mask.tolist() == [[1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]] and states[0, 4:].abs().sum() == 0
    other, _ = HashTextEncoder(dim=16, max_tokens=6, seed=1).encode(["the digit seven"])
    assert not torch.equal(states[:1], other)
    prompts = digit_prompts()
    assert prompts[7] == "a handwritten seven" and len(prompts) % 10 == 0
    assert all(DIGIT_WORDS[prompt_digit(i)] in tokenize(p, 8) or str(prompt_digit(i)) in tokenize(p, 8)
               for i, p in enumerate(prompts))
    table = PromptTable(prompts, enc.encode)
    with pytest.raises(ValueError, match="prompt ids must lie"):
        table(torch.tensor([table.null_id + 1]))


def test_teacher_is_cached_and_deterministic(micro_preset, micro_pixart, micro_pixart_dir):
    meta = json.loads((micro_pixart_dir / pixart.META_FILE).read_text())
    assert meta["key"] == micro_pixart_dir.name and len(meta["sha256"]) == 64
    again = pixart.load_pixart_dir(micro_pixart_dir)
    assert torch.equal(forward(micro_pixart), forward(again))
    with pytest.raises(MissingWeightsError, match="python -m graft_core.text_to_image.pixart --preset micro"):
        pixart.load_pixart_teacher(micro_preset.replace(data=dataclasses.replace(micro_preset.data, split_seed=99)),
                                   train_if_missing=False)
    out = forward(micro_pixart)
    assert out.shape == (3, 1, 8, 8) and torch.isfinite(out).all()


def test_teacher_training_resumes_bit_for_bit(micro_preset, micro_pixart_dir, tmp_path, monkeypatch):
    """Interrupted after 12 of 20 steps (checkpoints every 5), a second call finishes with the same weights."""
    from graft_core.models.ema import EMA

    monkeypatch.setattr(pixart, "CHECKPOINT_EVERY", 5)
    original, calls = EMA.update, []

    def interrupted(self, model):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return original(self, model)

    monkeypatch.setattr(EMA, "update", interrupted)
    out = tmp_path / micro_pixart_dir.name
    with pytest.raises(KeyboardInterrupt):
        pixart.train_pixart(micro_preset, out, progress=False)
    resume = tmp_path / f"{out.name}.resume"  # private to the lock holder, kept when the writer dies
    assert (resume / "checkpoint.pt").exists() and not out.exists()
    assert not list(tmp_path.glob(f".{out.name}.tmp-*"))  # the interrupted writer's temp folder is gone
    monkeypatch.setattr(EMA, "update", original)
    meta = pixart.train_pixart(micro_preset, out, progress=False)
    assert meta["sha256"] == json.loads((micro_pixart_dir / pixart.META_FILE).read_text())["sha256"]
    assert not (out / "checkpoint.pt").exists() and not resume.exists()


def test_graft_replaces_only_self_attention(micro_pixart):
    teacher = micro_pixart.transformer
    plan = GraftPlan(site="attn", operator="hyena_x", layers=pixart.pixart_layers(2))
    from graft_core.stages.distill import assemble

    student = assemble(teacher, plan, None, seed=0)
    before = dict(teacher.named_parameters())
    for i, (t_blk, s_blk) in enumerate(zip(teacher.transformer_blocks, student.transformer_blocks)):
        grafted = i in plan.layers
        assert (type(s_blk.attn1).__name__ == "HyenaX") == grafted
        for name, p in s_blk.attn2.named_parameters():  # cross-attention: untouched, bit for bit
            assert torch.equal(p, before[f"transformer_blocks.{i}.attn2.{name}"])
    for name, p in student.named_parameters():
        if ".attn1." not in name:
            assert torch.equal(p, before[name]), name


def test_lora_stage2_trains_only_adapters(micro_preset, micro_pixart, tmp_path):
    """Three LoRA steps: every base weight is bit-identical in the checkpoint; after merging, only attn1/ff change."""
    from graft_core.stages.distill import assemble
    from graft_core.stages.finetune import CHECKPOINT_DIR, finetune
    from graft_core.text_to_image.text import TextConditioned

    pix = pixart.pixart_config(micro_preset)
    plan = GraftPlan(site="attn", operator="hyena_x", layers=(1,))
    student = TextConditioned(assemble(micro_pixart.transformer, plan, None, seed=0),
                              copy.deepcopy(micro_pixart.prompts)).eval()
    s2 = dataclasses.replace(micro_preset.stage2, steps=3, checkpoint_every=3, lora_rank=2, lr=1e-2)
    x0 = torch.rand(12, 1, 8, 8) * 2 - 1
    ids = torch.arange(12) % student.prompts.null_id
    model, metrics = finetune(student, micro_preset.replace(teacher=pix.diffusion()), out_dir=tmp_path, stage2=s2,
                              progress=False, data=(x0, ids, np.arange(12)))
    assert metrics["lora_rank"] == 2 and metrics["trainable_params"] < metrics["total_params"] / 4
    ckpt = torch.load(next((tmp_path / CHECKPOINT_DIR).glob("step_*.pt")), weights_only=False)["model"]
    original = student.state_dict()
    base = {k: v for k, v in ckpt.items() if "lora_" not in k}
    assert base and all("attn2" not in k for k in ckpt if "lora_" in k)
    for key, value in base.items():
        plain = key.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(value, original[plain]), key
    merged = model.state_dict()
    changed = [k for k in original if not torch.equal(original[k], merged[k])]
    assert changed and all(".attn1." in k or ".ff." in k for k in changed)


def test_table5_micro_runs_as_ordinary_steps_through_the_driver(tmp_path):
    """``python -m benchmark.run table5 --preset micro``: teacher, synthetic pairs, the online stage 1 of the grafted
    layers (no capture), LoRA stage 2, eval and latency as their own runs; every row done with finite metrics; a second launch runs nothing."""
    from benchmark.run import main

    args = ["table5", "--preset", "micro", "--executor", "debug", "--results-dir", str(tmp_path), "--quiet"]
    assert main(args) == 0
    runs = tmp_path / "micro" / "runs"
    kinds = {p.name: len(list(p.iterdir())) for p in runs.iterdir()}
    assert kinds == {"teacher": 1, "synthetic": 1, "stage1_online": 1, "stage2": 2, "eval": 4, "latency": 1}
    rows = {r["row"]: r for r in json.loads((tmp_path / "micro" / "table5" / "summary.json").read_text())["rows"]}
    assert set(rows) == {"baseline", "attn-hyena_x-pixart", "attn-hyena_x-pixart-stage1", "control-teacher-lora"}
    for r in rows.values():
        assert r["status"] == "done" and r["metrics"]["fid"] > 0 and 0.0 <= r["extra"]["geneval_or_acc"] <= 1.0
    grafted = rows["attn-hyena_x-pixart"]
    assert grafted["extra"]["layers"] == [1] and grafted["extra"]["long_tokens"] == 256
    assert grafted["extra"]["speedup"] > 0 and grafted["extra"]["speedup_long"] > 0
    assert grafted["extra"]["params_m"] > grafted["extra"]["teacher_params_m"]  # Hyena-X adds its featurizer conv
    assert grafted["extra"]["stage1_val_mse"] is not None
    s2 = [json.loads(p.read_text()) for p in runs.glob("stage2/*/metrics.json")]
    assert all(m["lora_rank"] == 2 and m["trainable_params"] < m["total_params"] for m in s2)
    assert (tmp_path / "micro" / "tables" / "table5.tex").exists()
    again = {str(p): p.stat().st_mtime_ns for p in runs.rglob("metrics.json")}
    assert main(args) == 0
    assert {str(p): p.stat().st_mtime_ns for p in runs.rglob("metrics.json")} == again


def test_missing_pixart_sigma_weights_raise_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="huggingface-cli download PixArt-alpha/PixArt-Sigma-XL-2-2K-MS"):
        pixart.load_paper_teacher(pixart.PAPER_PIXART, prompts=["a cat"])
    monkeypatch.delenv(PROMPTS_ENV, raising=False)
    with pytest.raises(MissingWeightsError, match=PROMPTS_ENV):
        read_prompts()


def test_missing_geneval_raises_before_any_work(monkeypatch, tmp_path):
    monkeypatch.delenv("GRAFTBENCH_GENEVAL", raising=False)
    monkeypatch.delenv("GRAFTBENCH_GENEVAL_DETECTOR", raising=False)
    calls = []
    with pytest.raises(MissingWeightsError, match="GRAFTBENCH_GENEVAL"):
        geneval_score(lambda prompts, seed: calls.append(prompts), out_dir=tmp_path)
    assert not calls


def test_geneval_adapter_with_a_stub_evaluator(tmp_path):
    """The adapter's folder layout, subprocess call and score on a stand-in GenEval checkout (no detector)."""
    root, detector = tmp_path / "geneval", tmp_path / "detector"
    (root / "evaluation").mkdir(parents=True)
    (root / "prompts").mkdir()
    detector.mkdir()
    (detector / "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth").write_bytes(b"stub")
    meta = [{"tag": "single_object", "prompt": "a photo of a cat"}, {"tag": "counting", "prompt": "two dogs"}]
    (root / "prompts" / "evaluation_metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    # stub: an image is "correct" when its mean brightness is above 100
    (root / "evaluation" / "evaluate_images.py").write_text(
        "import json, os, sys\nimport numpy as np\nfrom PIL import Image\n"
        "d, out = sys.argv[1], sys.argv[sys.argv.index('--outfile') + 1]\n"
        "rows = []\n"
        "for sub in sorted(os.listdir(d)):\n"
        "    m = json.load(open(os.path.join(d, sub, 'metadata.jsonl')))\n"
        "    for f in sorted(os.listdir(os.path.join(d, sub, 'samples'))):\n"
        "        img = np.asarray(Image.open(os.path.join(d, sub, 'samples', f)))\n"
        "        rows.append({'tag': m['tag'], 'prompt': m['prompt'], 'correct': bool(img.mean() > 100)})\n"
        "open(out, 'w').write(''.join(json.dumps(r) + '\\n' for r in rows))\n")
    assert geneval_paths(root, detector) == (root, detector)

    def generate(prompts, seed):  # cat prompt: bright images; dog prompt: one bright of four
        value = 200 if "cat" in prompts[0] else 0
        images = np.full((len(prompts), 8, 8, 3), value, dtype=np.uint8)
        images[0] = 255
        return images

    score = geneval_score(generate, out_dir=tmp_path / "out", root=root, detector=detector)
    assert score["geneval_tasks"] == {"single_object": 100.0, "counting": 25.0}
    assert score["geneval_overall"] == 62.5 and score["geneval_images"] == 8
    assert sorted(p.name for p in (tmp_path / "out" / "images" / "00001" / "samples").iterdir()) == [
        "0000.png", "0001.png", "0002.png", "0003.png"]
    assert summarize_geneval(tmp_path / "out" / "results.jsonl") == score
