"""Text-to-image grafting (paper Table 5, §8): Hyena-X in half of PixArt's self-attention layers, two stages, LoRA.

One row of ``python -m benchmark.run table5`` is ``run_row`` (the ``table5`` target's external step):

1. **Teacher.** ``paper``: PixArt-Σ 2K (``PixArtTransformer2DModel.from_pretrained("PixArt-alpha/PixArt-Sigma-XL-2-2K-MS",
   subfolder="transformer")``, T5 + VAE from ``PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers``; weights from the
   local HF cache, else ``MissingWeightsError``). ``tiny``: a text-conditioned ``PixArtTransformer2DModel`` with the
   tiny DiT teacher's sizes (16×16 digits, patch 2 → 64 tokens, 8 layers, width 128, ``ada_norm_single``, cross-
   attention on captions from ``graft_core.text.HashTextEncoder``), trained here on the digits with captions such as
   "a handwritten seven" and cached by config hash like ``graft_core.teacher`` (shipped under
   ``graft_core/assets/pixart/<key>/`` when present).
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

Layer indices are **0-based** (``transformer_blocks[i]``): the paper's 8, 10, 12, 14, 16, 18, 20–27 are read as
code indices (index 27 only exists 0-based, §12.8). Other depths use the same rule (``pixart_layers``): half of the
layers, an interleaved run of even indices from ``round(8/28·L)`` plus the contiguous tail of ``round(8/28·L)``
layers — (2, 4, 6, 7) for the 8-layer tiny teacher.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from graft_core.config import stable_hash, to_jsonable
from graft_core.paths import ASSETS_DIR, atomic_write_json, cache_root
from graft_core.presets import DataConfig, Preset, TeacherConfig, get_preset
from graft_core.teacher import MissingWeightsError, lr_at, sha256_file
from graft_core.text import TEMPLATES, HashTextEncoder, PromptTable, TextConditioned, digit_prompts

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
PIXART_PRESETS = {"paper": PAPER_PIXART, "tiny": PixArtConfig(), "micro": MICRO_PIXART}


def pixart_config(preset: Preset) -> PixArtConfig:
    try:
        return PIXART_PRESETS[preset.name]
    except KeyError:
        raise ValueError(f"no PixArt teacher for preset {preset.name!r}; known: {', '.join(PIXART_PRESETS)}") from None


def pixart_layers(num_layers: int) -> tuple[int, ...]:
    """Half of the layers: even indices from ``round(8/28·L)`` plus the last ``round(8/28·L)`` (paper: 8,…,18, 20–27).

    Mirrored without torch in ``benchmark/targets/table5.py``; ``tests/test_pixart.py`` checks they agree.
    """
    half, tail = num_layers // 2, round(8 / 28 * num_layers)
    tail = min(tail, half)
    start = min(round(8 / 28 * num_layers), num_layers - tail)
    middle = [i for i in range(start, num_layers - tail, 2)][: half - tail]
    return tuple(middle) + tuple(range(num_layers - tail, num_layers))


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
    for folder in pixart_dirs(key):
        if (folder / WEIGHTS_FILE).exists():
            return load_pixart_dir(folder)
    if not train_if_missing:
        raise MissingWeightsError(f"no trained PixArt teacher {key}; run `python -m graft_core.pixart --preset "
                                  f"{preset.name}`")
    folder = pixart_dirs(key)[1]
    train_pixart(preset, folder, progress=progress)
    return load_pixart_dir(folder)


def load_pixart_dir(folder: Path) -> TextConditioned:
    from diffusers import PixArtTransformer2DModel

    from graft_core.config import from_dict

    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    digest = sha256_file(folder / WEIGHTS_FILE)
    if digest != meta["sha256"]:
        raise ValueError(f"PixArt weights in {folder} are corrupt (sha256 {digest[:12]} != {meta['sha256'][:12]}); "
                         f"delete the folder to retrain")
    cfg = from_dict(PixArtConfig, meta["pixart_config"])
    return wrap(PixArtTransformer2DModel.from_pretrained(folder), cfg).eval()


def train_pixart(preset: Preset, out_dir: Path, *, progress: bool = True) -> dict:
    """Train the text-to-image teacher on the digits with captions: each image gets a random template of its digit,
    the caption is dropped (→ empty caption) with ``train_caption_dropout``; ε-loss, AdamW, warm-up, EMA (saved)."""
    from tqdm.auto import tqdm

    from graft_core.data import load_digits
    from graft_core.diffusion import diffusion_loss, drop_labels, make_train_scheduler
    from graft_core.ema import EMA

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
    start, losses = time.time(), []
    bar = tqdm(range(cfg.train_steps), desc="pixart teacher", disable=not progress, mininterval=10)
    for step in bar:
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
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    ema.model.transformer.save_pretrained(tmp)
    meta = {"key": pixart_key(cfg, preset.data), "pixart_config": to_jsonable(cfg), "data_config": to_jsonable(preset.data),
            "train_seconds": round(time.time() - start, 1), "final_loss_100": sum(losses[-100:]) / len(losses[-100:]),
            "loss_curve": [round(sum(losses[i:i + 100]) / len(losses[i:i + 100]), 5)
                           for i in range(0, len(losses), 100)],
            "torch": torch.__version__, "threads": torch.get_num_threads(), "sha256": sha256_file(tmp / WEIGHTS_FILE),
            "made_by": f"python -m graft_core.pixart --preset {preset.name}"}
    atomic_write_json(tmp / META_FILE, meta)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return meta


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
