"""Fake paper-preset prerequisites of the paper's *structure*, made by the project's own code.

Why: these machines have no internet and no GPU, so the paper path can only be rehearsed on stand-ins. Each stand-in has
exactly the structure the paper code depends on (and checks) — a Hugging Face cache whose DiT has 28 blocks, 32×32×4
latents, patch 2 (256 tokens), learned σ (8 output channels) and 1000 classes, at a reduced width; an AutoencoderKL
with the SD-VAE's block structure (8× downsampling, 4 latent channels, scale 0.18215 applied by the caller) at a
reduced width; PixArt-Σ 2K's transformer at a reduced width and sample size with a tiny T5 encoder, a T5 tokenizer
trained here and an SD-XL-structured VAE, plus a prompt file; a GenEval-structured checkout whose evaluator has
GenEval's interface and a fake detector (a fixed rule on image intensity); a small ImageFolder of real JPEG files of
mixed sizes and modes; Inception-v3 weights in torch-fidelity's format (random values); an ADM-format reference batch
(``arr_0`` + ``mu, sigma, mu_s, sigma_s``). The values are random, so metrics computed on them are meaningless; the point is that every code path runs.

Only tests and ``benchmarks/`` import this module; production code never does (``tests/test_import_graph.py``).

CLI: ``python -m benchmark.fakes.prerequisites DIR`` writes everything under ``DIR`` and prints the environment to export.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIT_REPO = "facebook/DiT-XL-2-256"
VAE_REPO = "stabilityai/sd-vae-ft-ema"
FAKE_REVISION = "0" * 40  # snapshot folder name; any 40-hex string works for an offline cache
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
PIXART_REPO = "PixArt-alpha/PixArt-Sigma-XL-2-2K-MS"
PIXART_PIPELINE_REPO = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"
PIXART_PROMPTS_ENV = "GRAFTBENCH_PIXART_PROMPTS"  # graft_core.text_to_image.text.PROMPTS_ENV
FAKE_PROMPTS = (
    "a photo of a cat sitting on a red sofa",
    "two dogs playing in the snow",
    "a bowl of green apples on a wooden table",
    "an astronaut riding a horse on the moon",
    "a watercolor painting of a city at night",
    "a yellow school bus parked next to a tree",
    "three birds on a telephone wire at sunset",
    "a close-up of a blue flower in the rain",
)
GENEVAL_ENV, GENEVAL_DETECTOR_ENV = "GRAFTBENCH_GENEVAL", "GRAFTBENCH_GENEVAL_DETECTOR"  # graft_core.text_to_image.text's
GENEVAL_DETECTOR_FILE = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"  # graft_core.text_to_image.text.GENEVAL_DETECTOR_FILE
GENEVAL_PYTHON_ENV = "GRAFTBENCH_GENEVAL_PYTHON"  # graft_core.text_to_image.text's
CLIP_REPO = "timm/vit_large_patch14_clip_224.openai"  # where open_clip finds ViT-L-14 'openai' (its hf_hub entry)
# A few entries in the form of GenEval's prompts/evaluation_metadata.jsonl (its 553 prompts over 6 task tags)
FAKE_GENEVAL_METADATA = (
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
     "prompt": "a photo of a cat and a dog"},
    {"tag": "counting", "include": [{"class": "apple", "count": 3}], "exclude": [{"class": "apple", "count": 4}],
     "prompt": "a photo of three apples"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
)
FAKE_GENEVAL_THRESHOLD = 127.5  # fake detector: an image is "correct" when its mean intensity (0..255) is above this
POOL_DIM, SPATIAL_DIM = 2048, 2023  # ADM's pool_3 and mixed_6/conv[..., :7] feature sizes


@dataclass(frozen=True)
class FakePaths:
    """Where each fake prerequisite lies, and the environment that points the suite at them."""

    hf_home: Path
    imagenet: Path
    inception: Path
    reference: Path
    pixart_prompts: Path | None = None
    geneval: Path | None = None  # GenEval-structured checkout (make_geneval)
    geneval_detector: Path | None = None  # its detector folder
    geneval_python: Path | None = None  # the interpreter of its (fake) environment

    def environ(self) -> dict[str, str]:
        env = {"HF_HOME": str(self.hf_home), "HF_HUB_OFFLINE": "1",
               "GRAFTBENCH_INCEPTION_WEIGHTS": str(self.inception)}
        if self.pixart_prompts is not None:
            env[PIXART_PROMPTS_ENV] = str(self.pixart_prompts)
        if self.geneval is not None:
            env[GENEVAL_ENV] = str(self.geneval)
        if self.geneval_detector is not None:
            env[GENEVAL_DETECTOR_ENV] = str(self.geneval_detector)
        if self.geneval_python is not None:
            env[GENEVAL_PYTHON_ENV] = str(self.geneval_python)
        return env


def _snapshot(hf_home: Path, repo: str) -> Path:
    """The snapshot folder of ``repo`` in a Hugging Face hub cache, with ``refs/main`` pointing at it."""
    base = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(FAKE_REVISION)
    snap = base / "snapshots" / FAKE_REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def make_dit(hf_home: Path, *, num_attention_heads: int = 2, attention_head_dim: int = 16, num_layers: int = 28,
             seed: int = 0, repo: str = DIT_REPO) -> Path:
    """DiT-XL/2's structure (depth, tokens, learned σ, classes) at width ``heads × head_dim``, saved as the Hub repo
    lays it out (``transformer/`` subfolder, as ``facebook/DiT-XL-2-256``)."""
    import torch
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    model = DiTTransformer2DModel(num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
                                  in_channels=4, out_channels=8, num_layers=num_layers, sample_size=32, patch_size=2,
                                  num_embeds_ada_norm=1000, norm_type="ada_norm_zero")
    with torch.no_grad():  # adaLN-Zero starts at zero: give the blocks a non-trivial output so captures are not all 0
        for name, p in model.named_parameters():
            if name.endswith("norm1.linear.weight") or name.startswith("proj_out"):
                p.normal_(0, 0.02)
    out = _snapshot(hf_home, repo) / "transformer"
    model.save_pretrained(out)
    (out.parent / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline", "transformer": [
        "diffusers", "DiTTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    return out


def sd_vae(width: int = 16, *, layers_per_block: int = 2, norm_num_groups: int | None = None,
           sample_size: int = 256, seed: int | None = 0, **config):
    """A random-init ``AutoencoderKL`` with the SD-VAE's structure (4 down/up blocks → 8× downsampling, 4 latent
    channels) at ``width`` channels per block, in eval mode (``seed``: the initialisation; ``config``: e.g. the
    SD-XL VAE's ``scaling_factor``)."""
    import torch
    from diffusers import AutoencoderKL

    if seed is not None:
        torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(width,) * 4,
                         layers_per_block=layers_per_block, latent_channels=4,
                         norm_num_groups=norm_num_groups or min(8, width), sample_size=sample_size, **config).eval()


