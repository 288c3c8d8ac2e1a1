"""``fig4b`` — layer-selection ablation: Hyena-X in 50 % of the MHA layers chosen four ways (paper Fig. 4b).

Strategies: interleaved (odd layers; = the Table-3 row), top-local / low-local (the half of the layers with the
highest / lowest band-k locality from ``fig2`` at ``select_k``), deep (the last half). The top/low-local rows depend
on the ``fig2`` locality run: it is scheduled first, then their layers are fixed. ``extra.strategy`` names the choice.

    python -m benchmark.run fig4b                  # tiny: ~12 min (runs fig2 first if needed)
"""
from __future__ import annotations

from benchmark.rows import Row
from benchmark.targets.common import declarations, hybrid_row, locality_config, preset
from graft_core.grafting.plan import NEEDS_LOCALITY

NAME = "fig4b"
TITLE = "Layer selection for Hyena-X at 50 %"


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    loc = locality_config(p)
    return [hybrid_row(p, d, "hyena_x", {}, locality=loc if d.strategy in NEEDS_LOCALITY else None,
                       extra={"strategy": d.strategy})
            for d in declarations(NAME, p)]
