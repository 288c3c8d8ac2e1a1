"""Row registry: for every target, the rows the paper prints, in the paper's order.

Row order in every table comes from here, never from the order of rows on disk (DomainBed's ``ALGORITHMS`` lesson).
The Table-3/4 grid is the operator catalogue (``graft_core.operators.catalogue_rows``: labels, LaTeX, figure names
and paper names are declared where each operator is registered; plugin operators' rows follow the paper's). A row on
disk is matched to a registry row by its exact ``row`` id, and the published numbers (``tables/paper/*.csv``) by the
exact id their CSV fields name (``paper.py``); rows on disk that match nothing are kept and printed after the
registry rows.

Row-id convention (``<site>-<operator>-<strategy>[-<suffix>]``): ``attn-hyena_x-interleaved50``,
``mlp-mlp_r3-full``, ``attn-random_init-full``, ``attn-self_graft-full``, ``baseline``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

from graft_core.operators.registry import SITES, CatalogueRow, catalogue_rows

from .common import latex_escape
from .paper_csv import read_csv

TARGETS = ("table1", "table2", "table3", "table5", "table6", "fig2", "fig4a", "fig4b", "search")
ALIASES = {"table4": "table3"}


def canonical_target(target: str) -> str:
    target = ALIASES.get(target, target)
    if target not in TARGETS:
        known = ", ".join(list(TARGETS) + sorted(ALIASES))
        raise ValueError(f"unknown target {target!r}; choose one of: {known}")
    return target


# --------------------------------------------------------------------------------------------------------------------
# Operator rows (from the catalogue) and controls
# --------------------------------------------------------------------------------------------------------------------

CONTROLS = ("random_init", "self_graft")
# Not grafted rows: no ✗ rule, no highlight, not on the Pareto plot. "teacher_stage2" is the driver's "teacher + the
# same stage 2" control row (not in the paper: it separates what stage 2 alone does).
NOT_GRAFTED = CONTROLS + ("teacher_stage2",)
CONTROL_LABELS = {  # LaTeX, as the paper prints them (Table 4)
    ("attn", "random_init"): "Random init",
    ("mlp", "random_init"): "Random init",
    ("attn", "self_graft"): "Self-grafting",
    ("mlp", "self_graft"): "Self-grafting ($r$=4)",
}
SITE_OF_GROUP = {"MHA": "attn", "MLP": "mlp", "none": None, "": None}  # the paper CSVs' group column, exactly
RATIO_STRATEGY = {50: "interleaved50", 75: "interleaved75", 100: "full"}


def is_grafted(row: dict) -> bool:
    """A row that replaces operators with a new operator (not the baseline, a control or an analysis row)."""
    return row.get("row") != "baseline" and row.get("operator") is not None and row["operator"] not in NOT_GRAFTED


def grid_rows(site: str | None = None) -> tuple[CatalogueRow, ...]:
    """The catalogue's Table-3/4 operator configurations (stem = the summary's ``operator``)."""
    return catalogue_rows(site)


def latex_label(site: str, stem: str) -> str:
    """The LaTeX label of a control (``random_init``, ``self_graft``) or of a catalogue row."""
    if (site, stem) in CONTROL_LABELS:
        return CONTROL_LABELS[(site, stem)]
    row = next((r for r in grid_rows(site) if r.stem == stem), None)
    if row is None:
        raise ValueError(f"no catalogue row {stem!r} at site {site!r}")
    return row.latex if row.latex is not None else latex_escape(row.label)


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


# --------------------------------------------------------------------------------------------------------------------
# Row specs
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowSpec:
    """One registry row: the ROW fields it implies plus its LaTeX label and group."""

    row: str
    label: str  # LaTeX (trusted constant)
    group: str
    site: str | None = None
    operator: str | None = None
    ratio: int | None = None
    strategy: str | None = None
    extra: dict = field(default_factory=dict, hash=False)

    def as_row(self) -> dict:
        return {
            "row": self.row, "label": self.label, "group": self.group, "site": self.site,
            "operator": self.operator, "ratio": self.ratio, "strategy": self.strategy, "extra": dict(self.extra),
        }


def _table3() -> list[RowSpec]:
    rows = [RowSpec("baseline", "Baseline", "Baseline"),
            RowSpec("control-teacher-stage2", "Teacher + same stage 2", "Control (not in the paper)", None,
                    "teacher_stage2")]
    for site, group in (("attn", "MHA grafting"), ("mlp", "MLP grafting")):
        for ctl in CONTROLS:
            rows.append(RowSpec(f"{site}-{ctl}-full", CONTROL_LABELS[(site, ctl)], group, site, ctl, 100, "full"))
        for op in grid_rows(site):
            for ratio, s in RATIO_STRATEGY.items():
                rows.append(RowSpec(f"{site}-{op.stem}-{s}", latex_label(site, op.stem), group, site, op.stem, ratio,
                                    s))
    return rows


def _table1() -> list[RowSpec]:
    rows = [RowSpec("baseline", "Baseline", "Baseline")]  # printed in the notes (no objective)
    for site, label in (("attn", "MHA"), ("mlp", "MLP")):
        for obj in ("l2", "l1", "huber"):
            rows.append(RowSpec(f"{site}-{obj}", label, label, site, "self_graft", None, "table1_layers",
                                {"objective": obj}))
    for site, label in (("attn", "MHA outputs"), ("mlp", "MLP outputs")):  # panels (i)/(ii): per-layer statistics
        rows.append(RowSpec(f"{site}-activation_stats", label, "Activation statistics", site))
    return rows


TABLE2_LABELS = {
    "baseline": "Baseline",
    "attn-random_init-full": "MHA, random init",
    "attn-self_graft-full-s1_0.63": "MHA, self-grafting",
    "attn-self_graft-full-s1_0.63-s2_0.63": "MHA, self-grafting",
    "attn-self_graft-full-s1_0.63-s2_5": "MHA, self-grafting",
    "attn-self_graft-full-s1_0.63-s2_10": "MHA, self-grafting",
    "mlp-random_init-full": "MLP, random init",
    "mlp-self_graft-full-s1_0.63-s2_10": "MLP, self-grafting",
}


def _table2() -> list[RowSpec]:
    rows = [RowSpec("baseline", "Baseline", "Baseline")]
    specs = [
        ("attn", "random_init", None, None),
        ("attn", "self_graft", 0.63, None),
        ("attn", "self_graft", 0.63, 0.63),
        ("attn", "self_graft", 0.63, 5.0),
        ("attn", "self_graft", 0.63, 10.0),
        ("mlp", "random_init", None, None),
        ("mlp", "self_graft", 0.63, 10.0),
    ]
    for site, op, s1, s2 in specs:
        rid = f"{site}-{op}-full"
        if s1 is not None:
            rid += f"-s1_{s1:g}"
        if s2 is not None:
            rid += f"-s2_{s2:g}"
        group = "MHA (all layers)" if site == "attn" else "MLP (all layers)"
        rows.append(RowSpec(rid, TABLE2_LABELS[rid], group, site, op, 100, "full",
                            {"stage1_data": s1, "stage2_data": s2}))
    return rows


# rows that only the small presets plan (benchmark/targets/table5.py, table6.py): a table skips them while missing
DIAGNOSTIC = {"diagnostic": True}


def is_diagnostic(row: dict) -> bool:
    return bool((row.get("extra") or {}).get("diagnostic"))


def skipped(row: dict) -> bool:
    """A diagnostic row that was not run (the paper presets do not plan them): left out of tables and reports."""
    return is_diagnostic(row) and row.get("status") == "missing"


def _table5() -> list[RowSpec]:
    return [
        RowSpec("baseline", r"PixArt-$\Sigma$ (baseline)", "Baseline"),
        RowSpec("attn-hyena_x-pixart", r"PixArt-$\Sigma$ + Hyena-X (14/28 MHA)", "Grafted", "attn", "hyena_x", 50,
                "pixart"),
        RowSpec("attn-hyena_x-pixart-stage1", r"PixArt-$\Sigma$ + Hyena-X (stage 1 only)", "Grafted", "attn",
                "hyena_x_stage1", 50, "pixart", DIAGNOSTIC),
        RowSpec("control-teacher-lora", "Teacher + same LoRA stage 2 (control)", "Control", None, "teacher_lora",
                extra=DIAGNOSTIC),
    ]


def _table6() -> list[RowSpec]:
    return [
        RowSpec("baseline", "DiT-XL/2 (teacher)", "Grafting", extra={"depth": 28}),
        RowSpec("parallel-depth14", "Grafting (parallel pairs)", "Grafting", None, "parallel", None, "parallel",
                {"depth": 14}),
        RowSpec("parallel-depth14-stage1", "Parallel pairs (stage 1 only)", "Grafting", None, "parallel_stage1",
                None, "parallel", {"depth": 14, **DIAGNOSTIC}),
        RowSpec("control-teacher-stage2", "Teacher + same stage 2 (control)", "Control", None, "teacher_stage2",
                extra=DIAGNOSTIC),
    ]


def _fig2() -> list[RowSpec]:
    return [RowSpec("locality", "MHA band-$k$ locality", "Analysis", "attn", None, None, "full")]


def fig4a_operators() -> tuple[str, ...]:
    """Fig. 4a's operators (catalogue stems) in the paper's order, as ``tables/paper/fig4a.csv`` lists them."""
    return tuple(dict.fromkeys(paper_stem("attn", rec["operator"]) for rec in read_csv("fig4a")))


FIG4A_OPERATORS = fig4a_operators()


def _fig4a() -> list[RowSpec]:
    rows = []
    for op in FIG4A_OPERATORS:
        for data in (10, 20):
            rows.append(RowSpec(f"attn-{op}-interleaved50-data{data}", latex_label("attn", op),
                                "Data scale", "attn", op, 50, "interleaved50", {"stage2_data": float(data)}))
    return rows


FIG4B_SELECTIONS = (("interleaved50", "Interleaved"), ("top_local", "Top-local"), ("low_local", "Low-local"),
                    ("deep", "Deep (last half)"))


def _fig4b() -> list[RowSpec]:
    return [RowSpec(f"attn-hyena_x-{s}", label, "Layer selection", "attn", "hyena_x", 50, s)
            for s, label in FIG4B_SELECTIONS]


# The search target (beyond the paper): per site, per budget, the fixed choices then the searched ones.
SEARCH_STUDIES = (("attn", "hyena_x", "Hyena-X", ("stage1_error", "greedy", "cost_aware")),
                  ("mlp", "mlp_r3", "MLP $r$=3", ("stage1_error", "greedy")))


def _search() -> list[RowSpec]:
    rows = []
    for site, stem, label, strategies in SEARCH_STUDIES:
        group = "MHA grafting" if site == "attn" else "MLP grafting"
        for ratio in (50, 75):
            # (row id suffix, the summary's strategy, the selection it names)
            choices = [(f"interleaved{ratio}", f"interleaved{ratio}", "interleaved")]
            if site == "attn" and ratio == 50:  # Fig. 4b's locality ranking exists at 50 % only
                choices.append(("top_local", "top_local", "top_local"))
            choices += [(f"{s}{ratio}", s, s) for s in strategies]
            for suffix, strategy, selection in choices:
                rows.append(RowSpec(f"{site}-{stem}-{suffix}", f"{label}, {selection.replace('_', ' ')}, {ratio}\\,\\%",
                                    group, site, stem, ratio, strategy, {"strategy": selection, "budget": ratio}))
    return rows


_BUILDERS = {"table1": _table1, "table2": _table2, "table3": _table3, "table5": _table5, "table6": _table6,
             "fig2": _fig2, "fig4a": _fig4a, "fig4b": _fig4b, "search": _search}


def registry_rows(target: str) -> list[RowSpec]:
    """The rows of ``target`` in the paper's order (built on each call: plugin operators may register later)."""
    return _BUILDERS[canonical_target(target)]()


def match_key(target: str, row: dict) -> tuple:
    """What identifies a row on disk: its exact id — except Table 6's parallel-pair rows, whose ids name the
    teacher's depth (``parallel-depth14`` for DiT-XL/2, ``parallel-depth4`` for the 8-layer tiny teacher): their
    operator."""
    if canonical_target(target) == "table6" and row.get("operator") in ("parallel", "parallel_stage1"):
        return (row["operator"],)
    return (row.get("row"),)
