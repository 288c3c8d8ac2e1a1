"""Text-to-image grafting (paper Table 5, §8): Hyena-X in half of PixArt's self-attention layers, two stages, LoRA.

The models and operations of the ``table5`` steps (``benchmark/targets/table5.py`` says what a row does; each item
below is one job):

1. **Teacher** (``load_pixart_teacher``). ``paper``: PixArt-Σ 2K (``PixArtTransformer2DModel.from_pretrained(
   "PixArt-alpha/PixArt-Sigma-XL-2-2K-MS", subfolder="transformer")``, T5 + VAE from
   ``PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers``; weights from the local HF cache, else ``MissingWeightsError``;
   the prompts from ``$GRAFTBENCH_PIXART_PROMPTS``, their T5 states computed once by T5-XXL in bf16 on GPUs, a
   resumable shard array of their own (``encode_paper_prompts`` → ``text.encode_prompts``, the ``encode`` steps) and
   read from the cache (``paper_prompts`` → ``CachedPrompts``); ``pretrained_pixart`` checks the
   structure and reads width, caption channels and sample size from the checkpoint). ``tiny``: a text-conditioned
   ``PixArtTransformer2DModel`` with the tiny DiT teacher's sizes (16×16 digits, patch 2 → 64 tokens, 8 layers, width
   128, ``ada_norm_single``, cross-attention on captions from ``graft_core.text_to_image.text.HashTextEncoder``), trained here on
   the digits with captions such as "a handwritten seven" and cached by config hash like ``graft_core.models.teacher``
   (shipped under ``graft_core/assets/pixart/<key>/`` when present).
2. **Synthetic pairs** (``synthetic_shards``, a resumable sampling array; ``load_synthetic`` merges it): teacher
   samples for prompts cycled over the prompt list (paper: 12k pairs, the first 8k for stage 1 [W]; tiny: 600 / 400).
3. **Capture and stage 1**: ``capture.capture_activations`` on a range of the pairs (``synthetic_subset``; inputs
   and ungated outputs of ``attn1`` on disk), then ``distill.distill_layer`` per grafted layer (L1, the MHA
   objective of Table 1); the remaining pairs are the validation set.
4. **Stage 2**: LoRA (peft, ``stage2.lora_rank``; paper rank 64) on every ``nn.Linear`` of ``attn1``/``ff``, grafted
   operators included, trained with the diffusion loss on all synthetic pairs (``graft_core.stages.finetune``). The
   cross-attention ``attn2`` and every base weight stay frozen.
5. **Evaluation**. Prompt following — paper: GenEval overall, its images drawn by a resumable sampling array
   (``geneval_sampling`` → ``text.geneval_sample_shards``) and scored by the eval step (``text.geneval_evaluate``,
   detector supplied by the user); tiny (``evaluate_t2i``): the fraction of samples that the digit classifier assigns to the prompted
   digit, plus the full metric set against the real digits (FID on the classifier's features).
6. **Latency** (``measure_speedup``): one forward pass (batch 2, as Table 6) of teacher vs student on the job's
   device, at the model's token count and — because at 64 tokens attention is cheap and the speed-up is ~1 — of the
   same blocks at ``long_tokens`` (4096) tokens.

Layer indices are **0-based** (``transformer_blocks[i]``): the paper's 8, 10, 12, 14, 16, 18, 20–27 are read as
code indices (index 27 only exists 0-based, §12.8). Other depths use the same rule (``pixart_layers``): half of the
layers, an interleaved run of even indices from ``round(8/28·L)`` plus the contiguous tail of ``round(8/28·L)``
layers — (2, 4, 6, 7) for the 8-layer tiny teacher.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graft_core.runtime.artefacts import TrainedArtefact
from graft_core.runtime.cache import sha256_file
from graft_core.config import stable_hash, to_jsonable
from graft_core.errors import MissingWeightsError
from graft_core.runtime.paths import atomic_write_json, cache_root
from graft_core.grafting.plan import pixart_layers  # noqa: F401  (re-exported: the rule lives in plan, torch-free)
from graft_core.presets import Preset, TeacherConfig
from graft_core.runtime.shards import ShardArray, check_settings, consecutive_seed, num_shards
from graft_core.models.structure import hub_cache  # the cache HF_HOME names now (huggingface_hub reads it once)
from graft_core.models.teacher import train_step
from graft_core.text_to_image.text import (PROMPT_SHARD_SIZE, TEMPLATES, CachedPrompts, HashTextEncoder, PromptTable,
                                          TextConditioned, digit_prompts, encode_prompts, missing_prompt_shards,
                                          module_fingerprint, prompts_key, read_prompts)

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
    # training (ignored when pretrained). Sized for <= 15 min on 2 free cores (~2.8 steps/s).
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


PIXART = TrainedArtefact(kind="pixart", name="pixart", weights_file=WEIGHTS_FILE, meta_file=META_FILE,
                         what="PixArt teacher", command="graft_core.text_to_image.pixart")
pixart_key = PIXART.key  # (PixArtConfig, DataConfig) → key
pixart_dirs = PIXART.dirs  # key → [shipped assets folder, user cache folder]


def training_prompts(num_prompts: int | None = None) -> list[str]:
    """The first ``num_prompts`` prompts of the prompt file (all: None): what the paper teacher is driven by."""
    prompts = read_prompts()
    return prompts[:num_prompts] if num_prompts else prompts


def load_pixart_teacher(preset: Preset, *, train_if_missing: bool = True, progress: bool = False,
                        num_prompts: int | None = None, device: torch.device | str | None = None,
                        cfg: PixArtConfig | None = None, encode: bool = True) -> TextConditioned:
    """The preset's text-to-image teacher in eval mode (trained and cached when absent; paper: Hub cache, driven by
    the first ``num_prompts`` prompts of the prompt file — the synthetic pairs cycle over them — with their T5
    states read from the cache, ``encode``: encoded first on ``device`` where missing). ``cfg``: the run's hashed
    ``PixArtConfig`` (default: the preset's)."""
    cfg = cfg or pixart_config(preset)
    if cfg.pretrained:
        return load_paper_teacher(cfg, training_prompts(num_prompts), device=device, progress=progress,
                                  encode=encode)
    return load_pixart_dir(PIXART.folder(pixart_key(cfg, preset.data),
                                         functools.partial(_write_pixart, preset, progress=progress),
                                         preset=preset.name, train_if_missing=train_if_missing, resume=True))


def load_pixart_dir(folder: Path) -> TextConditioned:
    from diffusers import PixArtTransformer2DModel

    from graft_core.config import from_dict

    meta = PIXART.verified_meta(folder)
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
    return PIXART.train(out_dir, functools.partial(_write_pixart, preset, progress=progress), resume=True)


def _write_pixart(preset: Preset, tmp: Path, resume: Path, *, progress: bool = True) -> None:
    """Train (continuing from ``resume/checkpoint.pt`` when it matches) and write the teacher into ``tmp``."""
    from tqdm.auto import tqdm

    from graft_core.data import load_digits
    from graft_core.models.diffusion import drop_labels, make_train_scheduler
    from graft_core.models.ema import EMA
    from graft_core.runtime.paths import atomic_torch_save

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
        idx = torch.randint(0, len(x_all), (cfg.train_batch_size,), generator=gen)
        template = torch.randint(0, len(cfg.templates), (cfg.train_batch_size,), generator=gen)
        prompt = drop_labels(template * 10 + y_all[idx], null_id, cfg.train_caption_dropout, gen)
        losses.append(train_step(model, scheduler, opt, ema, cfg, step, x_all[idx], prompt, gen))
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
            "made_by": f"python -m graft_core.text_to_image.pixart --preset {preset.name}"}
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
    from graft_core.errors import StructureMismatch
    from graft_core.models.structure import hub_file

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

    from graft_core.runtime.cache import sha256_file

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
    from graft_core.models.structure import hub_file

    config = hub_file(repo, f"{subfolder}/config.json")
    if config is None:
        raise MissingWeightsError(f"{repo}/{subfolder} is not in the Hugging Face cache")
    parts = []
    for f in sorted(config.parent.iterdir()):
        parts.append(f"{f.name}={f.resolve().name if f.is_symlink() else _file_id(f)}")
    return stable_hash(parts)


