"""Reading ``tables/paper/*.csv`` (the published numbers) — a leaf, so the registry and ``paper`` both can."""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

PAPER_DIR = Path(__file__).resolve().parent / "paper"


@lru_cache(maxsize=None)
def read_csv(name: str) -> tuple[dict, ...]:
    """Rows of ``tables/paper/<name>.csv`` as dicts of stripped strings (empty = UNKNOWN)."""
    with open(PAPER_DIR / f"{name}.csv", newline="") as f:
        return tuple({k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f))
