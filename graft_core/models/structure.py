"""The structure a pretrained checkpoint must have for a preset's plans, and the width it may choose freely.

Why: depth, token count, latent channels, learned σ and class count fix the layer indices of every graft plan, the
stage-1 captures and the FLOP accounting, so a checkpoint that differs in any of them would silently run other
experiments than the ones planned. Width (heads × head dim) does not: it is read from the checkpoint's own config, so
the same code runs the real DiT-XL/2 and the reduced-width fake that CI uses.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from graft_core.errors import StructureMismatch
from graft_core.presets import TeacherConfig


def checkpoint_structure(config: Mapping[str, Any]) -> dict[str, Any]:
    """The structural facts of a diffusers ``DiTTransformer2DModel`` config, in the preset's terms."""
    out_channels = config.get("out_channels") or config["in_channels"]
    return {
        "num_layers": config["num_layers"],
        "num_tokens": (config["sample_size"] // config["patch_size"]) ** 2,
        "in_channels": config["in_channels"],
        "learns_sigma": out_channels == 2 * config["in_channels"],
        "num_classes": config.get("num_embeds_ada_norm"),
    }


def expected_structure(cfg: TeacherConfig) -> dict[str, Any]:
    return {"num_layers": cfg.num_layers, "num_tokens": cfg.num_tokens, "in_channels": cfg.in_channels,
            "learns_sigma": cfg.learns_sigma, "num_classes": cfg.num_classes}


def check_structure(config: Mapping[str, Any], cfg: TeacherConfig, *, source: str) -> TeacherConfig:
    """Refuse a checkpoint of another structure; return ``cfg`` with the checkpoint's width (heads, head dim)."""
    got, want = checkpoint_structure(config), expected_structure(cfg)
    diff = [f"{k} {got[k]} (preset: {want[k]})" for k in want if got[k] != want[k]]
    if diff:
        raise StructureMismatch(f"{source}: checkpoint structure differs from the preset: {', '.join(diff)}; these "
                                f"fix the layer indices, plans and accounting, so use a checkpoint of the preset's "
                                f"structure (or another preset)")
    return dataclasses.replace(cfg, num_attention_heads=config["num_attention_heads"],
                               attention_head_dim=config["attention_head_dim"])


def hub_cache() -> Path:
    """The Hugging Face hub cache as the environment names it now (huggingface_hub reads HF_HOME once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def hub_file(repo: str, filename: str) -> Path | None:
    """A file of ``repo`` in the local hub cache, or None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache())
    return Path(found) if isinstance(found, str) else None


def pretrained_width(cfg: TeacherConfig) -> TeacherConfig:
    """``cfg`` with the width of its Hub checkpoint, read from ``transformer/config.json`` alone — no torch, no
    diffusers, no weights: a stage-1 job needs only the operator's width (it trains on captures)."""
    if not cfg.pretrained:
        return cfg
    path = hub_file(cfg.pretrained, "transformer/config.json")
    if path is None:
        raise FileNotFoundError(f"pretrained teacher {cfg.pretrained!r}: transformer/config.json is not in the "
                                f"Hugging Face cache {hub_cache()}")
    return check_structure(json.loads(path.read_text()), cfg, source=cfg.pretrained)
