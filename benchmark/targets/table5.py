"""``table5`` — PixArt-Σ text-to-image grafting (paper Table 5, §8).

Rows: the PixArt-Σ baseline and Hyena-X in 14 of 28 MHA layers (8, 10, 12, 14, 16, 18, 20–27 as printed; index base
not stated), stage 2 with LoRA rank 64; metrics GenEval and speed-up. The row steps are implemented by
``graft_core.pixart.run_row`` (another issue); until it exists this target stops with "not implemented yet in this
build" and launches nothing.
"""
from __future__ import annotations

from benchmark.rows import GraftSpec, Row
from benchmark.targets.common import preset

NAME = "table5"
TITLE = "PixArt-Σ text-to-image grafting"
VERSION = 1
EXTERNAL = "graft_core.pixart:run_row"
PIXART_LAYERS = (8, 10, 12, 14, 16, 18, 20, 21, 22, 23, 24, 25, 26, 27)


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    grafted = GraftSpec(site="attn", operator="hyena_x", strategy="pixart", layers=PIXART_LAYERS)
    return [
        Row(id="baseline", label="PixArt-Σ (baseline)", group="Baseline", kind="external", preset=p,
            external=EXTERNAL, extra={"model": "pixart_sigma"}),
        Row(id="attn-hyena_x-pixart", label="PixArt-Σ + Hyena-X (14/28 MHA layers)", group="Grafted",
            kind="external", preset=p, graft=grafted, ratio=50, external=EXTERNAL, name="hyena_x",
            extra={"model": "pixart_sigma", "lora_rank": 64}),
    ]
