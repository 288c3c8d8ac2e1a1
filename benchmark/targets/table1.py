"""``table1`` — activation statistics (paper Table 1 i/ii) and the stage-1 regression objective study (iii/iv, §6).

Panels i/ii: rows ``attn-activation_stats`` / ``mlp-activation_stats`` (kind ``activation_stats``): per layer, the
variance, std, max |x|, 99.9th-percentile |x|, 6σ-outlier fraction and excess kurtosis of the teacher's MHA / MLP
outputs over its stage-1 capture (``extra.activation_stats``); the paper does not say which statistic it plots
(UNKNOWN, docs/paper-reference.md §5), so these are our choice. They read the stage-1 captures that the stage-1 runs (of
this table and table3) read anyway: one all-pairs capture on tiny/micro, 28 per-(layer, site) captures per site on
paper.

Self-grafting (fresh MHA, or fresh r=4 MLP) trained with L2 / L1 / Huber (δ=1) at the five study layers (paper
l = 1, 8, 17, 27, 28 → 0-based 0, 7, 16, 26, 27; the tiny teacher's 8 layers use 0, 2, 4, 6, 7), all five replaced
together, **stage 1 only** (no finetuning), then evaluated. ``extra.objective`` names the objective and
``extra.stage1_val_mse`` the mean held-out MSE over the five layers (the paper's Sec. C.3 comparison).

    python -m benchmark.run table1                  # tiny: ~6 min on 2 CPU cores
    python -m benchmark.run table1 --preset paper   # 30 stage-1 jobs (< 0.5 GPU-h each) + 6 evaluations
                                                    # + 2 CPU statistics jobs over 56 per-pair captures
"""
from __future__ import annotations

import dataclasses

from benchmark.rows import Row
from benchmark.targets.common import SITE_NAME, baseline_row, graft_spec, num_layers, preset
from graft_core.operators.registry import TEACHER_OPERATOR

NAME = "table1"
TITLE = ("Activation statistics per layer (i/ii) and stage-1 regression objective (iii/iv: self-grafting at five "
         "layers, no finetuning)")
OBJECTIVES = (("l2", "L2"), ("l1", "L1"), ("huber", "Huber (δ=1)"))
# The study layers: paper 1-based l = 1, 8, 17, 27, 28 → 0-based 0, 7, 16, 26, 27 (of 28).
TABLE1_LAYERS_28 = (0, 7, 16, 26, 27)


def table1_layers(num_layers: int) -> tuple[int, ...]:
    """The paper's five layers for 28 blocks; for other depths the same relative positions (first, ~1/4, ~3/5,
    second-to-last, last), deduplicated — e.g. (0, 2, 4, 6, 7) for the 8-layer tiny teacher."""
    if num_layers == 28:
        return TABLE1_LAYERS_28
    last = num_layers - 1
    picks = {0, round(7 / 27 * last), round(16 / 27 * last), max(0, num_layers - 2), last}
    return tuple(sorted(picks))


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    out = [baseline_row(p)]
    layers = table1_layers(num_layers(p))
    for site in ("attn", "mlp"):
        op, opts = TEACHER_OPERATOR[site]
        for objective, label in OBJECTIVES:
            q = p.replace(stage1=dataclasses.replace(p.stage1, objective=objective))
            out.append(Row(id=f"{site}-{objective}", label=f"{SITE_NAME[site]}, {label}", group=SITE_NAME[site],
                           kind="graft", preset=q, graft=graft_spec(p, site, op, "table1_layers", opts, layers=layers),
                           finetune=False, ratio=None, name="self_graft",
                           extra={"objective": objective, "graft_operator": op, "options": opts}))
    for site in ("attn", "mlp"):
        out.append(Row(id=f"{site}-activation_stats", label=f"{SITE_NAME[site]} outputs", group="Analysis",
                       kind="activation_stats", preset=p, extra={"site": site}))
    return out
