"""Row registry: for every target, the rows the paper prints, in the paper's order.

The rows are ``graft_core.table_rows``' declarations (the driver builds its rows from the same ones): this module
adds only what the tables need on top (the LaTeX label in place, the diagnostic flag among the row's facts, how a row
on disk is matched). Row order in every table comes from here, never from the order of rows on disk (DomainBed's
``ALGORITHMS`` lesson). A row on disk is matched to a registry row by its exact ``row`` id, and the published numbers
(``tables/paper/*.csv``) by the exact id their CSV fields name (``paper.py``); rows on disk that match nothing are
kept and printed after the registry rows.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

from graft_core.operators.registry import SITES, CatalogueRow, catalogue_rows
from graft_core.table_rows import (ALIASES, CONTROLS, DECLARATIONS, FIG4A_OPERATORS, RATIOS, RowDecl,
                                   declared_rows)
from graft_core.table_rows import FIG4B_SELECTIONS as _SELECTIONS

from .common import latex_escape

TARGETS = tuple(t for t in DECLARATIONS if t != "baseline")  # the driver's baseline target has no table
FIG4B_SELECTIONS = tuple((strategy, latex) for strategy, _, latex in _SELECTIONS)
__all__ = ["ALIASES", "FIG4A_OPERATORS", "FIG4B_SELECTIONS", "TARGETS", "RowSpec", "registry_rows"]


def canonical_target(target: str) -> str:
    target = ALIASES.get(target, target)
    if target not in TARGETS:
        known = ", ".join(list(TARGETS) + sorted(ALIASES))
        raise ValueError(f"unknown target {target!r}; choose one of: {known}")
    return target


# --------------------------------------------------------------------------------------------------------------------
# Operator rows (from the catalogue) and controls
# --------------------------------------------------------------------------------------------------------------------

# Not grafted rows: no ✗ rule, no highlight, not on the Pareto plot. "teacher_stage2" is the driver's "teacher + the
# same stage 2" control row (not in the paper: it separates what stage 2 alone does).
NOT_GRAFTED = CONTROLS + ("teacher_stage2",)
SITE_OF_GROUP = {"MHA": "attn", "MLP": "mlp", "none": None, "": None}  # the paper CSVs' group column, exactly
RATIO_STRATEGY = dict(RATIOS)  # paper ratio % → strategy


def is_grafted(row: dict) -> bool:
    """A row that replaces operators with a new operator (not the baseline, a control or an analysis row)."""
    return row.get("row") != "baseline" and row.get("operator") is not None and row["operator"] not in NOT_GRAFTED


def grid_rows(site: str | None = None) -> tuple[CatalogueRow, ...]:
    """The catalogue's Table-3/4 operator configurations (stem = the summary's ``operator``)."""
    return catalogue_rows(site)


def paper_stem(site: str, paper_name: str) -> str:
    """The catalogue row whose declared paper name is exactly ``paper_name`` at ``site`` (the CSVs' operator)."""
    for r in grid_rows(site):
        if r.paper == paper_name:
            return r.stem
    known = ", ".join(repr(r.paper) for r in grid_rows(site) if r.paper)
    raise ValueError(f"paper operator {paper_name!r} at site {site!r} is in no catalogue row (declared: {known})")


class _ShortNames(Mapping):
    """``{stem: figure legend name}``, read from the catalogue on each access (plugins may register later)."""

    def _names(self) -> dict[str, str]:
        return {r.stem: r.short for r in grid_rows()}

    def __getitem__(self, key: str) -> str:
        return self._names()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


SHORT_NAMES: Mapping[str, str] = _ShortNames()  # plain text for figures


def canonical_site(site: Any) -> str | None:
    """A summary's ``site`` as written: ``attn`` | ``mlp``; anything else is no site (None)."""
    return site if site in SITES else None


@dataclass(frozen=True)
class RowSpec:
    """One registry row: the ROW fields a declaration (``graft_core.table_rows``) implies, with its LaTeX label."""

    row: str
    label: str  # LaTeX (trusted constant)
    group: str
    site: str | None = None
    operator: str | None = None
    ratio: int | None = None
    strategy: str | None = None
    extra: dict = field(default_factory=dict, hash=False)
    paper: str | None = None  # the CSV under tables/paper/ that publishes this row

    @classmethod
    def of(cls, d: RowDecl) -> "RowSpec":
        extra = {**d.extra, **(DIAGNOSTIC if d.diagnostic else {})}
        latex = d.latex if d.latex is not None else latex_escape(d.label)
        return cls(d.id, latex, d.group, d.site, d.operator, d.ratio, d.strategy, extra, d.paper)

    def as_row(self) -> dict:
        return {
            "row": self.row, "label": self.label, "group": self.group, "site": self.site,
            "operator": self.operator, "ratio": self.ratio, "strategy": self.strategy, "extra": dict(self.extra),
        }


# rows that only the small presets plan (benchmark/targets/table5.py, table6.py): a table skips them while missing
DIAGNOSTIC = {"diagnostic": True}


def is_diagnostic(row: dict) -> bool:
    return bool((row.get("extra") or {}).get("diagnostic"))


def skipped(row: dict) -> bool:
    """A diagnostic row that was not run (the paper presets do not plan them): left out of tables and reports."""
    return is_diagnostic(row) and row.get("status") == "missing"


def registry_rows(target: str) -> list[RowSpec]:
    """The rows of ``target`` in the paper's order, as declared for the paper preset (built on each call: plugin
    operators may register later). Rows of other presets match them by id (Table 6: by operator, ``match_key``)."""
    return [RowSpec.of(d) for d in declared_rows(canonical_target(target), "paper")]


def match_key(target: str, row: dict) -> tuple:
    """What identifies a row on disk: its exact id — except Table 6's parallel-pair rows, whose ids name the
    teacher's depth (``parallel-depth14`` for DiT-XL/2, ``parallel-depth4`` for the 8-layer tiny teacher): their
    operator."""
    if canonical_target(target) == "table6" and row.get("operator") in ("parallel", "parallel_stage1"):
        return (row["operator"],)
    return (row.get("row"),)