def make_vae(hf_home: Path, *, width: int = 16, seed: int = 0, repo: str = VAE_REPO, save_to: Path | None = None) -> Path:
    """:func:`sd_vae` saved at the repo root as ``stabilityai/sd-vae-ft-ema`` is."""
    vae = sd_vae(width, seed=seed)
    out = save_to if save_to is not None else _snapshot(hf_home, repo)
    vae.save_pretrained(out)
    return out


def make_t5_tokenizer(out: Path, *, sentences=FAKE_PROMPTS, vocab_size: int = 64) -> Path:
    """A T5 tokenizer folder as PixArt-Σ's (``spiece.model`` + ``tokenizer_config.json``, T5's ids: pad 0, eos 1,
    unk 2, 100 sentinels): a unigram sentencepiece model trained here on ``sentences``. Loading it goes through the
    sentencepiece conversion the real one needs (so a missing ``sentencepiece``/``protobuf`` shows in the rehearsal)."""
    import io

    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(list(sentences) * 4), model_writer=buf,
                                   vocab_size=vocab_size, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, hard_vocab_limit=False, character_coverage=1.0, minloglevel=2,
                                   num_threads=1)
    (out / "spiece.model").write_bytes(buf.getvalue())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "extra_ids": 100, "model_max_length": 300}))
    return out


