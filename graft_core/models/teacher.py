"""The teacher: a diffusers ``DiTTransformer2DModel`` — DiT-XL/2 from the Hub (paper) or trained here (tiny/micro).

A trained teacher is cached on disk under the hash of its ``TeacherConfig`` (+ the data config it saw): a second call
loads it bit for bit. Training goes through the artefact cache (``graft_core.runtime.cache``): two jobs that need the same
teacher train it once, the second waits on the key's lock and loads it. The project ships the tiny teacher's weights
in ``graft_core/assets/teachers/<hash>/`` (made by
``python -m graft_core.models.teacher --preset tiny``, with the config and a sha256 checksum) so a first run skips training.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel
from tqdm.auto import tqdm

from graft_core.runtime.cache import sha256_file
from graft_core.config import to_jsonable
from graft_core.models.diffusion import (diffusion_loss, disable_builtin_label_dropout, drop_labels, make_train_scheduler)
from graft_core.models.ema import EMA
from graft_core.errors import MissingWeightsError
from graft_core.runtime.paths import atomic_write_json
from graft_core.presets import Preset, TeacherConfig
from graft_core.models.structure import check_structure, pretrained_width
from graft_core.models.teacher_id import TEACHER, WEIGHTS_FILE, teacher_dirs, teacher_key  # also imported from here


def build_dit(cfg: TeacherConfig) -> DiTTransformer2DModel:
    """A randomly initialised DiT with the teacher's architecture (adaLN-Zero blocks, as DiT-XL/2)."""
    model = DiTTransformer2DModel(
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_layers=cfg.num_layers,
        sample_size=cfg.sample_size,
        patch_size=cfg.patch_size,
        num_embeds_ada_norm=cfg.num_classes,
        norm_type="ada_norm_zero",
    )
    disable_builtin_label_dropout(model)
    return model


# On CPU, PyTorch's fused SDPA kernel has a slow backward at short sequences: the tiny teacher's stage-2 step took
# 0.78 s with it and 0.45 s with diffusers' classic ``AttnProcessor`` (baddbmm → softmax → bmm, the same attention),
# sampling 2.9 vs 2.5 ms per sample (benchmarks/levers.py attention). The classic processor holds the full attention
# matrix, so it is used only up to this many tokens.
CLASSIC_ATTENTION_MAX_TOKENS = 256


