"""``baseline`` — the teacher alone: its metrics, the metric floor and the evaluator's noise control.

    python -m benchmark.run baseline                 # tiny (default): ~1.5 min on 2 CPU cores with a cached teacher
    python -m benchmark.run baseline --preset paper  # DiT-XL/2: 50k samples, 250 DDPM steps, cfg 1.5 (~4 GPU-h)

Writes ``results/<preset>/baseline/{summary,metrics,metric_floor,noise_control}.json``. Every other target's
baseline row is this run (same config → same run id).
"""
from __future__ import annotations

from benchmark.rows import Row
from benchmark.targets.common import baseline_row, declarations, declared_row, preset

NAME = "baseline"
TITLE = "Teacher metrics, metric floor and noise control"


KINDS = {"metric_floor": "floor", "noise_control": "noise"}


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    return [baseline_row(p, d) if d.id == "baseline" else declared_row(d, kind=KINDS[d.id], preset=p)
            for d in declarations(NAME, p)]
