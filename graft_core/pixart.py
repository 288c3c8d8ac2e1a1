"""Text-to-image grafting (paper Table 5, §8): Hyena-X in half of PixArt's self-attention layers, two stages, LoRA.

One row of ``python -m benchmark.run table5`` is ``run_row`` (the ``table5`` target's external step):

1. **Teacher.** ``paper``: PixArt-Σ 2K (``PixArtTransformer2DModel.from_pretrained(
   "PixArt-alpha/PixArt-Sigma-XL-2-2K-MS", subfolder="transformer")``, T5 + VAE from
   ``PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers``; weights from the local HF cache, else ``MissingWeightsError``;
   the prompts of the synthetic pairs from ``$GRAFTBENCH_PIXART_PROMPTS``). ``tiny``: a text-conditioned
   ``PixArtTransformer2DModel`` with the tiny DiT teacher's sizes (16×16 digits, patch 2 → 64 tokens, 8 layers, width
   128, ``ada_norm_single``, cross-attention on captions from ``graft_core.text.HashTextEncoder``), trained here on
   the digits with captions such as "a handwritten seven" and cached by config hash like ``graft_core.teacher``
   (shipped under ``graft_core/assets/pixart/<key>/`` when present).
2. **Synthetic pairs.** The teacher generates ``synthetic_pairs`` images for prompts cycled over the prompt list
   (paper: 12k pairs, the first 8k for stage 1 [W]; tiny: 600 / 400).
3. **Stage 1.** The frozen teacher runs once over the stage-1 pairs (one uniform timestep each); for every grafted
   layer the input of ``attn1`` and its ungated output are recorded (``capture.record_sites``) and a Hyena-X is fitted
   with L1 (``distill.train_operator``, the MHA objective of Table 1); the remaining pairs are the validation set.
4. **Stage 2.** LoRA (peft, ``stage2.lora_rank``; paper rank 64) on every ``nn.Linear`` of ``attn1``/``ff``, grafted
   operators included, trained with the diffusion loss on all synthetic pairs (``graft_core.finetune``). The
   cross-attention ``attn2`` and every base weight stay frozen.
5. **Evaluation.** Prompt following — paper: GenEval overall (``graft_core.text.geneval_score``, detector supplied
   by the user); tiny: the fraction of samples that the digit classifier assigns to the prompted digit, plus the
   full metric set against the real digits (FID on the classifier's features). Speed-up: wall-clock of one forward
   pass (batch 2, as Table 6) of teacher vs student on this machine, at the model's token count and — because at
   64 tokens attention is cheap and the speed-up is ~1 — of the same blocks at ``long_tokens`` (4096) tokens.
   With ``control`` (tiny), the teacher also goes through the identical LoRA stage 2 on the same pairs and is scored.

**Engine pieces for the step graph** (what the ``table5`` steps call, one job each): ``load_paper_teacher`` (PixArt-Σ
with its prompts' T5 states computed once, ``paper_prompts`` → ``text.encode_prompts`` / ``CachedPrompts``),
``pretrained_pixart`` (structure check; width, caption channels and sample size from the checkpoint),
``synthetic_shards`` / ``load_synthetic`` / ``synthetic_subset`` (the synthetic pairs as a resumable sampling array,
and a stage-1 range of them keyed for ``capture.capture_activations``).

Layer indices are **0-based** (``transformer_blocks[i]``): the paper's 8, 10, 12, 14, 16, 18, 20–27 are read as
code indices (index 27 only exists 0-based, §12.8). Other depths use the same rule (``pixart_layers``): half of the
layers, an interleaved run of even indices from ``round(8/28·L)`` plus the contiguous tail of ``round(8/28·L)``
layers — (2, 4, 6, 7) for the 8-layer tiny teacher.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graft_core import cache
from graft_core.config import plain, stable_hash, to_jsonable
from graft_core.paths import ASSETS_DIR, atomic_write_json, cache_root
from graft_core.plan import pixart_layers  # the driver plans the same layers without torch
from graft_core.presets import DataConfig, Preset, TeacherConfig, get_preset
from graft_core.structure import hub_cache  # the cache HF_HOME names now (huggingface_hub reads it once)
from graft_core.teacher import MissingWeightsError, lr_at, sha256_file
from graft_core.text import (TEMPLATES, CachedPrompts, HashTextEncoder, PromptTable, TextConditioned, digit_prompts,
                             encode_prompts, module_fingerprint, read_prompts)

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
META_FILE = "pixart.json"
PAPER_TRANSFORMER = "PixArt-alpha/PixArt-Sigma-XL-2-2K-MS"
PAPER_PIPELINE = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"  # VAE, T5 text encoder and tokenizer of PixArt-Σ
PAPER_LAYERS = (8, 10, 12, 14, 16, 18, 20, 21, 22, 23, 24, 25, 26, 27)


@dataclass(frozen=True)
class PixArtConfig:
    """The text-to-image teacher. ``pretrained`` set → loaded from the Hub cache (paper); else trained here."""

    pretrained: str | None = None
    num_layers: int = 8
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    in_channels: int = 1
    out_channels: int = 1
    sample_size: int = 16
    patch_size: int = 2
    caption_channels: int = 64  # HashTextEncoder width (T5-XXL: 4096)
    max_tokens: int = 8  # caption length (PixArt-Σ: 300 T5 tokens)
    text_seed: int = 0
    templates: tuple[str, ...] = TEMPLATES
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    # training (ignored when pretrained). Sized for <= 15 min on 2 free cores (~2.8 steps/s, tiny-testbed.md).
    train_steps: int = 2400
    train_batch_size: int = 64
    train_lr: float = 2e-3
    train_warmup: int = 100
    train_ema_decay: float = 0.999
    train_grad_clip: float = 1.0
    train_caption_dropout: float = 0.1
    train_bf16: bool = True
    seed: int = 0

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def diffusion(self) -> TeacherConfig:
        """The sizes and noise schedule as a ``TeacherConfig`` (what the sampler and ``finetune`` read)."""
        return TeacherConfig(pretrained=self.pretrained, num_layers=self.num_layers,
                             num_attention_heads=self.num_attention_heads, attention_head_dim=self.attention_head_dim,
                             in_channels=self.in_channels, out_channels=self.out_channels,
                             sample_size=self.sample_size, patch_size=self.patch_size,
                             num_classes=len(self.templates) * 10, num_train_timesteps=self.num_train_timesteps,
                             beta_schedule=self.beta_schedule, seed=self.seed)


PAPER_PIXART = PixArtConfig(pretrained=PAPER_TRANSFORMER, num_layers=28, num_attention_heads=16, attention_head_dim=72,
                            in_channels=4, out_channels=8, sample_size=256, patch_size=2, caption_channels=4096,
                            max_tokens=300)
MICRO_PIXART = PixArtConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8, sample_size=8,
                            caption_channels=16, max_tokens=6, train_steps=20, train_batch_size=16, train_warmup=2,
                            train_bf16=False)
PIXART_PRESETS = {"paper": PAPER_PIXART, "paper-smoke": PAPER_PIXART, "tiny": PixArtConfig(), "micro": MICRO_PIXART}


def pixart_config(preset: Preset) -> PixArtConfig:
    try:
        return PIXART_PRESETS[preset.name]
    except KeyError:
        raise ValueError(f"no PixArt teacher for preset {preset.name!r}; known: {', '.join(PIXART_PRESETS)}") from None


# --------------------------------------------------------------------------------------------------------------------
# Teacher: build, train, cache, load
# --------------------------------------------------------------------------------------------------------------------


def build_pixart(cfg: PixArtConfig) -> nn.Module:
    """A randomly initialised text-conditioned PixArt (``ada_norm_single``, no resolution/aspect conditions)."""
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(
        num_layers=cfg.num_layers, num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        sample_size=cfg.sample_size, patch_size=cfg.patch_size, cross_attention_dim=cfg.hidden_size,
        caption_channels=cfg.caption_channels, num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        use_additional_conditions=False)


def text_encoder(cfg: PixArtConfig) -> HashTextEncoder:
    return HashTextEncoder(cfg.caption_channels, cfg.max_tokens, cfg.text_seed)


def wrap(transformer: nn.Module, cfg: PixArtConfig) -> TextConditioned:
    """The transformer driven by prompt ids of ``digit_prompts(cfg.templates)`` (tiny/micro)."""
    return TextConditioned(transformer, PromptTable(digit_prompts(cfg.templates), text_encoder(cfg).encode))


def pixart_key(cfg: PixArtConfig, data: DataConfig) -> str:
    return stable_hash({"pixart": cfg} if cfg.pretrained else {"pixart": cfg, "data": data})


def pixart_dirs(key: str) -> list[Path]:
    """Shipped assets first, then the user cache."""
    return [ASSETS_DIR / "pixart" / key, cache_root() / "pixart" / key]


def load_pixart_teacher(preset: Preset, *, train_if_missing: bool = True, progress: bool = False) -> TextConditioned:
    """The preset's text-to-image teacher in eval mode (trained and cached when absent; paper: Hub cache)."""
    cfg = pixart_config(preset)
    if cfg.pretrained:
        return load_paper_teacher(cfg)
    key = pixart_key(cfg, preset.data)
    folder = cache.find(pixart_dirs(key), WEIGHTS_FILE)
    if folder is not None:
        return load_pixart_dir(folder)
    if not train_if_missing:
        raise MissingWeightsError(f"no trained PixArt teacher {key}; run `python -m graft_core.pixart --preset "
                                  f"{preset.name}`")
    folder = cache.get_or_build(pixart_dirs(key)[1], functools.partial(_write_pixart, preset, progress=progress),
                                marker=WEIGHTS_FILE, resume=True)
    return load_pixart_dir(folder)


