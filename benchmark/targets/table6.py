"""``table6`` — depth → width: 28 sequential DiT blocks rewired into 14 parallel pairs (paper Table 6, §4.9, §9).

Rows: the teacher (depth 28; speed-up 1 by definition) and the parallel-pair model (depth 14; stage 1 per pair with
L1, stage 2 on 25 % data with lr halvings), run by ``graft_core.depth_width.run_row``. The TinyFusion baselines are
copied from the paper (``tables/``), not run.
"""
from __future__ import annotations

from benchmark.rows import Row
from benchmark.targets.common import baseline_row, preset

NAME = "table6"
TITLE = "Depth to width via parallel blocks"
EXTERNAL = "graft_core.depth_width:run_row"


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    depth = p.teacher.num_layers
    return [
        baseline_row(p, label=f"Teacher (depth {depth})", depth=depth, speedup=1.0),
        Row(id=f"parallel-depth{depth // 2}", label=f"Grafting (parallel pairs, depth {depth // 2})", group="Grafting",
            kind="external", preset=p, external=EXTERNAL, name="parallel",
            extra={"depth": depth // 2, "stage1_objective": "l1", "stage2_data": 25.0}),
    ]