T5_DTYPE = "bfloat16"  # PixArt's own T5 embedder runs T5-XXL in bf16 (fp16 overflows; fp32 would double its 19 GB)


def load_t5(device: torch.device | str | None = None):
    """PixArt-Σ's T5 tokenizer and T5 encoder (in ``T5_DTYPE``) from the local HF cache (encoder on ``device``)."""
    from transformers import T5EncoderModel

    tokenizer = load_t5_tokenizer()
    encoder = _hub(f"the T5 encoder ({PAPER_PIPELINE})",
                   lambda: T5EncoderModel.from_pretrained(PAPER_PIPELINE, subfolder="text_encoder",
                                                          cache_dir=hub_cache(), torch_dtype=getattr(torch, T5_DTYPE)))
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


def _t5_id() -> str:
    return _hub(f"the T5 encoder ({PAPER_PIPELINE})",
                lambda: f"{_hub_folder_id(PAPER_PIPELINE, 'text_encoder')}:{T5_DTYPE}")


def encode_paper_prompts(prompts: list[str], max_tokens: int, *, rank: int = 0, world_size: int = 1,
                         shard_size: int = PROMPT_SHARD_SIZE, batch_size: int = 32,
                         device: torch.device | str | None = None, progress: bool = False) -> dict:
    """Task ``rank`` of ``world_size`` of the encoding array of ``prompts`` by PixArt-Σ's T5 (``text.encode_prompts``
    into ``cache_root()/t5_prompts``; T5 loaded only when this task has a shard left, on ``device``, default CUDA
    when there is one). Returns the entry, its key and the shards still missing (of any task)."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                         else "cpu")
    tokenizer = load_t5_tokenizer()
    entry = encode_prompts(prompts, tokenizer, lambda: load_t5(device)[1], max_tokens, cache_root() / PROMPT_CACHE,
                           device=device, batch_size=batch_size, encoder_id=_t5_id(), shard_size=shard_size,
                           rank=rank, world_size=world_size, progress=progress)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the loader's T5 is garbage once encode_prompts returns
    return {"entry": str(entry), "key": entry.name, "missing": missing_prompt_shards(entry)}


def paper_prompts(prompts: list[str], max_tokens: int, *, encode: bool = True,
                  device: torch.device | str | None = None, batch_size: int = 32,
                  progress: bool = False) -> CachedPrompts:
    """``prompts`` encoded by PixArt-Σ's T5, read from the cache. ``encode``: first encode every shard still missing
    in this process (``encode_paper_prompts`` as one task of one); without it a set whose encode steps have not all
    run is refused in one line (the benchmark's steps: T5-XXL is the ``encode`` array's GPU job, never theirs)."""
    if encode:
        report = encode_paper_prompts(prompts, max_tokens, device=device, batch_size=batch_size, progress=progress)
        return CachedPrompts(report["entry"])
    key = prompts_key(prompts, load_t5_tokenizer(), _t5_id(), max_tokens)
    return CachedPrompts(cache_root() / PROMPT_CACHE / key)


def load_paper_teacher(cfg: PixArtConfig, prompts: list[str] | None = None, *,
                       device: torch.device | str | None = None, progress: bool = False,
                       encode: bool = True) -> TextConditioned:
    """PixArt-Σ 2K (transformer) from the local HF cache, driven by ids of ``prompts`` (default: the file), whose
    T5 states are read from the cache (``paper_prompts``; ``encode``: encoded first where missing, T5 on
    ``device``/the GPU)."""
    from diffusers import PixArtTransformer2DModel

    pretrained_pixart(cfg)  # a checkpoint of another structure stops here, before any weights are read
    prompts = read_prompts() if prompts is None else prompts
    table = paper_prompts(prompts, cfg.max_tokens, device=device, progress=progress, encode=encode)
    transformer = _hub(f"PixArt-Σ ({cfg.pretrained})",
                       lambda: PixArtTransformer2DModel.from_pretrained(cfg.pretrained, subfolder="transformer",
                                                                    cache_dir=hub_cache()))
    if table.dim != transformer.config.caption_channels:
        raise ValueError(f"T5 states have {table.dim} channels but {cfg.pretrained} expects "
                         f"{transformer.config.caption_channels}")
    return TextConditioned(transformer, table).eval()


def paper_decoder(device: torch.device | str = "cpu"):
    """SD-XL VAE of PixArt-Σ on ``device``: latents → [-1, 1] RGB images."""
    from diffusers import AutoencoderKL

    from graft_core.data.decoder import vae_decoder

    vae = _hub(f"the PixArt-Σ VAE ({PAPER_PIPELINE})",
               lambda: AutoencoderKL.from_pretrained(PAPER_PIPELINE, subfolder="vae", cache_dir=hub_cache())).eval()
    return vae_decoder(vae.to(device))


# --------------------------------------------------------------------------------------------------------------------
# Operations of the Table-5 steps (the experiment itself is ``benchmark/targets/table5.py``)
# --------------------------------------------------------------------------------------------------------------------


def sampling(model: nn.Module, prompt_ids: torch.Tensor, preset: Preset, sampler: dict, *, seed: int,
             progress: bool = False) -> torch.Tensor:
    """Samples of ``model`` for ``prompt_ids`` with ``sampler`` (scheduler, steps, guidance_scale) at the model's own
    size (``diffusion_of``); batch size and bf16 from ``preset.eval`` (fp32 by default, TF32 matmuls on CUDA: the
    config decides, not the device), on the model's device."""
    from graft_core.evaluation.sampler import sample

    device = next(model.parameters()).device
    return sample(model, prompt_ids, teacher=diffusion_of(model), seed=seed, batch_size=preset.eval.batch_size,
                  bf16=preset.eval.bf16, device=device, progress=progress,
                  scheduler=sampler["scheduler"], steps=sampler["steps"], guidance_scale=sampler["guidance_scale"])


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