def load_pixart_dir(folder: Path) -> TextConditioned:
    from diffusers import PixArtTransformer2DModel

    from graft_core.config import from_dict

    folder = Path(folder)
    cache.verify(folder)
    meta = json.loads((folder / META_FILE).read_text())
    digest = sha256_file(folder / WEIGHTS_FILE)
    if digest != meta["sha256"]:
        raise ValueError(f"PixArt weights in {folder} are corrupt (sha256 {digest[:12]} != {meta['sha256'][:12]}); "
                         f"delete the folder to retrain")
    cfg = from_dict(PixArtConfig, meta["pixart_config"])
    return wrap(PixArtTransformer2DModel.from_pretrained(folder), cfg).eval()


CHECKPOINT_EVERY = 200  # teacher training steps between resumable checkpoints


def train_pixart(preset: Preset, out_dir: Path, *, progress: bool = True) -> dict:
    """Train the text-to-image teacher on the digits with captions: each image gets a random template of its digit,
    the caption is dropped (→ empty caption) with ``train_caption_dropout``; ε-loss, AdamW, warm-up, EMA (saved).
    The result is published as ``out_dir`` (replacing one already there, under the key's lock); returns the meta.

    Resumable: every ``CHECKPOINT_EVERY`` steps the model, EMA, optimizer, data generator and losses go to
    ``<out_dir>.resume/checkpoint.pt``, a folder only the holder of the key's lock touches; a new call continues from
    there (all randomness comes from one generator) and removes it once the teacher is published.
    """
    out_dir = cache.get_or_build(out_dir, functools.partial(_write_pixart, preset, progress=progress), rebuild=True,
                                 resume=True)
    return json.loads((out_dir / META_FILE).read_text())


def _write_pixart(preset: Preset, tmp: Path, resume: Path, *, progress: bool = True) -> None:
    """Train (continuing from ``resume/checkpoint.pt`` when it matches) and write the teacher into ``tmp``."""
    from tqdm.auto import tqdm

    from graft_core.data import load_digits
    from graft_core.diffusion import diffusion_loss, drop_labels, make_train_scheduler
    from graft_core.ema import EMA
    from graft_core.paths import atomic_torch_save

    cfg = pixart_config(preset)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = load_digits(preset.data)
    x_all, y_all = data.train_images, data.train_labels
    model = wrap(build_pixart(cfg), cfg).train()
    null_id = model.prompts.null_id
    scheduler = make_train_scheduler(cfg.diffusion())
    ema = EMA(model, cfg.train_ema_decay)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train_lr, weight_decay=0.0)
    tmp = Path(tmp)
    ckpt_path = Path(resume) / "checkpoint.pt"
    step, losses, seconds_before = 0, [], 0.0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["pixart_config"] == to_jsonable(cfg):
            model.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            opt.load_state_dict(ckpt["optimizer"])
            gen.set_state(ckpt["generator"])
            step, losses, seconds_before = ckpt["step"], ckpt["losses"], ckpt["seconds"]
    start = time.time()
    bar = tqdm(total=cfg.train_steps, initial=step, desc="pixart teacher", disable=not progress, mininterval=10)
    while step < cfg.train_steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.train_lr, cfg.train_warmup)
        idx = torch.randint(0, len(x_all), (cfg.train_batch_size,), generator=gen)
        template = torch.randint(0, len(cfg.templates), (cfg.train_batch_size,), generator=gen)
        prompt = drop_labels(template * 10 + y_all[idx], null_id, cfg.train_caption_dropout, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train_bf16):
            loss = diffusion_loss(model, scheduler, x_all[idx], prompt, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train_grad_clip)
        opt.step()
        ema.update(model)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
        if step % CHECKPOINT_EVERY == 0 and step < cfg.train_steps:
            atomic_torch_save({"pixart_config": to_jsonable(cfg), "model": model.state_dict(), "ema": ema.state_dict(),
                               "optimizer": opt.state_dict(), "generator": gen.get_state(), "step": step,
                               "losses": losses, "seconds": seconds_before + time.time() - start}, ckpt_path)
    bar.close()
    ema.model.transformer.save_pretrained(tmp)
    meta = {"key": pixart_key(cfg, preset.data), "pixart_config": to_jsonable(cfg),
            "data_config": to_jsonable(preset.data), "train_seconds": round(seconds_before + time.time() - start, 1),
            "final_loss_100": sum(losses[-100:]) / len(losses[-100:]),
            "loss_curve": [round(sum(losses[i:i + 100]) / len(losses[i:i + 100]), 5)
                           for i in range(0, len(losses), 100)],
            "torch": torch.__version__, "threads": torch.get_num_threads(), "sha256": sha256_file(tmp / WEIGHTS_FILE),
            "made_by": f"python -m graft_core.pixart --preset {preset.name}"}
    atomic_write_json(tmp / META_FILE, meta)


