"""Controls that every grafting table needs next to its rows (paper Tables 2 and 4; tiny-testbed.md lesson 1).

* **Random init** — every layer of a site replaced by a freshly initialised operator of the *same* type (``mha`` for
  attention, ``mlp`` with ratio 4 for the MLP), no training: shows that the model collapses without stage 1/2.
* **Self-grafting** — the same replacement, then stage 1 (distillation) and stage 2 (finetune): the plan is
  ``self_graft_plan``; stages run as for any other plan (``distill.distill_layer`` / ``assemble`` / ``finetune``).
* **Teacher + the same stage 2** — the un-grafted teacher through the identical stage 2 (``finetune(teacher, ...)``):
  separates the effect of the operator from the effect of finetuning on the stage-2 data.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

from graft_core.plan import GraftPlan, make_plan
from graft_core.presets import Preset

# The self-graft operator of each site: the teacher's own operator type with the teacher's sizes.
SELF_GRAFT = {"attn": ("mha", {}), "mlp": ("mlp", {"ratio": 4})}


def self_graft_plan(site: str, num_layers: int, layers: str | Iterable[int] = "full") -> GraftPlan:
    """Plan replacing ``site`` in ``layers`` (default all) by a fresh operator of the teacher's own type."""
    if site not in SELF_GRAFT:
        raise ValueError(f"unknown site {site!r}; choose one of {sorted(SELF_GRAFT)}")
    operator, options = SELF_GRAFT[site]
    return make_plan(site, operator, layers, num_layers=num_layers, **options)


def random_init(teacher: nn.Module, site: str, preset: Preset, *, layers: str | Iterable[int] = "full",
                seed: int | None = None) -> nn.Module:
    """The teacher (deep-copied) with every ``site`` operator in ``layers`` freshly initialised and untrained.

    Layer ``i``'s operator is initialised under ``seed + i`` (default ``preset.stage1.seed``), i.e. exactly the
    operator stage 1 would start from.
    """
    from graft_core.distill import assemble

    plan = self_graft_plan(site, preset.teacher.num_layers, layers)
    return assemble(teacher, plan, None, seed=preset.stage1.seed if seed is None else seed)
