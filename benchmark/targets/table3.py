"""``table3`` — the design-space grid of paper Table 3, reported with Table 4's columns (paper §6, §11).

24 grafted configs: MHA × {Hyena-SE, Hyena-X, Hyena-Y, SWA, Mamba-2} × {50 % interleaved, 75 % interleaved, 100 %}
and MLP × {r=3, r=6, Hyena-X r=2} × {50, 75, 100 %}; plus the five controls printed in Table 4 (baseline, MHA/MLP
random init, MHA/MLP self-grafting) = the paper's 29 rows, and one extra control row, "teacher + the same stage 2"
(a short stage 2 can improve a small teacher on its own), which separates what stage 2 alone does to the teacher. A
plugin operator's catalogue rows (``--plugin``) join the grid of their site after the paper's.

Stage-1 runs are per (layer, operator, objective, lr, epochs), so the 50 % and 75 % rows reuse the layers of the 100 %
row; the self-grafting rows are the Table-2 runs.

    python -m benchmark.run table3                  # tiny: the whole grid on 2 CPU cores (see REPRODUCE.md)
    python -m benchmark.run table3 --preset paper --dry-run   # planned runs, layers, GPU-hours
"""
from __future__ import annotations

from benchmark.rows import Row
from benchmark.targets.common import (RATIOS, baseline_row, control_row, grid_rows, hybrid_row, preset,
                                      random_init_row, self_graft_row)

NAME = "table3"
TITLE = "Design space of MHA / MLP grafting (Table 3 grid, Table 4 columns)"


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    out = [baseline_row(p)]
    for site in ("attn", "mlp"):
        out.append(random_init_row(p, site))
        out.append(self_graft_row(p, site))
        for c in grid_rows(site):  # the catalogue's rows, plugins' after the paper's
            for ratio, strategy in RATIOS:
                out.append(hybrid_row(p, site, c.stem, c.operator, c.option_dict, f"{c.label}, {ratio} %", ratio,
                                      strategy))
    out.append(control_row(p))
    return out