# --------------------------------------------------------------------------------------------------------------------
# Paper teacher: PixArt-Σ from the local Hugging Face cache, captions through T5
# --------------------------------------------------------------------------------------------------------------------

PROMPT_CACHE = "t5_prompts"  # cache_root()/t5_prompts/<key>: the encoded prompt sets (text.encode_prompts)
TOKENIZER_PACKAGES = "sentencepiece protobuf"  # what T5Tokenizer needs to read PixArt-Σ's spiece.model


def _hub(what: str, fn):
    """``fn()``, with a missing file or package turned into one line naming what to download or install."""
    try:
        return fn()
    except ImportError as err:
        raise MissingWeightsError(
            f"{what} cannot be loaded: a package is missing ({err}); run `pip install {TOKENIZER_PACKAGES}` (they "
            f"are dependencies of graftbench: `pip install -e .` installs them)") from None
    except (OSError, ValueError) as err:
        raise MissingWeightsError(
            f"{what} is not in the Hugging Face cache; on a machine with internet run `huggingface-cli download "
            f"{PAPER_TRANSFORMER}` and `huggingface-cli download {PAPER_PIPELINE}`, copy ~/.cache/huggingface here "
            f"(or set HF_HOME), see REPRODUCE.md ({type(err).__name__})") from None


# Fixed by the paper's plans: depth (layer indices 8..27), latent channels and learned σ, patch size, the adaLN-single
# block with cross-attention on captions, no resolution/aspect conditions. Free (read from the checkpoint): width,
# caption channels (T5's d_model) and sample size — the rehearsal's fake cannot afford PixArt-Σ 2K's 16,384 tokens on
# a CPU, and every token-dependent size (operator seq_len, latency) is read from the config returned here.
PIXART_FIXED = ("num_layers", "in_channels", "out_channels", "patch_size", "norm_type", "use_additional_conditions",
                "num_embeds_ada_norm")


def pretrained_pixart(cfg: PixArtConfig, config: dict | None = None) -> PixArtConfig:
    """``cfg`` with the width, caption channels and sample size of its Hub checkpoint (``transformer/config.json``,
    no weights read), after refusing one of another structure (``PIXART_FIXED``; one line naming the fields)."""
    from graft_core.structure import StructureMismatch, hub_file

    if not cfg.pretrained:
        return cfg
    if config is None:
        path = hub_file(cfg.pretrained, "transformer/config.json")
        if path is None:
            raise MissingWeightsError(f"PixArt-Σ ({cfg.pretrained}): transformer/config.json is not in the Hugging "
                                      f"Face cache {hub_cache()}; run `huggingface-cli download {cfg.pretrained}`")
        config = json.loads(path.read_text())
    want = {"num_layers": cfg.num_layers, "in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
            "patch_size": cfg.patch_size, "norm_type": "ada_norm_single", "use_additional_conditions": False,
            "num_embeds_ada_norm": cfg.num_train_timesteps}
    got = {k: config.get(k) for k in PIXART_FIXED}
    if got["use_additional_conditions"] is None:  # diffusers' default: on exactly for sample_size 128
        got["use_additional_conditions"] = config.get("sample_size") == 128
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    diff = [f"{k} {got[k]} (expected {want[k]})" for k in PIXART_FIXED if got[k] != want[k]]
    if config.get("cross_attention_dim") not in (None, inner):
        diff.append(f"cross_attention_dim {config.get('cross_attention_dim')} (expected the width {inner})")
    if diff:
        raise StructureMismatch(f"{cfg.pretrained}: checkpoint structure differs from PixArt-Σ's: {', '.join(diff)}; "
                                f"these fix the grafted layers and the latent space")
    return dataclasses.replace(cfg, num_attention_heads=config["num_attention_heads"],
                               attention_head_dim=config["attention_head_dim"],
                               caption_channels=config["caption_channels"], sample_size=config["sample_size"])


def _file_id(path: Path, whole_below: int = 64 << 20) -> str:
    """sha256 of a small file; of a large one its size and the sha256 of its first and last 4 MiB."""
    import hashlib

    from graft_core.cache import sha256_file

    size = path.stat().st_size
    if size < whole_below:
        return sha256_file(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(4 << 20))
        f.seek(size - (4 << 20))
        h.update(f.read())
    return h.hexdigest()


def _hub_folder_id(repo: str, subfolder: str) -> str:
    """Identity of a Hub folder without loading its weights: the hub cache names each file's blob by its sha256 /
    etag, so a linked file is named by its blob; a plain file (a cache copied with its links resolved, the
    rehearsal fake) by ``_file_id`` — T5-XXL's 19 GB are not hashed for a key."""
    from graft_core.structure import hub_file

    config = hub_file(repo, f"{subfolder}/config.json")
    if config is None:
        raise MissingWeightsError(f"{repo}/{subfolder} is not in the Hugging Face cache")
    parts = []
    for f in sorted(config.parent.iterdir()):
        parts.append(f"{f.name}={f.resolve().name if f.is_symlink() else _file_id(f)}")
    return stable_hash(parts)


def load_t5(device: torch.device | str | None = None):
    """PixArt-Σ's T5 tokenizer and T5 encoder from the local HF cache (encoder on ``device``)."""
    from transformers import T5EncoderModel

    tokenizer = load_t5_tokenizer()
    encoder = _hub(f"the T5 encoder ({PAPER_PIPELINE})",
                   lambda: T5EncoderModel.from_pretrained(PAPER_PIPELINE, subfolder="text_encoder",
                                                          cache_dir=hub_cache()))
    return tokenizer, encoder.to(device or "cpu").eval().requires_grad_(False)