def synthetic_array(folders: Path | list[Path], num_pairs: int, shard_size: int) -> ShardArray:
    """The shard array of a synthetic set: a shard is done when its file is in (one of) ``folders``."""
    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]

    def marker(s: int) -> Path:
        return next((shard_path(f, s) for f in folders if shard_path(f, s).exists()), shard_path(folders[0], s))

    return ShardArray(int(num_pairs), int(shard_size), marker)


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
    ``seed + s·⌈shard_size/batch_size⌉ + i`` (batch ``i``, as ``graft_core.evaluation.sampler.sample``): disjoint ranges, so
    the pairs depend on ``seed``, ``shard_size`` and ``batch_size`` but not on ``world_size``. ``synthetic.json``
    records the settings; a folder holding another set is refused rather than mixed.
    """
    from graft_core.runtime.paths import atomic_torch_save
    from graft_core.evaluation.sampler import sample

    out_dir = Path(out_dir)
    array = synthetic_array(out_dir, num_pairs, shard_size)
    mine = array.mine(rank, world_size)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                         else "cpu")
    null_id = teacher.prompts.null_id
    diffusion = diffusion_of(teacher)
    meta = {"num_pairs": int(num_pairs), "shard_size": int(shard_size), "num_shards": array.num_shards,
            "seed": int(seed), "scheduler": scheduler, "steps": int(steps), "guidance_scale": float(guidance_scale),
            "batch_size": int(batch_size), "bf16": bool(bf16), "clamp": bool(clamp), "null_id": int(null_id),
            "prompts": getattr(teacher.prompts, "key", None) or stable_hash(teacher.prompts.prompts),
            "teacher": to_jsonable(diffusion), "weights": module_fingerprint(teacher)}
    check_settings(out_dir / SHARD_META, meta, what="synthetic pairs")
    per_shard = -(-int(shard_size) // int(batch_size))
    home = next(teacher.parameters()).device
    todo, _ = array.todo(rank, world_size)
    if todo:
        teacher.to(device)
    try:
        for s in todo:
            lo, hi = array.bounds(s)
            ids = torch.arange(lo, hi) % null_id
            x0 = sample(teacher, ids, teacher=diffusion, scheduler=scheduler, steps=steps,
                        guidance_scale=guidance_scale, seed=consecutive_seed(seed, s, per_shard),
                        batch_size=batch_size, bf16=bf16, device=device, progress=progress)
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
    array = synthetic_array(folders, meta["num_pairs"], meta["shard_size"])
    needed = range(num_shards(num_pairs, meta["shard_size"]))
    missing = array.missing(needed)
    if missing:
        lo, hi = array.bounds(missing[0])
        raise FileNotFoundError(f"synthetic pair shard {missing[0]} (pairs {lo}..{hi - 1}) is missing from "
                                f"{', '.join(str(f) for f in folders)}: its task (rank s mod world_size) did not "
                                f"finish; rerun it")
    x0, ids = [], []
    for s in needed:
        shard = torch.load(array.marker(s), map_location="cpu", weights_only=True)
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


GENEVAL_IMAGES_PER_PROMPT = 4  # GenEval's protocol: four images per prompt


def geneval_sampling(model: TextConditioned, preset: Preset, sampler: dict, *, out_dir: Path, max_tokens: int = 300,
                     rank: int = 0, world_size: int = 1, shard_size: int = 8, settings: dict | None = None,
                     encode: bool = True, progress: bool = False) -> dict:
    """Task ``rank`` of ``world_size`` of the GenEval sampling array of a PixArt-Σ model
    (``text.geneval_sample_shards``): GenEval's prompts (their T5 states read from the cache, ``encode``: encoded
    first where missing), four images each with ``sampler`` at the model's size, decoded by the SD-XL VAE one image
    at a time (a 2048² decode holds GBs of activations), PNGs in GenEval's layout under ``out_dir``."""
    from graft_core.data.decoder import decode_batches, to_uint8
    from graft_core.text_to_image.text import geneval_prompts, geneval_sample_shards

    device = next(model.parameters()).device
    texts_all = geneval_prompts()
    wrapper = TextConditioned(model.transformer, paper_prompts(texts_all, max_tokens, encode=encode, device=device))
    index = {text: i for i, text in enumerate(texts_all)}
    state: dict = {}

    def generate(texts: list[str], seed: int):
        if "decode" not in state:  # the VAE is loaded only by a task with a shard left
            state["decode"] = paper_decoder(device)
        z = sampling(wrapper, torch.tensor([index[t] for t in texts]), preset, sampler, seed=seed, progress=progress)
        return to_uint8(decode_batches(state["decode"], z, 1))

    return geneval_sample_shards(generate, out_dir=out_dir, rank=rank, world_size=world_size, shard_size=shard_size,
                                 images_per_prompt=GENEVAL_IMAGES_PER_PROMPT, seed=preset.eval.seed,
                                 settings=settings)