def make_pixart(hf_home: Path, *, num_attention_heads: int = 2, attention_head_dim: int = 8, num_layers: int = 28,
                sample_size: int = 8, caption_channels: int = 32, vae_width: int = 8, seed: int = 0) -> dict[str, Path]:
    """PixArt-Σ 2K's prerequisites at reduced width, in the Hub cache layout:

    * ``PixArt-alpha/PixArt-Sigma-XL-2-2K-MS`` ``transformer/``: a ``PixArtTransformer2DModel`` with PixArt-Σ's
      structure (28 blocks so the paper's layers 8..27 exist, 4 latent channels, learned σ → 8 output channels,
      patch 2, adaLN-single, cross-attention at the model width on ``caption_channels``-wide captions, no
      resolution/aspect conditions, its bias/activation/norm settings) at width ``heads × head_dim`` and a small
      ``sample_size`` (PixArt-Σ 2K: 256 → 16,384 tokens, beyond a CPU rehearsal);
    * ``PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers``: ``text_encoder/`` a T5 v1.1 encoder (gated GELU, as
      t5-v1_1-xxl) with ``d_model = caption_channels``, ``tokenizer/`` from ``make_t5_tokenizer``, ``vae/`` the SD-XL
      VAE's structure (4 blocks → 8× downsampling, 4 latent channels, scale 0.13025) at ``vae_width`` channels.
    """
    import torch
    from diffusers import PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    width = num_attention_heads * attention_head_dim
    model = PixArtTransformer2DModel(
        num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim, in_channels=4,
        out_channels=8, num_layers=num_layers, sample_size=sample_size, patch_size=2, attention_bias=True,
        cross_attention_dim=width, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=caption_channels,
        interpolation_scale=4, use_additional_conditions=False)
    with torch.no_grad():  # a non-zero output layer, so samples and captures are not constant
        model.proj_out.weight.normal_(0, 0.05)
    transformer = _snapshot(hf_home, PIXART_REPO) / "transformer"
    model.save_pretrained(transformer)
    (transformer.parent / "model_index.json").write_text(json.dumps({
        "_class_name": "PixArtSigmaPipeline", "transformer": ["diffusers", "PixArtTransformer2DModel"]}))
    pipe = _snapshot(hf_home, PIXART_PIPELINE_REPO)
    tokenizer = make_t5_tokenizer(pipe / "tokenizer")
    vocab = 64 + 100  # sentencepiece pieces (hard_vocab_limit off: at most 64) + T5's sentinels
    t5 = T5EncoderModel(T5Config(vocab_size=vocab, d_model=caption_channels, d_kv=8, d_ff=2 * caption_channels,
                                 num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
                                 relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                 dropout_rate=0.0, is_encoder_decoder=False, use_cache=False))
    t5.save_pretrained(pipe / "text_encoder")
    sd_vae(vae_width, sample_size=1024, seed=None, scaling_factor=0.13025).save_pretrained(pipe / "vae")
    (pipe / "model_index.json").write_text(json.dumps({
        "_class_name": "PixArtSigmaPipeline", "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"], "vae": ["diffusers", "AutoencoderKL"]}))
    return {"transformer": transformer, "text_encoder": pipe / "text_encoder", "tokenizer": tokenizer,
            "vae": pipe / "vae"}


def make_prompts(path: Path, prompts=FAKE_PROMPTS) -> Path:
    """A prompt file for ``$GRAFTBENCH_PIXART_PROMPTS`` (one prompt a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(p + "\n" for p in prompts))
    return path


# evaluation/evaluate_images.py of make_geneval (str.format'ted with the threshold and the detector file name)
FAKE_EVALUATE_IMAGES = r"""'''FAKE GenEval evaluator, written by graftbench's benchmark.fakes.prerequisites.make_geneval: NOT GenEval.

It has the interface of GenEval's evaluation/evaluate_images.py (positional image folder, --outfile, --model-path,
--model-config, --options) and reads GenEval's folder layout (<imagedir>/<index:05d>/metadata.jsonl and
samples/<k:04d>.png), and writes one JSON line per image with GenEval's fields (filename, tag, prompt, correct,
reason, metadata, details). Only the detector is a stand-in: an image counts as correct when its mean intensity
(0..255, over all pixels and channels) is above THRESHOLD: a deterministic rule, meaningless as a score.
'''
import argparse
import json
import os
import re

import numpy as np
from PIL import Image

THRESHOLD = {threshold!r}
DETECTOR_FILE = {detector_file!r}


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("imagedir", type=str)
    parser.add_argument("--outfile", type=str, default="results.jsonl")
    parser.add_argument("--model-config", type=str, default=None)
    parser.add_argument("--model-path", type=str, default="./")
    parser.add_argument("--options", nargs="*", type=str, default=[])
    args = parser.parse_args()
    args.options = dict(opt.split("=", 1) for opt in args.options)
    return args


