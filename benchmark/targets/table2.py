"""``table2`` — full self-grafting (all MHA or all MLP layers) vs stage-1 / stage-2 data (paper Table 2).

Rows as the paper: baseline; MHA random init; MHA with 0.63 % stage-1 data and no / 0.63 % / 5 % / 10 % stage-2
data; MLP random init; MLP 0.63 % / 10 %. Stage 2 runs 3/5 of the preset's steps (paper: 30k vs Table 4's 50K), so
the 10 % rows are the Table-3 self-grafting rows (paper §12.6). ``extra`` holds ``stage1_data`` / ``stage2_data`` as
the paper prints them (0.63, 5.0, 10.0; null for "–").

    python -m benchmark.run table2                  # tiny: ~10 min on 2 CPU cores
    python -m benchmark.run table2 --preset paper   # 4 stage-2 runs of 30k steps × 256 on 8 GPUs each
"""
from __future__ import annotations

from benchmark.rows import Row
from benchmark.targets.common import baseline_row, declarations, preset, random_init_row, self_graft_row
from graft_core.presets import Preset
from graft_core.table_rows import RowDecl

NAME = "table2"
TITLE = "Full self-grafting vs data"


def row(p: Preset, d: RowDecl) -> Row:
    """The run of one declared row: the baseline, a random-init control, or self-grafting with the declared
    stage-2 data."""
    if d.id == "baseline":
        return baseline_row(p, d, stage1_data=None, stage2_data=None)
    if d.operator == "random_init":
        rand = random_init_row(p, d)
        rand.extra.update(stage1_data=None, stage2_data=None)
        return rand
    return self_graft_row(p, d, stage2_data=d.extra["stage2_data"])


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    return [row(p, d) for d in declarations(NAME, p)]
