"""Surgery: swap ``attn1`` / ``ff`` of chosen ``transformer_blocks`` for new operators.

Works on diffusers ``DiTTransformer2DModel`` and ``PixArtTransformer2DModel`` (built from config or
``from_pretrained``): a swap is a plain attribute assignment on the block, so norms, adaLN modulation, gates, residuals
and the cross-attention ``attn2`` stay as they are. The applied plans are kept on
the model as ``model.graft_plans``.

A grafted model's ``model.config`` still describes the *original* architecture, so ``save_pretrained`` →
``from_pretrained`` would silently rebuild vanilla attention. A grafted model is therefore kept as its plan plus a
state dict and rebuilt as teacher → ``graft(plan)`` → ``load_state_dict(strict=True)`` (``distill.assemble``, then
the stage-2 weights).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from graft_core.operators import init_from_teacher as _init_op_from_teacher
from graft_core.grafting.plan import GraftPlan, as_plans

SITE_ATTR = {"attn": "attn1", "mlp": "ff"}


def model_dims(model: nn.Module) -> dict[str, int]:
    """Width, heads, token count and depth of a diffusers DiT/PixArt, from its config and blocks."""
    cfg = model.config
    tokens = (int(cfg.sample_size) // int(cfg.patch_size)) ** 2
    return {"dim": int(cfg.num_attention_heads) * int(cfg.attention_head_dim),
            "num_heads": int(cfg.num_attention_heads), "seq_len": tokens, "num_layers": len(model.transformer_blocks)}


def _block(model: nn.Module, index: int, site: str) -> nn.Module:
    block = model.transformer_blocks[index]
    if not hasattr(block, SITE_ATTR[site]):
        raise ValueError(f"transformer_blocks[{index}] ({type(block).__name__}) has no {SITE_ATTR[site]!r}; "
                         f"graft before restructuring the model")
    return block


def graft(model: nn.Module, plans: GraftPlan | Iterable[GraftPlan], *, seed: int | None = None) -> nn.Module:
    """Replace the planned modules in place with freshly initialised operators; returns ``model``.

    ``seed`` makes each new operator's initialisation reproducible and independent of the others
    (layer ``i`` is initialised under ``seed + i``). New modules take the dtype/device of the ones they replace.
    Grafting again adds to ``model.graft_plans``; editing an already grafted (site, layer) is an error.
    """
    if getattr(model, "graft_restructure", None):
        raise ValueError("graft before restructuring: the model's blocks were already rewired "
                         f"({model.graft_restructure})")
    new = as_plans(plans)
    all_plans = as_plans(tuple(getattr(model, "graft_plans", ())) + new)
    dims = model_dims(model)
    for plan in new:
        plan.check_model(dims["num_layers"], dims["seq_len"])
    swaps = []  # build everything first: a failing constructor leaves the model untouched
    for plan in new:
        for layer in plan.layers:
            block = _block(model, layer, plan.site)
            old = getattr(block, SITE_ATTR[plan.site])
            op = _build(plan, dims, None if seed is None else seed + layer)
            ref = next(old.parameters(), None)
            if ref is not None:
                op = op.to(device=ref.device, dtype=ref.dtype)
            swaps.append((block, SITE_ATTR[plan.site], op.train(old.training)))
    for block, attr, op in swaps:
        setattr(block, attr, op)
    model.graft_plans = all_plans
    return model


def _build(plan: GraftPlan, dims: dict[str, int], seed: int | None) -> nn.Module:
    """A fresh operator; under ``seed`` without touching the global RNG stream, else from that stream."""
    if seed is None:
        return plan.build_operator(dims["dim"], num_heads=dims["num_heads"], seq_len=dims["seq_len"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return plan.build_operator(dims["dim"], num_heads=dims["num_heads"], seq_len=dims["seq_len"])


def grafted_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Dotted name → new module for every grafted (site, layer) of ``model``."""
    out = {}
    for plan in getattr(model, "graft_plans", ()):
        for layer in plan.layers:
            name = f"transformer_blocks.{layer}.{SITE_ATTR[plan.site]}"
            out[name] = model.get_submodule(name)
    return out


def init_from_teacher(model: nn.Module, teacher: nn.Module) -> nn.Module:
    """Copy the teacher's weights into every grafted module that has a mapping (``mha``, ``swa``, ``mlp``).

    For a self-graft this reproduces the teacher exactly; operators with new parameters raise ``ValueError``.
    """
    for name, op in grafted_modules(model).items():
        _init_op_from_teacher(op, teacher.get_submodule(name))
    return model
