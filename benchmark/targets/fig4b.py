"""``fig4b`` — layer-selection ablation: Hyena-X in 50 % of the MHA layers chosen four ways (paper Fig. 4b).

Strategies: interleaved (odd layers; = the Table-3 row), top-local / low-local (the half of the layers with the
highest / lowest band-k locality from ``fig2`` at ``select_k``), deep (the last half). The top/low-local rows depend
on the ``fig2`` locality run: it is scheduled first, then their layers are fixed. ``extra.strategy`` names the choice.

    python -m benchmark.run fig4b                  # tiny: ~12 min (runs fig2 first if needed)
"""
from __future__ import annotations

from benchmark.rows import Row
from benchmark.targets.common import hybrid_row, locality_config, preset
from graft_core.plan import NEEDS_LOCALITY

NAME = "fig4b"
TITLE = "Layer selection for Hyena-X at 50 %"
STRATEGIES = (("interleaved", "interleaved50"), ("top-local", "top_local"), ("low-local", "low_local"),
              ("deep", "deep"))


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    loc = locality_config(p)
    out = []
    for name, strategy in STRATEGIES:
        out.append(hybrid_row(p, "attn", "hyena_x", "hyena_x", {}, f"Hyena-X, {name}", 50, strategy,
                              group="Layer selection", locality=loc if strategy in NEEDS_LOCALITY else None,
                              extra={"strategy": strategy}))
    return out