def evaluate_t2i(model: TextConditioned, preset: Preset, sampler: dict, *, progress: bool = False) -> dict:
    """Prompt following and sample quality of a digits text-to-image model (tiny/micro): ``preset.eval.num_samples``
    samples for prompts cycled over the list, the full metric set against the real digits and the fraction the digit
    classifier assigns to the prompted digit (``prompt_acc``). The paper's GenEval is ``geneval_sampling`` (an array
    of sampling tasks) + ``text.geneval_evaluate`` (the eval step)."""
    from graft_core.evaluation.evaluate import real_images
    from graft_core.metrics import compute_metrics, load_classifier
    from graft_core.data.decoder import to_uint8
    from graft_core.text_to_image.text import prompt_accuracy, prompt_digit

    ids = torch.arange(preset.eval.num_samples) % model.prompts.null_id
    start = time.time()
    images = to_uint8(sampling(model, ids, preset, sampler, seed=preset.eval.seed, progress=progress))
    seconds = time.time() - start
    metrics = compute_metrics(images, real_images(preset, "train")[0], extractor=preset.eval.extractor, preset=preset,
                              labels=prompt_digit(ids))
    acc = prompt_accuracy(images, ids, load_classifier(preset), len(TEMPLATES))
    return {"metrics": {**metrics, "num_samples": len(ids), "sample_seconds": round(seconds, 2)},
            "geneval_or_acc": acc["prompt_acc"], **acc}