def missing_tokenizer_packages() -> list[str]:
    """The packages of ``TOKENIZER_PACKAGES`` that do not import (T5Tokenizer converts PixArt-Σ's ``spiece.model``
    with sentencepiece and reads its proto with protobuf; without them transformers falls back to a tiktoken reader
    and fails with an unrelated message)."""
    import importlib

    missing = []
    for package, module in (("sentencepiece", "sentencepiece"), ("protobuf", "google.protobuf")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def load_t5_tokenizer():
    """PixArt-Σ's T5 tokenizer from the local HF cache; a missing tokenizer package is one line naming it."""
    from transformers import T5Tokenizer

    what = f"the T5 tokenizer ({PAPER_PIPELINE})"
    missing = missing_tokenizer_packages()
    if missing:
        raise MissingWeightsError(f"{what} cannot be loaded: {' and '.join(missing)} missing; run `pip install "
                                  f"{' '.join(missing)}` (dependencies of graftbench: `pip install -e .` installs "
                                  f"them)")
    return _hub(what, lambda: T5Tokenizer.from_pretrained(PAPER_PIPELINE, subfolder="tokenizer",
                                                          cache_dir=hub_cache()))


def paper_prompts(prompts: list[str], max_tokens: int, *, device: torch.device | str | None = None,
                  batch_size: int = 32, progress: bool = False) -> CachedPrompts:
    """``prompts`` encoded once by PixArt-Σ's T5 (``text.encode_prompts`` in ``cache_root()/t5_prompts``): T5 is
    loaded only when the set is not cached yet, runs on ``device`` (default: CUDA when there is one) and is freed
    afterwards."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                         else "cpu")
    tokenizer = load_t5_tokenizer()
    encoder_id = _hub(f"the T5 encoder ({PAPER_PIPELINE})", lambda: _hub_folder_id(PAPER_PIPELINE, "text_encoder"))

    def load_encoder():
        return load_t5(device)[1]

    folder = encode_prompts(prompts, tokenizer, load_encoder, max_tokens, cache_root() / PROMPT_CACHE,
                            device=device, batch_size=batch_size, encoder_id=encoder_id, progress=progress)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the loader's T5 is garbage once encode_prompts returns
    return CachedPrompts(folder)


def load_paper_teacher(cfg: PixArtConfig, prompts: list[str] | None = None, *,
                       device: torch.device | str | None = None, progress: bool = False) -> TextConditioned:
    """PixArt-Σ 2K (transformer) from the local HF cache, driven by ids of ``prompts`` (default: the file), whose
    T5 states are computed once (``paper_prompts``, T5 on ``device``/the GPU) and read from the cache."""
    from diffusers import PixArtTransformer2DModel

    pretrained_pixart(cfg)  # a checkpoint of another structure stops here, before any weights are read
    transformer = _hub(f"PixArt-Σ ({cfg.pretrained})",
                       lambda: PixArtTransformer2DModel.from_pretrained(cfg.pretrained, subfolder="transformer",
                                                                    cache_dir=hub_cache()))
    prompts = read_prompts() if prompts is None else prompts
    table = paper_prompts(prompts, cfg.max_tokens, device=device, progress=progress)
    if table.dim != transformer.config.caption_channels:
        raise ValueError(f"T5 states have {table.dim} channels but {cfg.pretrained} expects "
                         f"{transformer.config.caption_channels}")
    return TextConditioned(transformer, table).eval()


def paper_decoder():
    """SD-XL VAE of PixArt-Σ: latents → [-1, 1] RGB images."""
    from diffusers import AutoencoderKL

    vae = _hub(f"the PixArt-Σ VAE ({PAPER_PIPELINE})",
               lambda: AutoencoderKL.from_pretrained(PAPER_PIPELINE, subfolder="vae", cache_dir=hub_cache())).eval()
    return lambda z: vae.decode(z.to(vae.dtype) / vae.config.scaling_factor).sample.float().clamp(-1, 1)


# --------------------------------------------------------------------------------------------------------------------
# The Table-5 row
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class T2IConfig:
    """The text-to-image grafting experiment around the preset (paper §8; UNKNOWN values are ours, marked)."""

    operator: str = "hyena_x"
    synthetic_pairs: int = 600  # paper: 12k synthetic pairs for stage 2 [W]
    stage1_pairs: int = 400  # paper: 8k for stage 1 [W] — here the first ones of the same set
    lora_rank: int = 8  # paper: 64 at width 1152; ours ≈ 64·128/1152 rounded up to a power of 2
    stage2_lr: float | None = 1e-3  # UNKNOWN in the paper; LoRA adapters get 2× the tiny full-finetune lr
    speed_batch: int = 2
    long_tokens: int | None = 4096  # also time the same models at this many tokens (None: skip)
    speed_repeats: int = 20
    eval_stage1: bool = True  # also score the grafted model before stage 2
    control: bool = True  # also the teacher + the identical LoRA stage 2 on the same pairs (tiny-testbed.md lesson 1)
    # sampler for the synthetic pairs and the evaluation; None → the preset's (``preset.eval``)
    scheduler: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None


T2I_PRESETS = {
    # Sampler, steps and CFG of the paper's generation and GenEval runs are UNKNOWN (§8); PixArt-Σ's defaults are a
    # 20-step DPM-Solver at CFG 4.5 — we use 20 DDIM steps at CFG 4.5.
    "paper": T2IConfig(synthetic_pairs=12_000, stage1_pairs=8_000, lora_rank=64, stage2_lr=None, long_tokens=None,
                       speed_repeats=10, eval_stage1=False, control=False, scheduler="ddim", steps=20,
                       guidance_scale=4.5),
    # CFG 4.5 as PixArt-Σ (and the paper preset): the tiny teacher's prompt accuracy at DDIM 10 was 25 % at CFG 1.5
    # (the class-conditional preset's), 59 % at 3.0 and 78 % at 4.5 (300 samples, measured).
    "tiny": T2IConfig(guidance_scale=4.5),
    "micro": T2IConfig(synthetic_pairs=40, stage1_pairs=24, lora_rank=2, long_tokens=256, speed_repeats=2),
    # the paper's settings at rehearsal scale (fake prerequisites, benchmark.fakes.make_pixart): only counts change
    "paper-smoke": T2IConfig(synthetic_pairs=8, stage1_pairs=4, lora_rank=64, stage2_lr=None, long_tokens=None,
                             speed_repeats=2, eval_stage1=False, control=False, scheduler="ddim", steps=2,
                             guidance_scale=4.5),
}


def row_settings(preset_name: str) -> dict:
    """This module's own settings for a preset: part of the ``table5`` runs' identity (``benchmark.dag``)."""
    return {"pixart": PIXART_PRESETS.get(preset_name), "t2i": T2I_PRESETS.get(preset_name)}


def t2i_config(preset: Preset) -> T2IConfig:
    try:
        return T2I_PRESETS[preset.name]
    except KeyError:
        raise ValueError(f"no text-to-image config for preset {preset.name!r}; known: {', '.join(T2I_PRESETS)}"
                         ) from None


def sampler_settings(preset: Preset, cfg: T2IConfig) -> dict:
    """Scheduler, steps and CFG scale of the experiment (``cfg`` overrides of ``preset.eval``)."""
    ev = preset.eval
    return {"scheduler": cfg.scheduler or ev.scheduler, "steps": cfg.steps or ev.steps,
            "guidance_scale": cfg.guidance_scale if cfg.guidance_scale is not None else ev.guidance_scale}


def sampling(model: nn.Module, prompt_ids: torch.Tensor, preset: Preset, pix: PixArtConfig, cfg: T2IConfig, *,
             seed: int, progress: bool = False) -> torch.Tensor:
    """Samples of ``model`` for ``prompt_ids`` (``sampler_settings``; batch size and bf16 from ``preset.eval``)."""
    from graft_core.sampler import sample

    return sample(model, prompt_ids, teacher=pix.diffusion(), seed=seed, batch_size=preset.eval.batch_size,
                  bf16=preset.eval.bf16, progress=progress, **sampler_settings(preset, cfg))


def synthetic_pairs(teacher: TextConditioned, preset: Preset, pix: PixArtConfig, cfg: T2IConfig, path: Path,
                    progress: bool = False) -> dict[str, torch.Tensor]:
    """``cfg.synthetic_pairs`` teacher samples for prompt ids cycled over the prompt list (cached in ``path``)."""
    from graft_core.paths import atomic_torch_save

    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    ids = torch.arange(cfg.synthetic_pairs) % teacher.prompts.null_id
    x0 = sampling(teacher, ids, preset, pix, cfg, seed=preset.stage1.seed + 1_000_003, progress=progress)
    pairs = {"x0": x0.clamp(-1, 1) if pix.pretrained is None else x0, "prompts": ids}
    atomic_torch_save(pairs, path)
    return pairs


def diffusion_of(model: nn.Module) -> TeacherConfig:
    """The sampler's ``TeacherConfig`` read from a (wrapped) PixArt's own config: sizes from the checkpoint, PixArt's
    1000-step linear β schedule (the DiT one). Why: the sampler needs no preset, so a paper checkpoint of any
    admitted width or sample size samples at its own size."""
    cfg = model.config
    return TeacherConfig(pretrained=None, num_layers=len(model.transformer_blocks),
                         num_attention_heads=cfg.num_attention_heads, attention_head_dim=cfg.attention_head_dim,
                         in_channels=cfg.in_channels, out_channels=cfg.out_channels, sample_size=cfg.sample_size,
                         patch_size=cfg.patch_size, num_classes=int(cfg.num_embeds_ada_norm))


SHARD_META = "synthetic.json"


def shard_path(out_dir: Path, shard: int) -> Path:
    return Path(out_dir) / f"shard_{shard:05d}.pt"


def num_shards(num_pairs: int, shard_size: int) -> int:
    return -(-int(num_pairs) // int(shard_size))


def synthetic_shards(teacher: TextConditioned, out_dir: Path, *, num_pairs: int, shard_size: int, rank: int = 0,
                     world_size: int = 1, seed: int = 0, scheduler: str = "ddim", steps: int = 20,
                     guidance_scale: float = 4.5, batch_size: int = 64, bf16: bool = False,
                     device: torch.device | str | None = None, clamp: bool = False,
                     progress: bool = False) -> list[Path]:
    """Task ``rank`` of ``world_size`` draws the synthetic pairs of the shards ``s ≡ rank (mod world_size)``:
    teacher samples ``x0`` (model space; ``clamp`` → clipped to [-1, 1], for pixel-space teachers) for the prompt ids
    ``arange(num_pairs) % null_id`` (cycled over the prompt list), one atomically written file per shard of
    ``shard_size`` pairs. Returns the files of this task's shards.

    Why: 12k PixArt-Σ 2K samples are hours of GPU time, so they run as a resumable array job — a shard already on
    disk is skipped, a killed task loses at most the shard in progress. Shard ``s`` draws its noise from seeds
    ``seed + s·⌈shard_size/batch_size⌉ + i`` (batch ``i``, as ``graft_core.sampler.sample``): disjoint ranges, so
    the pairs depend on ``seed``, ``shard_size`` and ``batch_size`` but not on ``world_size``. ``synthetic.json``
    records the settings; a folder holding another set is refused rather than mixed.
    """
    from graft_core.paths import atomic_torch_save
    from graft_core.sampler import sample

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    if num_pairs < 1 or shard_size < 1:
        raise ValueError(f"num_pairs and shard_size must be positive (got {num_pairs}, {shard_size})")
    out_dir = Path(out_dir)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                         else "cpu")
    null_id = teacher.prompts.null_id
    diffusion = diffusion_of(teacher)
    meta = {"num_pairs": int(num_pairs), "shard_size": int(shard_size), "num_shards": num_shards(num_pairs, shard_size),
            "seed": int(seed), "scheduler": scheduler, "steps": int(steps), "guidance_scale": float(guidance_scale),
            "batch_size": int(batch_size), "bf16": bool(bf16), "clamp": bool(clamp), "null_id": int(null_id),
            "prompts": getattr(teacher.prompts, "key", None) or stable_hash(teacher.prompts.prompts),
            "teacher": to_jsonable(diffusion), "weights": module_fingerprint(teacher)}
    meta_file = out_dir / SHARD_META
    if meta_file.exists():
        old = json.loads(meta_file.read_text())
        if old != meta:
            changed = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise ValueError(f"{out_dir} holds synthetic pairs of other settings ({', '.join(changed)} differ); use "
                             f"another folder")
    else:
        atomic_write_json(meta_file, meta)
    per_shard = -(-int(shard_size) // int(batch_size))
    home = next(teacher.parameters()).device
    mine = list(range(rank, meta["num_shards"], world_size))
    todo = [s for s in mine if not shard_path(out_dir, s).exists()]
    if todo:
        teacher.to(device)
    try:
        for s in todo:
            lo, hi = s * shard_size, min(num_pairs, (s + 1) * shard_size)
            ids = torch.arange(lo, hi) % null_id
            x0 = sample(teacher, ids, teacher=diffusion, scheduler=scheduler, steps=steps,
                        guidance_scale=guidance_scale, seed=seed + s * per_shard, batch_size=batch_size, bf16=bf16,
                        device=device, progress=progress)
            atomic_torch_save({"x0": x0.clamp(-1, 1) if clamp else x0, "ids": ids, "shard": s, "lo": lo, "hi": hi},
                              shard_path(out_dir, s))
    finally:
        if todo:
            teacher.to(home)
    return [shard_path(out_dir, s) for s in mine]


def load_synthetic(folders: Path | str | list, num_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0 [num_pairs, C, H, W], ids [num_pairs])``: the shards of ``synthetic_shards`` merged in order, from one
    folder or several (tasks that wrote elsewhere); every folder must hold the same set (``synthetic.json``) and
    every shard must be present — else one error naming the first missing shard and the task that draws it."""
    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    metas = []
    for f in folders:
        if not (f / SHARD_META).exists():
            raise FileNotFoundError(f"{f} holds no synthetic pairs ({SHARD_META} missing); run synthetic_shards")
        metas.append(json.loads((f / SHARD_META).read_text()))
    if any(m != metas[0] for m in metas[1:]):
        raise ValueError(f"the folders {[str(f) for f in folders]} hold different synthetic sets")
    meta = metas[0]
    if num_pairs > meta["num_pairs"]:
        raise ValueError(f"{num_pairs} pairs asked for, the set in {folders[0]} has {meta['num_pairs']}")
    x0, ids = [], []
    for s in range(num_shards(num_pairs, meta["shard_size"])):
        path = next((shard_path(f, s) for f in folders if shard_path(f, s).exists()), None)
        if path is None:
            lo, hi = s * meta["shard_size"], min(meta["num_pairs"], (s + 1) * meta["shard_size"])
            raise FileNotFoundError(f"synthetic pair shard {s} (pairs {lo}..{hi - 1}) is missing from "
                                    f"{', '.join(str(f) for f in folders)}: its task (rank s mod world_size) did not "
                                    f"finish; rerun it")
        shard = torch.load(path, map_location="cpu", weights_only=True)
        x0.append(shard["x0"])
        ids.append(shard["ids"])
    return torch.cat(x0)[:num_pairs], torch.cat(ids)[:num_pairs]


def synthetic_identity(folder: Path | str) -> str:
    """A name for a synthetic set (hash of its ``synthetic.json``): what a capture of it must be keyed by."""
    return stable_hash(json.loads((Path(folder) / SHARD_META).read_text()))


@dataclass(frozen=True)
class SyntheticSubset:
    """Pairs ``[start, stop)`` of a synthetic set in the ``graft_core.data.sources.Subset`` shape that
    ``capture.capture_activations(data=...)`` reads; ``identity`` keys the capture by the set and the range (a
    plain ``(x0, ids, indices)`` tuple would be keyed by the indices alone, the same for every synthetic set)."""

    x0: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray
    identity: str


def synthetic_subset(folders, start: int, stop: int, *, teacher_id: str = "") -> SyntheticSubset:
    """Pairs ``start..stop-1`` of the synthetic set (paper: 0..8k for stage 1, the rest held out); ``teacher_id``
    (e.g. ``pixart_key``) enters the identity too, since the capture key names the teacher only by its sizes."""
    first = Path(folders) if isinstance(folders, (str, Path)) else Path(list(folders)[0])
    x0, ids = load_synthetic(folders, stop)
    return SyntheticSubset(x0=x0[start:stop], labels=ids[start:stop], indices=np.arange(start, stop),
                           identity=f"synthetic-{synthetic_identity(first)}-{teacher_id}-{start}-{stop}")


@torch.inference_mode()
def capture_attn(teacher: TextConditioned, x0: torch.Tensor, prompts: torch.Tensor, layers: tuple[int, ...],
                 pix: PixArtConfig, seed: int, batch_size: int = 200) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Operator inputs and ungated outputs of ``attn1`` in ``layers`` for noised ``x0`` (one uniform timestep each,
    the true prompt) — the stage-1 data, as ``capture.capture_activations`` records it for DiT."""
    from graft_core.capture import record_sites
    from graft_core.diffusion import make_train_scheduler

    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, pix.num_train_timesteps, (len(x0),), generator=gen)
    x_t = make_train_scheduler(pix.diffusion()).add_noise(x0, torch.randn(x0.shape, generator=gen), t)
    parts: dict[int, list] = {layer: [] for layer in layers}
    with record_sites(teacher, sites=("attn",), layers=layers) as record:
        for lo in range(0, len(x0), batch_size):
            teacher(x_t[lo:lo + batch_size], timestep=t[lo:lo + batch_size],
                    class_labels=prompts[lo:lo + batch_size], return_dict=False)
            for layer in layers:
                parts[layer].append(tuple(v.float() for v in record[(layer, "attn")]))
    return {layer: (torch.cat([p[0] for p in v]), torch.cat([p[1] for p in v])) for layer, v in parts.items()}


def stage1(teacher: TextConditioned, pairs: dict, plan, preset: Preset, pix: PixArtConfig, cfg: T2IConfig,
           out_root: Path, *, pairs_key: str = "", progress: bool = False) -> tuple[dict[int, Path], list[dict]]:
    """Distil one operator per grafted layer on the first ``stage1_pairs`` pairs (the rest: validation); a layer
    whose folder holds a finished operator for the same spec (``pairs_key`` names the synthetic set) is reused."""
    from graft_core import operators
    from graft_core.distill import METRICS_FILE, WEIGHTS_FILE as OP_FILE, read_metrics, train_operator
    from graft_core.paths import atomic_torch_save

    dims = {"dim": pix.hidden_size, "num_heads": pix.num_attention_heads,
            "seq_len": (pix.sample_size // pix.patch_size) ** 2}
    dirs, results, captures = {}, [], None
    for layer in plan.layers:
        folder = dirs[layer] = Path(out_root) / f"layer_{layer:03d}"
        spec_hash = stable_hash({"pixart": pix, "cfg": cfg, "stage1": preset.stage1, "layer": layer, "pairs": pairs_key,
                                 "operator": plan.operator, "options": plan.option_dict, "bf16": preset.stage2.bf16})
        done = read_metrics(folder)
        if done is not None and done.get("spec_hash") == spec_hash and (folder / OP_FILE).exists():
            results.append(done)
            continue
        if captures is None:
            n1 = cfg.stage1_pairs
            captures = [capture_attn(teacher, pairs["x0"][sl], pairs["prompts"][sl], plan.layers, pix,
                                     seed=preset.stage1.seed + k)
                        for k, sl in enumerate((slice(0, n1), slice(n1, None)))]
        seed = preset.stage1.seed + layer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            op = operators.build(plan.operator, dims["dim"], num_heads=dims["num_heads"], seq_len=dims["seq_len"],
                                 **plan.option_dict)
        (x, y), (vx, vy) = captures[0][layer], captures[1][layer]
        state, metrics = train_operator(op, x, y, val_inputs=vx if len(vx) else None,
                                        val_targets=vy if len(vy) else None, stage1=preset.stage1, site="attn",
                                        seed=seed, bf16=preset.stage2.bf16, progress=progress)
        metrics.update(layer=layer, operator=plan.operator, spec_hash=spec_hash)
        atomic_torch_save(state, folder / OP_FILE)
        atomic_write_json(folder / METRICS_FILE, plain(metrics))
        results.append(metrics)
    return dirs, results


def evaluate_t2i(model: TextConditioned, preset: Preset, pix: PixArtConfig, cfg: T2IConfig, *, out_dir: Path,
                 progress: bool = False) -> dict:
    """Prompt following and sample quality. Tiny/micro: ``preset.eval.num_samples`` samples for prompts cycled over
    the list, the full metric set against the real digits (``class_acc`` = prompt accuracy). Paper: GenEval."""
    if pix.pretrained:
        from graft_core.text import geneval_metadata, geneval_paths, geneval_score

        decode = paper_decoder()
        texts_all = sorted({m["prompt"] for m in geneval_metadata(geneval_paths()[0])})
        wrapper = TextConditioned(model.transformer, paper_prompts(texts_all, pix.max_tokens))  # T5 once, cached
        index = {text: i for i, text in enumerate(texts_all)}

        def generate(texts: list[str], seed: int):
            from graft_core.sampler import to_uint8

            z = sampling(wrapper, torch.tensor([index[t] for t in texts]), preset, pix, cfg, seed=seed)
            with torch.inference_mode():
                return to_uint8(decode(z))

        score = geneval_score(generate, out_dir=out_dir / "geneval", seed=preset.eval.seed)
        return {"metrics": {}, "geneval_or_acc": score["geneval_overall"], **score}
    from graft_core.evaluate import real_images
    from graft_core.metrics import compute_metrics, load_classifier
    from graft_core.sampler import to_uint8
    from graft_core.text import prompt_accuracy, prompt_digit

    ids = torch.arange(preset.eval.num_samples) % model.prompts.null_id
    start = time.time()
    images = to_uint8(sampling(model, ids, preset, pix, cfg, seed=preset.eval.seed, progress=progress))
    seconds = time.time() - start
    metrics = compute_metrics(images, real_images(preset, "train")[0], extractor=preset.eval.extractor, preset=preset,
                              labels=prompt_digit(ids))
    acc = prompt_accuracy(images, ids, load_classifier(preset), len(pix.templates))
    return {"metrics": {**metrics, "num_samples": len(ids), "sample_seconds": round(seconds, 2)},
            "geneval_or_acc": acc["prompt_acc"], **acc}


def forward_call(model: nn.Module, pix: PixArtConfig, batch: int, side: int | None = None):
    """A zero-argument forward pass of ``model`` at ``side``×``side`` inputs (default: the training size)."""
    gen = torch.Generator().manual_seed(0)
    side = side or pix.sample_size
    x = torch.randn(batch, pix.in_channels, side, side, generator=gen)
    t = torch.randint(0, pix.num_train_timesteps, (batch,), generator=gen)
    ids = torch.randint(0, model.prompts.null_id, (batch,), generator=gen)
    return lambda: model(x, timestep=t, class_labels=ids, return_dict=False)[0]


def measure_speedup(teacher: nn.Module, student: nn.Module, pix: PixArtConfig, cfg: T2IConfig) -> dict:
    """One forward pass (batch ``cfg.speed_batch``) of teacher and student, interleaved; min over repeats."""
    from graft_core.depth_width import interleaved_latency

    tokens = (pix.sample_size // pix.patch_size) ** 2
    sizes = {tokens: pix.sample_size}
    if cfg.long_tokens and cfg.long_tokens != tokens:
        sizes[cfg.long_tokens] = int(round(cfg.long_tokens ** 0.5)) * pix.patch_size
    out = {"batch": cfg.speed_batch, "threads": torch.get_num_threads()}
    for n, side in sizes.items():
        calls = {name: forward_call(m.eval(), pix, cfg.speed_batch, side) for name, m in
                 (("teacher", teacher), ("grafted", student))}
        lat = interleaved_latency(calls, repeats=cfg.speed_repeats if n == tokens else max(2, cfg.speed_repeats // 4))
        out[str(n)] = {"tokens": n, "side": side, "forward_seconds": lat,
                       "speedup": lat["teacher"]["min"] / lat["grafted"]["min"],
                       "speedup_median": lat["teacher"]["median"] / lat["grafted"]["median"]}
    return out


def _summary(evaluation: dict | None) -> dict | None:
    keys = ("geneval_or_acc", "metrics", "prompt_acc_by_template", "geneval_tasks")
    return None if evaluation is None else {k: evaluation[k] for k in keys if k in evaluation}


def teacher_evaluation(teacher: TextConditioned, preset: Preset, pix: PixArtConfig, cfg: T2IConfig, folder: Path,
                       eval_key: str, *, progress: bool = False) -> dict:
    """The teacher's ``evaluate_t2i`` record, computed once per evaluation protocol and shared by every row.

    Both rows of a table can run as concurrent jobs, so the folder is an artefact-cache entry: one job evaluates
    (in the key's resume folder, so an interrupted GenEval run keeps its images), the other waits and reads it.
    """
    def build(tmp: Path, resume: Path) -> None:
        record = {**plain(evaluate_t2i(teacher, preset, pix, cfg, out_dir=resume, progress=progress)),
                  "spec_hash": eval_key}
        for item in sorted(resume.iterdir()):  # GenEval's images and results live beside the record, as before
            item.rename(tmp / item.name)
        atomic_write_json(tmp / "eval.json", record)

    folder = cache.get_or_build(folder, build, marker="eval.json", resume=True)
    cache.verify(folder, ["eval.json"])
    return json.loads((folder / "eval.json").read_text())


def run_row(row_config: dict, *, preset: Preset, out_dir: Path, progress: bool = True) -> dict:
    """The ``table5`` row: the baseline (no ``graft`` in the row config) or graft → stage 1 → LoRA stage 2."""
    from graft_core.accounting import count_params
    from graft_core.depth_width import cached_json
    from graft_core.distill import assemble
    from graft_core.finetune import finetune
    from graft_core.plan import GraftPlan

    pix, cfg = pretrained_pixart(pixart_config(preset)), t2i_config(preset)
    out_dir = Path(out_dir)
    teacher = load_pixart_teacher(preset, progress=progress)
    eval_spec = {"pixart": pix, "data": preset.data, "eval": preset.eval, "classifier": preset.classifier,
                 "sampler": sampler_settings(preset, cfg)}
    eval_key = stable_hash(eval_spec)  # the teacher is scored once per evaluation protocol, shared by both rows
    teacher_folder = cache_root() / "pixart" / pixart_key(pix, preset.data) / f"eval-{eval_key}"
    teacher_eval = teacher_evaluation(teacher, preset, pix, cfg, teacher_folder, eval_key, progress=progress)
    base = {"model": "pixart_sigma" if pix.pretrained else "pixart_tiny", "pixart_key": pixart_key(pix, preset.data),
            "params_m": count_params(teacher) / 1e6, "teacher_geneval_or_acc": teacher_eval["geneval_or_acc"]}
    graft_spec = row_config.get("graft")
    if not graft_spec:  # the baseline row
        return {**{k: v for k, v in teacher_eval.items() if k != "spec_hash"}, **base, "speedup": 1.0}
    times = {}
    layers = tuple(graft_spec.get("layers") or ())
    if not layers or max(layers) >= pix.num_layers:
        layers = pixart_layers(pix.num_layers)
    plan = GraftPlan(site="attn", operator=graft_spec.get("operator", cfg.operator), layers=layers,
                     options=graft_spec.get("options") or ())
    start = time.time()
    pairs_key = stable_hash({"pixart": pix, "data": preset.data, "n": cfg.synthetic_pairs, "seed": preset.stage1.seed,
                             "sampler": sampler_settings(preset, cfg), "batch": preset.eval.batch_size,
                             "bf16": preset.eval.bf16})
    pairs = synthetic_pairs(teacher, preset, pix, cfg, out_dir / f"synthetic_pairs-{pairs_key}.pt",
                            progress=progress)
    times["synthetic_seconds"] = round(time.time() - start, 1)
    start = time.time()
    dirs, s1_metrics = stage1(teacher, pairs, plan, preset, pix, cfg, out_dir / "stage1", pairs_key=pairs_key,
                              progress=progress)
    times["stage1_seconds"] = round(time.time() - start, 1)
    student = TextConditioned(assemble(teacher.transformer, plan, dirs, seed=preset.stage1.seed),
                              copy.deepcopy(teacher.prompts)).eval()
    spec = {**eval_spec, "cfg": cfg, "plan": plan.to_dict(), "stage1": preset.stage1, "pairs": pairs_key}
    stage1_eval = None
    if cfg.eval_stage1:
        stage1_eval = cached_json(out_dir / "eval_stage1.json", stable_hash(spec),
                                  lambda: evaluate_t2i(student, preset, pix, cfg, out_dir=out_dir / "stage1_eval"))
    s2 = dataclasses.replace(preset.stage2, lora_rank=cfg.lora_rank, lr=cfg.stage2_lr or preset.stage2.lr,
                             data_fraction=1.0)
    start = time.time()
    s2_key = stable_hash({**spec, "stage2": s2, "pairs": pairs_key})
    model, s2_metrics = finetune(student, preset.replace(teacher=pix.diffusion()),
                                 out_dir=out_dir / f"stage2-{s2_key}", stage2=s2, progress=progress,
                                 data=(pairs["x0"], pairs["prompts"], np.arange(len(pairs["prompts"]))))
    times["stage2_seconds"] = round(time.time() - start, 1)
    start = time.time()
    final = cached_json(out_dir / "eval_final.json", s2_key,
                        lambda: evaluate_t2i(model, preset, pix, cfg, out_dir=out_dir / "final_eval",
                                             progress=progress))
    times["eval_seconds"] = round(time.time() - start, 1)
    control = None
    if cfg.control:  # the teacher through the very same LoRA stage 2: what the synthetic data and LoRA alone do
        start = time.time()
        ctrl_key = stable_hash({"control": eval_spec, "cfg": cfg, "stage2": s2, "pairs": pairs_key})
        ctrl_model, _ = finetune(teacher, preset.replace(teacher=pix.diffusion()),
                                 out_dir=out_dir / f"control-stage2-{ctrl_key}", stage2=s2, progress=progress,
                                 data=(pairs["x0"], pairs["prompts"], np.arange(len(pairs["prompts"]))))
        control = cached_json(out_dir / "eval_control.json", ctrl_key,
                              lambda: evaluate_t2i(ctrl_model, preset, pix, cfg, out_dir=out_dir / "control_eval",
                                                   progress=progress))
        times["control_seconds"] = round(time.time() - start, 1)
    speed = measure_speedup(teacher, model, pix, cfg)
    tokens = str((pix.sample_size // pix.patch_size) ** 2)
    result = {k: v for k, v in final.items() if k != "spec_hash"}
    return {
        **result, **base, "layers": list(plan.layers), "layer_index_base": 0, "operator_name": plan.operator,
        "lora_rank": cfg.lora_rank, "synthetic_pairs": cfg.synthetic_pairs, "stage1_pairs": cfg.stage1_pairs,
        "params_m": count_params(model) / 1e6, "teacher_params_m": base["params_m"],
        "speedup": speed[tokens]["speedup"], "latency": speed,
        "speedup_long": speed[str(cfg.long_tokens)]["speedup"] if str(cfg.long_tokens) in speed else None,
        "long_tokens": cfg.long_tokens if str(cfg.long_tokens) in speed else None,
        "teacher_metrics": teacher_eval["metrics"],
        "teacher_prompt_acc_by_template": teacher_eval.get("prompt_acc_by_template"),
        "stage1_only": _summary(stage1_eval), "control_teacher_lora": _summary(control),
        "stage1_layers": [{k: m.get(k) for k in ("layer", "train_mse", "val_mse", "train_rel_mse", "initial_train_mse")}
                          for m in s1_metrics],
        "stage2": {k: s2_metrics.get(k) for k in ("steps", "final_loss", "trainable_params", "total_params",
                                                   "lora_rank", "seconds")},
        "times": times,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train (or find) the preset's text-to-image PixArt teacher.")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", type=Path, help="parent folder to write <key>/ into (default: the user cache)")
    parser.add_argument("--retrain", action="store_true", help="train even if a cached/shipped teacher exists")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (1 is fastest on a busy 2-core machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    cfg = pixart_config(preset)
    if cfg.pretrained:
        raise SystemExit(f"preset {args.preset!r} uses the pretrained {cfg.pretrained}; nothing to train")
    key = pixart_key(cfg, preset.data)
    if not args.retrain and any((d / WEIGHTS_FILE).exists() for d in pixart_dirs(key)):
        print(f"PixArt teacher {key} already exists: {[str(d) for d in pixart_dirs(key) if d.exists()]}")
        return
    out = args.out / key if args.out else pixart_dirs(key)[1]
    print(json.dumps(train_pixart(preset, out), indent=2))


if __name__ == "__main__":
    main()
