"""``table5`` — PixArt-Σ text-to-image grafting (paper Table 5, §8).

Rows: the PixArt-Σ baseline and Hyena-X in 14 of 28 MHA layers (8, 10, 12, 14, 16, 18, 20–27 as printed, read as
0-based indices; the paper does not state the base), stage 2 with LoRA rank 64; metrics GenEval and speed-up. Both
rows run ``graft_core.pixart.run_row``; the tiny preset grafts a text-conditioned tiny PixArt with the same layer
rule scaled to its depth (``graft_core.plan.pixart_layers``: (2, 4, 6, 7) of 8).
"""
from __future__ import annotations

from benchmark.rows import GraftSpec, Row
from benchmark.targets.common import preset
from graft_core.plan import pixart_layers

NAME = "table5"
TITLE = "PixArt-Σ text-to-image grafting"
EXTERNAL = "graft_core.pixart:run_row"


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    grafted = GraftSpec(site="attn", operator="hyena_x", strategy="pixart", layers=pixart_layers(p.teacher.num_layers))
    return [
        Row(id="baseline", label="PixArt-Σ (baseline)", group="Baseline", kind="external", preset=p,
            external=EXTERNAL, extra={"model": "pixart_sigma"}),
        Row(id="attn-hyena_x-pixart", label="PixArt-Σ + Hyena-X (14/28 MHA layers)", group="Grafted",
            kind="external", preset=p, graft=grafted, ratio=50, external=EXTERNAL, name="hyena_x",
            extra={"model": "pixart_sigma", "lora_rank": 64}),
    ]