def evaluate_image(filepath, metadata):
    mean = float(np.asarray(Image.open(filepath).convert("RGB"), dtype=np.float64).mean())
    correct = mean > THRESHOLD
    return {{"filename": filepath, "tag": metadata["tag"], "prompt": metadata["prompt"], "correct": bool(correct),
            "reason": "" if correct else f"fake detector: mean intensity {{mean:.1f}} <= {{THRESHOLD}}",
            "metadata": json.dumps(metadata), "details": json.dumps({{"fake_mean_intensity": mean}})}}


def main(args):
    checkpoint = os.path.join(args.model_path, DETECTOR_FILE)
    if not os.path.isfile(checkpoint):  # the real evaluator fails loading the detector too
        raise SystemExit(f"detector checkpoint {{checkpoint}} not found")
    full_results = []
    for subfolder in sorted(os.listdir(args.imagedir)):
        folderpath = os.path.join(args.imagedir, subfolder)
        if not os.path.isdir(folderpath) or not subfolder.isdigit():
            continue
        with open(os.path.join(folderpath, "metadata.jsonl")) as fp:
            metadata = json.load(fp)
        for imagename in sorted(os.listdir(os.path.join(folderpath, "samples"))):
            imagepath = os.path.join(folderpath, "samples", imagename)
            if not os.path.isfile(imagepath) or not re.match(r"\d+\.png", imagename):
                continue
            full_results.append(evaluate_image(imagepath, metadata))
    if os.path.dirname(args.outfile):
        os.makedirs(os.path.dirname(args.outfile), exist_ok=True)
    with open(args.outfile, "w") as fp:
        for row in full_results:
            fp.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(parse_args())
