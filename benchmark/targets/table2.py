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
from benchmark.targets.common import SITE_NAME, baseline_row, preset, random_init_row, self_graft_row

NAME = "table2"
TITLE = "Full self-grafting vs data"


GROUP = {"attn": "MHA (all layers)", "mlp": "MLP (all layers)"}


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    out = [baseline_row(p, stage1_data=None, stage2_data=None)]
    for site, stage2_options in (("attn", (None, 0.63, 5.0, 10.0)), ("mlp", (10.0,))):
        rand = random_init_row(p, site, group=GROUP[site])
        rand.extra.update(stage1_data=None, stage2_data=None)
        out.append(rand)
        for data in stage2_options:
            rid = f"{site}-self_graft-full-s1_0.63" + (f"-s2_{data:g}" if data is not None else "")
            how = "stage 1 only" if data is None else f"stage 2 on {data:g} %"
            label = f"{SITE_NAME[site]}, self-grafting, {how}"
            out.append(self_graft_row(p, site, stage2_data=data, row_id=rid, label=label, group=GROUP[site]))
    return out