def use_fast_attention(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """Give ``model``'s diffusers attention layers the faster processor for ``device`` (classic ``AttnProcessor`` on
    CPU at ≤ ``CLASSIC_ATTENTION_MAX_TOKENS`` tokens; otherwise unchanged). Same function, other kernels; in place."""
    from diffusers.models.attention_processor import AttnProcessor

    config = getattr(model, "config", None)
    size, patch = getattr(config, "sample_size", None), getattr(config, "patch_size", None)
    if torch.device(device).type != "cpu" or not size or not patch or (size // patch) ** 2 > CLASSIC_ATTENTION_MAX_TOKENS:
        return model
    for module in model.modules():
        if hasattr(module, "set_processor") and type(getattr(module, "processor", None)).__name__ == "AttnProcessor2_0":
            module.set_processor(AttnProcessor())
        elif getattr(module, "kernel", None) == "sdpa":  # grafted MHA / SWA operators (graft_core.operators.mha)
            module.kernel = "classic"
    return model


def use_fast_operator_attention(op: torch.nn.Module, seq_len: int, device: torch.device | str) -> torch.nn.Module:
    """The same choice for a lone operator (stage 1): classic attention kernels on CPU at short sequences."""
    if torch.device(device).type == "cpu" and seq_len <= CLASSIC_ATTENTION_MAX_TOKENS:
        for module in op.modules():
            if getattr(module, "kernel", None) == "sdpa":
                module.kernel = "classic"
    return op


def load_pretrained(cfg: TeacherConfig) -> DiTTransformer2DModel:
    """``from_pretrained`` of the Hub DiT (``facebook/DiT-XL-2-256``, subfolder ``transformer``) from the local HF cache."""
    try:
        model = DiTTransformer2DModel.from_pretrained(cfg.pretrained, subfolder="transformer")
    except (OSError, ValueError) as err:
        raise MissingWeightsError(
            f"pretrained teacher {cfg.pretrained!r} is not in the Hugging Face cache; on a machine with internet run "
            f"`huggingface-cli download {cfg.pretrained}` and copy ~/.cache/huggingface here "
            f"(or set HF_HOME), see REPRODUCE.md ({type(err).__name__})") from None
    check_structure(model.config, cfg, source=cfg.pretrained)  # depth, tokens, channels, σ, classes fix the plans
    disable_builtin_label_dropout(model)
    return model.eval()


def effective_teacher(preset: Preset, model: torch.nn.Module | None = None) -> Preset:
    """``preset`` with the teacher's width (heads, head dim) as the loaded checkpoint has it.

    Why: the preset fixes the structure that plans and run ids depend on, while the width is whatever the checkpoint
    has (DiT-XL/2's 16 × 72, or a reduced-width fake of the same structure), so operators must be built to match the
    model actually loaded. A trained (tiny) teacher is built from the preset, so nothing changes there."""
    cfg = preset.teacher
    if not cfg.pretrained:
        return preset
    if model is None:
        return preset.replace(teacher=pretrained_width(cfg))
    return preset.replace(teacher=check_structure(model.config, cfg, source=cfg.pretrained))


def load_teacher(preset: Preset, *, train_if_missing: bool = True, progress: bool = True) -> DiTTransformer2DModel:
    """The preset's teacher in eval mode: loaded from the Hub cache (paper) or from disk, trained if absent."""
    cfg = preset.teacher
    if cfg.pretrained:
        return load_pretrained(cfg)
    return load_teacher_dir(TEACHER.folder(teacher_key(cfg, preset.data),
                                           functools.partial(_write_teacher, preset, progress=progress),
                                           preset=preset.name, train_if_missing=train_if_missing))


def load_teacher_dir(folder: Path) -> DiTTransformer2DModel:
    """Load a teacher folder in eval mode after checking its manifest (cache entries) and its recorded sha256."""
    TEACHER.verified_meta(folder)
    model = DiTTransformer2DModel.from_pretrained(folder)
    disable_builtin_label_dropout(model)
    return model.eval()


def lr_at(step: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up then constant (the DiT/grafting schedule)."""
    return base_lr * min(1.0, (step + 1) / max(1, warmup))


def train_step(model, scheduler, opt, ema: EMA, cfg, step: int, x0: torch.Tensor, cond: torch.Tensor,
               gen: torch.Generator) -> float:
    """One step of teacher training, the same for the DiT and the PixArt teacher (``cfg``: their ``train_*``
    fields): warm-up lr, ε-prediction loss (bf16 autocast when set), clipped AdamW step, EMA update; the loss."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg.train_lr, cfg.train_warmup)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train_bf16):
        loss = diffusion_loss(model, scheduler, x0, cond, generator=gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train_grad_clip)
    opt.step()
    ema.update(model)
    return loss.item()


def train_teacher(preset: Preset, out_dir: Path, *, progress: bool = True) -> dict:
    """Train the teacher from scratch with the ε-prediction loss, label dropout (CFG) and EMA; publish the EMA
    weights as ``out_dir`` (replacing a teacher already there, under the key's lock) and return ``teacher.json``.

    Deterministic given ``cfg.seed`` on a fixed machine and thread count.
    """
    return TEACHER.train(out_dir, functools.partial(_write_teacher, preset, progress=progress))


def _write_teacher(preset: Preset, tmp: Path, *, progress: bool = True) -> None:
    """Train and write the EMA weights + ``teacher.json`` into the writer's private folder ``tmp``."""
    from graft_core.data import load_digits

    cfg = preset.teacher
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = load_digits(preset.data)
    x_all, y_all = data.train_images, data.train_labels
    model = build_dit(cfg).train()
    scheduler = make_train_scheduler(cfg)
    ema = EMA(model, cfg.train_ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train_lr, weight_decay=0.0)
    null_id = cfg.num_classes
    start = time.time()
    losses = []
    bar = tqdm(range(cfg.train_steps), desc="teacher", disable=not progress, mininterval=5)
    for step in bar:
        idx = torch.randint(0, len(x_all), (cfg.train_batch_size,), generator=gen)
        y = drop_labels(y_all[idx], null_id, cfg.train_label_dropout, gen)
        losses.append(train_step(model, scheduler, opt, ema, cfg, step, x_all[idx], y, gen))
        if step % 100 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
    seconds = time.time() - start
    tmp = Path(tmp)
    ema.model.save_pretrained(tmp)
    meta = {
        "key": teacher_key(cfg, preset.data),
        "teacher_config": to_jsonable(cfg),
        "data_config": to_jsonable(preset.data),
        "train_seconds": round(seconds, 1),
        "final_loss_100": sum(losses[-100:]) / len(losses[-100:]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "sha256": sha256_file(tmp / WEIGHTS_FILE),
        "made_by": f"python -m graft_core.models.teacher --preset {preset.name}",
    }
    atomic_write_json(tmp / TEACHER.meta_file, meta)


def main(argv: list[str] | None = None) -> None:
    TEACHER.main(argv, description="Train (or find) the preset's teacher and print where it lives.",
                 config_of=lambda p: p.teacher, train=train_teacher)


if __name__ == "__main__":
    main()
