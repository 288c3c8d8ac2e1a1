"""``fig2`` — band-k attention locality of every MHA layer of the teacher (paper Fig. 2, §7).

L_k = share of attention mass within ±k positions of the 1D token index, averaged over queries, heads, timesteps and
samples (250 samples, 50-step DDIM, cfg 1.5). ``extra.locality = {"k": [...], "layers": [[L_k per k] per layer]}``.
Fig. 4b's top-/low-local rows rank layers by this result at ``select_k``.

    python -m benchmark.run fig2                  # tiny: < 1 min
    python -m benchmark.run fig2 --preset paper   # one GPU, < 0.5 h
"""
from __future__ import annotations

from benchmark.rows import Row
from benchmark.targets.common import declarations, declared_row, locality_config, preset

NAME = "fig2"
TITLE = "MHA locality (band-k attention mass per layer)"


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    return [declared_row(d, kind="locality", preset=p, locality=locality_config(p)) for d in declarations(NAME, p)]
