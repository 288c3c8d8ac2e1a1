"""Layer selection without importing torch: a pure-Python mirror of ``graft_core.plan.select_layers``.

The driver must plan (and hash) every run on the warm path without loading torch, while ``graft_core.plan`` imports
the operator registry. ``tests/test_benchmark_targets.py`` checks that both give identical indices for every strategy.
Indices are 0-based (paper.md §5, ``paper_tables/layers.csv``).
"""
from __future__ import annotations

from typing import Sequence

# Layers of the Table-1 objective study: paper 1-based l = 1, 8, 17, 27, 28 → 0-based 0, 7, 16, 26, 27 (of 28).
TABLE1_LAYERS_28 = (0, 7, 16, 26, 27)
NEEDS_LOCALITY = ("top_local", "low_local")


def select_layers(strategy: str, num_layers: int, *, locality: Sequence[float] | None = None) -> tuple[int, ...]:
    """Same semantics as ``graft_core.plan.select_layers`` plus ``table1_layers`` (the five study layers)."""
    half = num_layers // 2
    if strategy == "full":
        return tuple(range(num_layers))
    if strategy == "interleaved50":
        return tuple(i for i in range(num_layers) if i % 2 == 1)
    if strategy == "interleaved75":
        return tuple(i for i in range(num_layers) if i % 4 != 0)
    if strategy == "deep":
        return tuple(range(num_layers - half, num_layers))
    if strategy == "table1_layers":
        return table1_layers(num_layers)
    if strategy in NEEDS_LOCALITY:
        if locality is None or len(locality) != num_layers:
            raise ValueError(f"strategy {strategy!r} needs one locality score per layer ({num_layers})")
        sign = -1.0 if strategy == "top_local" else 1.0
        order = sorted(range(num_layers), key=lambda i: (sign * float(locality[i]), i))
        return tuple(sorted(order[:half]))
    raise ValueError(f"unknown layer-selection strategy {strategy!r}")


def table1_layers(num_layers: int) -> tuple[int, ...]:
    """The paper's five layers for 28 blocks; for other depths the same relative positions (first, ~1/4, ~3/5,
    second-to-last, last), deduplicated — e.g. (0, 2, 4, 6, 7) for the 8-layer tiny teacher."""
    if num_layers == 28:
        return TABLE1_LAYERS_28
    last = num_layers - 1
    picks = {0, round(7 / 27 * last), round(16 / 27 * last), max(0, num_layers - 2), last}
    return tuple(sorted(picks))