def forward_call(model: nn.Module, batch: int, side: int | None = None):
    """A zero-argument forward pass of ``model`` at ``side``×``side`` inputs (default: its own sample size), inputs
    made once on the model's device."""
    cfg = diffusion_of(model)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    side = side or cfg.sample_size
    x = torch.randn(batch, cfg.in_channels, side, side, generator=gen).to(device)
    t = torch.randint(0, cfg.num_train_timesteps, (batch,), generator=gen).to(device)
    ids = torch.randint(0, model.prompts.null_id, (batch,), generator=gen).to(device)
    return lambda: model(x, timestep=t, class_labels=ids, return_dict=False)[0]


def measure_speedup(teacher: nn.Module, student: nn.Module, *, batch: int = 2, repeats: int = 20,
                    long_tokens: int | None = None) -> dict:
    """One forward pass (batch ``batch``) of teacher and student, interleaved, min over repeats, at the model's token
    count and — because at a few dozen tokens attention is cheap and the speed-up is ~1 — at ``long_tokens``."""
    from graft_core.evaluation.latency import interleaved_latency

    cfg = diffusion_of(teacher)
    tokens = cfg.num_tokens
    sizes = {tokens: cfg.sample_size}
    if long_tokens and long_tokens != tokens:
        sizes[long_tokens] = int(round(long_tokens ** 0.5)) * cfg.patch_size
    out = {"batch": batch, "threads": torch.get_num_threads(), "device": str(next(teacher.parameters()).device)}
    for n, side in sizes.items():
        calls = {name: forward_call(m.eval(), batch, side) for name, m in (("teacher", teacher), ("grafted", student))}
        lat = interleaved_latency(calls, repeats=repeats if n == tokens else max(2, repeats // 4))
        out[str(n)] = {"tokens": n, "side": side, "forward_seconds": lat,
                       "speedup": lat["teacher"]["min"] / lat["grafted"]["min"],
                       "speedup_median": lat["teacher"]["median"] / lat["grafted"]["median"]}
    return out


def main(argv: list[str] | None = None) -> None:
    PIXART.main(argv, description="Train (or find) the preset's text-to-image PixArt teacher.",
                config_of=pixart_config, train=train_pixart)


if __name__ == "__main__":
    main()