"""


def make_geneval(root: Path, *, metadata=FAKE_GENEVAL_METADATA, threshold: float = FAKE_GENEVAL_THRESHOLD) -> Path:
    """A checkout with GenEval's structure (github.com/djghosh13/geneval) under ``root``, for
    ``$GRAFTBENCH_GENEVAL``: ``prompts/evaluation_metadata.jsonl`` (``metadata``: a few entries in the real file's
    form, over several task tags), ``models/<GENEVAL_DETECTOR_FILE>`` (a non-empty placeholder where
    ``download_models.sh`` puts the Mask2Former weights; ``$GRAFTBENCH_GENEVAL_DETECTOR`` = that folder) and
    ``evaluation/evaluate_images.py`` with GenEval's CLI, input layout and output fields whose *detector* is fake:
    an image is correct when its mean intensity is above ``threshold`` (see ``FAKE_EVALUATE_IMAGES``). Scores from
    it mean nothing; it exercises ``graft_core.text_to_image.text.geneval_score`` end to end (subprocess, layout, summary)."""
    root = Path(root)
    (root / "evaluation").mkdir(parents=True, exist_ok=True)
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "evaluation" / "evaluate_images.py").write_text(
        FAKE_EVALUATE_IMAGES.format(threshold=float(threshold), detector_file=GENEVAL_DETECTOR_FILE))
    (root / "prompts" / "evaluation_metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metadata))
    (root / "models" / GENEVAL_DETECTOR_FILE).write_bytes(b"FAKE detector weights (benchmark.fakes.prerequisites.make_geneval)\n")
    (root / "README.md").write_text("FAKE GenEval checkout written by graftbench's benchmark/fakes/prerequisites.py; not GenEval.\n")
    make_geneval_env(root / "env")
    return root


def make_geneval_env(env: Path) -> Path:
    """A stand-in for GenEval's Python environment under ``env``; returns its interpreter ``env/bin/python`` (for
    ``$GRAFTBENCH_GENEVAL_PYTHON``): this interpreter with stand-in ``mmdet`` (version 2.27.0, the Mask2Former config
    file beside the package where GenEval's evaluator reads it) and ``open_clip`` (ViT-L-14 'openai' listed on the
    Hub) packages first on its path, and a Hub cache holding that CLIP's (placeholder) weights. What preflight's
    environment probe reads is there; nothing of mmdet or CLIP is."""
    env = Path(env)
    site = env / "site"
    (site / "mmdet").mkdir(parents=True, exist_ok=True)
    (site / "mmdet" / "__init__.py").write_text('"""FAKE mmdet (benchmark.fakes.prerequisites): a version only."""\n'
                                               '__version__ = "2.27.0"\n')
    (site / "configs" / "mask2former").mkdir(parents=True, exist_ok=True)
    (site / "configs" / "mask2former" / GENEVAL_DETECTOR_FILE.replace(".pth", ".py")).write_text("# FAKE config\n")
    (site / "open_clip").mkdir(parents=True, exist_ok=True)
    (site / "open_clip" / "__init__.py").write_text(
        '"""FAKE open_clip (benchmark.fakes.prerequisites): its pretrained list for ViT-L-14 only."""\n'
        '__version__ = "2.26.1"\n\n\n'
        'def get_pretrained_cfg(model, tag):\n'
        f'    return {{"hf_hub": "{CLIP_REPO}/"}} if (model, tag) == ("ViT-L-14", "openai") else {{}}\n')
    weights = _snapshot(env / "hf", CLIP_REPO) / "open_clip_pytorch_model.bin"
    weights.write_bytes(b"FAKE CLIP weights (benchmark.fakes.prerequisites.make_geneval_env)\n")
    python = env / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text('#!/bin/sh\n# FAKE GenEval environment (benchmark.fakes.prerequisites.make_geneval_env)\n'
                      'HERE="$(cd "$(dirname "$0")/.." && pwd)"\n'
                      'export PYTHONPATH="$HERE/site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_CACHE="$HERE/hf/hub"\n'
                      f'exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return python


def make_imagefolder(root: Path, *, classes: int = 4, per_class: int = 6, seed: int = 0) -> Path:
    """Real JPEG files of mixed sizes and modes (RGB, greyscale, CMYK; smaller and larger than 256 px, as ImageNet
    has) in ImageNet's ``train/<wnid>/<wnid>_<i>.JPEG`` layout; smooth random images, so JPEG keeps some structure."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(500, 375), (333, 500), (256, 256), (640, 480), (180, 240), (800, 600)]
    for c in range(classes):
        wnid = f"n{c + 1:08d}"
        folder = root / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[(c + i) % len(sizes)]
            low = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
            img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
            mode = ("RGB", "L", "CMYK")[i % 3] if i % 2 else "RGB"
            img.convert(mode).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def make_inception_weights(path: Path, *, seed: int = 0) -> Path:
    """A state dict of torch-fidelity's ``FeatureExtractorInceptionV3`` with random values (the real file is
    ``weights-inception-2015-12-05-6726825d.pth``): same keys and shapes, so the loader path is the real one."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # build the architecture without real weights
            return None

    path.parent.mkdir(parents=True, exist_ok=True)
    empty = path.with_suffix(".empty.pth")
    torch.save({}, empty)
    torch.manual_seed(seed)
    model = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    empty.unlink()
    # Calibrate the batch-norm statistics on random images, so each layer normalises its input: with the default
    # running stats the activations shrink ~10× per layer and every image gets the same (~1e-8) features.
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=gen))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def make_adm_reference(path: Path, *, num_images: int = 16, resolution: int = 256, seed: int = 0,
                       inception: Path | None = None) -> Path:
    """An ADM reference batch: ``arr_0`` uint8 ``[N, H, W, 3]`` and whole-dataset statistics ``mu, sigma`` (2048)
    and ``mu_s, sigma_s`` (2023) as in ``VIRTUAL_imagenet256_labeled.npz``. With ``inception`` (fake weights) the
    statistics are those of the reference images under that extractor (+ 0.01·I), so FIDs against them are of a
    sensible size; without, random positive-definite matrices."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (num_images, resolution // 16, resolution // 16, 3), dtype=np.uint8)
    arr = np.stack([np.asarray(Image.fromarray(x).resize((resolution, resolution), Image.BICUBIC)) for x in low])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, arr_0=arr)
    if inception is not None:
        from graft_core.evaluation.adm_eval import stream_features
        from graft_core.metrics.extractors import get_extractor

        feats = stream_features(path, get_extractor("inception"), inception, device="cpu", batch_size=8)
        (mu, sigma), (mu_s, sigma_s) = ((f.mean(0), np.cov(f, rowvar=False) + np.eye(f.shape[1]) * 1e-2)
                                        for f in (feats["pool"].astype(np.float64),
                                                  feats["spatial"].astype(np.float64)))
    else:
        def stats(dim: int) -> tuple[np.ndarray, np.ndarray]:
            a = rng.standard_normal((dim, 64)) / 8
            return rng.standard_normal(dim), a @ a.T + np.eye(dim) * 1e-2

        (mu, sigma), (mu_s, sigma_s) = stats(POOL_DIM), stats(SPATIAL_DIM)
    np.savez(path, arr_0=arr, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    return path


def make_all(root: Path, *, classes: int = 4, per_class: int = 6, reference_images: int = 16) -> FakePaths:
    """Every fake prerequisite of the DiT and PixArt targets under ``root``; returns their paths and environment."""
    root = Path(root)
    hf_home = root / "hf"
    make_dit(hf_home)
    make_vae(hf_home)
    make_pixart(hf_home)
    paths = FakePaths(hf_home=hf_home, imagenet=root / "imagenet" / "train",
                      inception=root / "inception" / INCEPTION_FILE,
                      reference=root / "adm" / "VIRTUAL_imagenet256_labeled.npz",
                      pixart_prompts=make_prompts(root / "pixart" / "prompts.txt"),
                      geneval=make_geneval(root / "geneval"), geneval_detector=root / "geneval" / "models",
                      geneval_python=root / "geneval" / "env" / "bin" / "python")
    make_imagefolder(paths.imagenet, classes=classes, per_class=per_class)
    make_inception_weights(paths.inception)
    make_adm_reference(paths.reference, num_images=reference_images, inception=paths.inception)
    return paths


def encode_latents(root: Path, hf_home: Path, *, classes: int = 2, per_class: dict | None = None,
                   resolution: int = 256, subsets: dict | None = None) -> Path:
    """Small fake ImageFolders (``per_class``: images per class of each split) encoded in this process with the fake
    SD-VAE in ``hf_home`` at ``resolution`` px and the stage-1 / held-out / 10 % subsets (``subsets``: images per
    class of each) written: the prepared-latents layout ``$GRAFTBENCH_IMAGENET`` names, in seconds (tests;
    ``prepare_rehearsal`` goes through the ``benchmark.prepare`` CLI instead). Returns the latents folder."""
    from diffusers import AutoencoderKL

    from graft_core.data import imagenet as inet

    root = Path(root)
    vae = AutoencoderKL.from_pretrained(_snapshot(Path(hf_home), VAE_REPO)).eval()
    latents = root / "latents"
    for split, count in (per_class or {"train": 4, "val": 2}).items():
        src = make_imagefolder(root / "img" / split, classes=classes, per_class=count, seed=len(split))
        inet.encode_imagenet(src, latents, vae=vae, vae_name="fake", split=split, shard_size=4,
                             resolution=resolution, num_workers=0, batch_size=4, progress=False, shard_index=0,
                             num_shards=1)
    inet.make_subsets(latents, per_class=subsets or {"stage1": 1, "heldout": 1, "pct10": 2})
    return latents


def prepare_rehearsal(root: Path, *, classes: int = 4, per_class: int = 10, val_per_class: int = 8) -> dict[str, str]:
    """Everything a paper-smoke rehearsal needs under ``root``: the fakes, a val ImageFolder, both encoded, the
    subsets written and the reference batch checked and recorded by the project's own CLI (``python -m
    benchmark.prepare``: the evals find the batch through its record, not an environment variable); returns the full
    environment (os.environ plus the variables that point the suite at them) for the driver and its jobs."""
    import os
    import subprocess

    root = Path(root)
    paths = make_all(root, classes=classes, per_class=per_class)
    val = make_imagefolder(root / "imagenet" / "val", classes=classes, per_class=val_per_class, seed=1)
    env = {**{k: v for k, v in os.environ.items() if k != "GRAFTBENCH_ADM_REFERENCE"}, **paths.environ(),
           "GRAFTBENCH_CACHE": str(root / "cache"), "GRAFTBENCH_IMAGENET": str(root / "latents")}
    prepare = [sys.executable, "-m", "benchmark.prepare"]
    common = ["--out", str(root / "latents"), "--num-workers", "0", "--shard-size", "16", "--batch-size", "8",
              "--quiet"]
    for cmd in ([*prepare, "imagenet", "--src", str(paths.imagenet), *common],
                [*prepare, "imagenet", "--src", str(val), "--split", "val", *common],
                [*prepare, "subsets", "--out", str(root / "latents"), "--per-class", f"stage1={min(8, per_class)}",
                 "--per-class", f"heldout={min(8, val_per_class)}", "--per-class", f"pct10={per_class}",
                 "--per-class", f"pct25={per_class}"],  # Table 6's 25 %; nested: pct10 ⊆ pct25
                [*prepare, "reference", "--npz", str(paths.reference)]):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.fakes.prerequisites", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder to write the fakes into")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=6)
    args = parser.parse_args(argv)
    paths = make_all(args.root, classes=args.classes, per_class=args.per_class)
    for k, v in paths.environ().items():
        print(f"export {k}={v}")
    print(f"# ImageFolder: {paths.imagenet}\n# ADM reference batch: {paths.reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
