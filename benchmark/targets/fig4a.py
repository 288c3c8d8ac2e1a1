"""``fig4a`` — data-scale ablation: 50 % interleaved MHA replacement with stage-2 data 10 % vs 20 % (paper Fig. 4a).

Five operators × {10 %, 20 %}; the 10 % rows are the Table-3 50 % rows (same runs). The paper does not give the step
count of the 20 % runs (UNKNOWN, "≤ 100K"); here only the data changes (same steps), so the ablation varies one
factor. ``extra.stage2_data`` = 10.0 / 20.0.

    python -m benchmark.run fig4a                  # tiny: ~15 min after table3 (only the 20 % rows are new)
"""
from __future__ import annotations

from benchmark.rows import Row
from benchmark.targets.common import STAGE2_DATA, declarations, hybrid_row, preset, with_stage2
from graft_core.presets import Preset
from graft_core.table_rows import RowDecl, grid_row

NAME = "fig4a"
TITLE = "Stage-2 data scale (10 % vs 20 %), 50 % interleaved MHA grafting"


def row(p: Preset, d: RowDecl) -> Row:
    """The declared operator at 50 % interleaved with the declared stage-2 data (10 % = the preset's own)."""
    c = grid_row("attn", d.operator)
    data = d.extra["stage2_data"]
    q = p if data == 10.0 else with_stage2(p, data_fraction=STAGE2_DATA[data])
    return hybrid_row(q, d, c.operator, c.option_dict, extra={"stage2_data": data})


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    return [row(p, d) for d in declarations(NAME, p)]
