"""The rows of every paper table and figure, declared once: id, plain and LaTeX label, group, paper binding.

The driver (``benchmark/targets/*.py``) builds its rows from these declarations and adds *what to compute*; the
tables (``tables/registry.py``) read the same declarations and add the published numbers. Neither re-derives the
other's ids, labels or groups. Torch-free and driver-free, so both layers may import it (imports run one way:
``benchmark -> graft_core``, ``tables -> graft_core``).

Preset-aware where the rows are: Table 6's ids name the teacher's depth (``parallel-depth14`` for DiT-XL/2,
``parallel-depth4`` for the 8-layer tiny teacher) and plain labels name the preset's teacher. The LaTeX label is the
paper's wording and does not change with the preset. A ``diagnostic`` row is one the paper presets do not plan (the
driver decides which presets run diagnostics); tables skip it while it is missing. ``paper`` names the CSV under
``tables/paper/`` that publishes the row's numbers (None: not in the paper).

Row-id convention (``<site>-<operator>-<strategy>[-<suffix>]``): ``attn-hyena_x-interleaved50``,
``mlp-mlp_r3-full``, ``attn-random_init-full``, ``attn-self_graft-full``, ``baseline``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from graft_core.operators.registry import CatalogueRow, catalogue_rows
from graft_core.presets import get_preset


@dataclass(frozen=True)
class RowDecl:
    """One declared row: what the driver names it and what the tables print for it."""

    id: str
    label: str  # plain text (driver summaries, logs)
    latex: str | None  # LaTeX for the tables (trusted constant); None: the tables escape ``label``
    group: str
    site: str | None = None
    operator: str | None = None  # the summary's "operator" (catalogue stem, control name, ...)
    ratio: int | None = None
    strategy: str | None = None
    extra: dict = field(default_factory=dict, hash=False, compare=False)  # row facts the tables show (data %, ...)
    diagnostic: bool = False
    paper: str | None = None  # tables/paper/<paper>.csv publishes this row


SITE_NAME = {"attn": "MHA", "mlp": "MLP"}
SITE_GROUP = {"attn": "MHA grafting", "mlp": "MLP grafting"}
CONTROLS = ("random_init", "self_graft")
CONTROL_LATEX = {  # as the paper prints them (Table 4)
    ("attn", "random_init"): "Random init",
    ("mlp", "random_init"): "Random init",
    ("attn", "self_graft"): "Self-grafting",
    ("mlp", "self_graft"): "Self-grafting ($r$=4)",
}
CONTROL_LABEL = {"random_init": "Random init", "self_graft": "Self-grafting"}
RATIOS = ((50, "interleaved50"), (75, "interleaved75"), (100, "full"))
OBJECTIVES = (("l2", "L2"), ("l1", "L1"), ("huber", "Huber (δ=1)"))
# Fig. 4a's operators (catalogue stems) in the order the paper's figure lists them (tables/paper/fig4a.csv; a test
# checks they agree)
FIG4A_OPERATORS = ("hyena_x", "swa", "mamba2", "hyena_se", "hyena_y")
FIG4A_DATA = (10.0, 20.0)
# Fig. 4b's layer selections: (strategy, plain name, LaTeX label)
FIG4B_SELECTIONS = (("interleaved50", "interleaved", "Interleaved"), ("top_local", "top-local", "Top-local"),
                    ("low_local", "low-local", "Low-local"), ("deep", "deep", "Deep (last half)"))
# Table 2's rows after the baseline: (site, operator, stage-1 data %, stage-2 data %), in the paper's order
TABLE2_SETTINGS = (("attn", "random_init", None, None), ("attn", "self_graft", 0.63, None),
                   ("attn", "self_graft", 0.63, 0.63), ("attn", "self_graft", 0.63, 5.0),
                   ("attn", "self_graft", 0.63, 10.0), ("mlp", "random_init", None, None),
                   ("mlp", "self_graft", 0.63, 10.0))
TABLE2_GROUP = {"attn": "MHA (all layers)", "mlp": "MLP (all layers)"}


def baseline_label(preset_name: str) -> str:
    return "Baseline DiT-XL/2" if get_preset(preset_name).teacher.pretrained else f"Baseline ({preset_name} teacher)"


def _baseline(preset_name: str, paper: str | None = "table4") -> RowDecl:
    return RowDecl("baseline", baseline_label(preset_name), "Baseline", "Baseline", paper=paper)


def control_stage2(latex: str, group: str, diagnostic: bool = False) -> RowDecl:
    return RowDecl("control-teacher-stage2", "Teacher + same stage 2 (control)", latex, group, None,
                   "teacher_stage2", diagnostic=diagnostic)


def grid_rows(site: str | None = None, *, paper_only: bool = False) -> tuple[CatalogueRow, ...]:
    """The Table-3 grid's operator configurations in catalogue order (``paper_only``: those the paper publishes,
    without plugins)."""
    return tuple(r for r in catalogue_rows(site) if r.paper is not None or not paper_only)


def grid_row(site: str, stem: str) -> CatalogueRow:
    row = next((r for r in grid_rows(site) if r.stem == stem), None)
    if row is None:
        raise ValueError(f"no catalogue row {stem!r} at site {site!r}")
    return row


def _baseline_target(p: str) -> list[RowDecl]:
    return [_baseline(p, paper=None),
            RowDecl("metric_floor", "Metric floor (real vs held-out real)", None, "Reference"),
            RowDecl("noise_control", "Noise control (noise images vs real)", None, "Reference")]


def _table1(p: str) -> list[RowDecl]:
    rows = [_baseline(p)]  # printed in the notes (no objective)
    for site in ("attn", "mlp"):
        name = SITE_NAME[site]
        for obj, label in OBJECTIVES:
            rows.append(RowDecl(f"{site}-{obj}", f"{name}, {label}", name, name, site, "self_graft", None,
                                "table1_layers", {"objective": obj}, paper="table1"))
    for site in ("attn", "mlp"):  # panels (i)/(ii): per-layer statistics
        rows.append(RowDecl(f"{site}-activation_stats", f"{SITE_NAME[site]} outputs", f"{SITE_NAME[site]} outputs",
                            "Activation statistics", site))
    return rows


def table2_row_id(site: str, operator: str, s1: float | None, s2: float | None) -> str:
    return f"{site}-{operator}-full" + (f"-s1_{s1:g}" if s1 is not None else "") + \
        (f"-s2_{s2:g}" if s2 is not None else "")


def _table2(p: str) -> list[RowDecl]:
    rows = [_baseline(p, paper="table2")]
    for site, op, s1, s2 in TABLE2_SETTINGS:
        what = CONTROL_LABEL[op].lower()
        how = "" if op == "random_init" else (", stage 1 only" if s2 is None else f", stage 2 on {s2:g} %")
        rows.append(RowDecl(table2_row_id(site, op, s1, s2), f"{SITE_NAME[site]}, {what}{how}",
                            f"{SITE_NAME[site]}, {what}", TABLE2_GROUP[site], site, op, 100, "full",
                            {"stage1_data": s1, "stage2_data": s2}, paper="table2"))
    return rows


def _table3(p: str) -> list[RowDecl]:
    rows = [_baseline(p), control_stage2("Teacher + same stage 2", "Control (not in the paper)")]
    for site in ("attn", "mlp"):
        for ctl in CONTROLS:
            label = CONTROL_LABEL[ctl] + (" (r=4)" if (site, ctl) == ("mlp", "self_graft") else "")
            rows.append(RowDecl(f"{site}-{ctl}-full", label, CONTROL_LATEX[(site, ctl)], SITE_GROUP[site], site, ctl,
                                100, "full", paper="table4"))
        for c in grid_rows(site):  # the catalogue's rows, plugins' after the paper's
            for ratio, strategy in RATIOS:
                rows.append(RowDecl(f"{site}-{c.stem}-{strategy}", f"{c.label}, {ratio} %",
                                    c.latex, SITE_GROUP[site], site, c.stem, ratio, strategy,
                                    paper="table4" if c.paper is not None else None))
    return rows


def _table5(p: str) -> list[RowDecl]:
    return [
        RowDecl("baseline", "PixArt-Σ (baseline)", r"PixArt-$\Sigma$ (baseline)", "Baseline", paper="table5"),
        RowDecl("attn-hyena_x-pixart", "PixArt-Σ + Hyena-X (14/28 MHA layers)",
                r"PixArt-$\Sigma$ + Hyena-X (14/28 MHA)", "Grafted", "attn", "hyena_x", 50, "pixart", paper="table5"),
        RowDecl("attn-hyena_x-pixart-stage1", "PixArt-Σ + Hyena-X (stage 1 only)",
                r"PixArt-$\Sigma$ + Hyena-X (stage 1 only)", "Grafted", "attn", "hyena_x_stage1", 50, "pixart",
                diagnostic=True),
        RowDecl("control-teacher-lora", "Teacher + same LoRA stage 2 (control)", None, "Control", None,
                "teacher_lora", diagnostic=True),
    ]


def _table6(p: str) -> list[RowDecl]:
    depth = get_preset(p).teacher.num_layers
    half = depth // 2
    return [
        RowDecl("baseline", f"Teacher (depth {depth})", "DiT-XL/2 (teacher)", "Grafting", extra={"depth": depth},
                paper="table6"),
        RowDecl(f"parallel-depth{half}", f"Grafting (parallel pairs, depth {half})", "Grafting (parallel pairs)",
                "Grafting", None, "parallel", None, "parallel", {"depth": half}, paper="table6"),
        RowDecl(f"parallel-depth{half}-stage1", f"Parallel pairs, depth {half} (stage 1 only)",
                "Parallel pairs (stage 1 only)", "Grafting", None, "parallel_stage1", None, "parallel",
                {"depth": half}, diagnostic=True),
        control_stage2("Teacher + same stage 2 (control)", "Control", diagnostic=True),
    ]


def _fig2(p: str) -> list[RowDecl]:
    return [RowDecl("locality", "Band-k locality of the teacher's MHA layers", "MHA band-$k$ locality", "Analysis",
                    "attn", None, None, "full")]


def _fig4a(p: str) -> list[RowDecl]:
    rows = []
    for stem in FIG4A_OPERATORS:
        c = grid_row("attn", stem)
        for data in FIG4A_DATA:
            rows.append(RowDecl(f"attn-{stem}-interleaved50-data{data:g}", f"{c.label}, {data:g} % data", c.latex,
                                "Data scale", "attn", stem, 50, "interleaved50", {"stage2_data": data},
                                paper="fig4a"))
    return rows


def _fig4b(p: str) -> list[RowDecl]:
    return [RowDecl(f"attn-hyena_x-{s}", f"Hyena-X, {name}", latex, "Layer selection", "attn", "hyena_x", 50, s,
                    paper="fig4b")
            for s, name, latex in FIG4B_SELECTIONS]


# The search target (beyond the paper): (site, stem, plain label, LaTeX label, searched strategies)
SEARCH_STUDIES = (("attn", "hyena_x", "Hyena-X", "Hyena-X", ("stage1_error", "greedy", "cost_aware")),
                  ("mlp", "mlp_r3", "MLP r=3", "MLP $r$=3", ("stage1_error", "greedy")))
SEARCH_BUDGETS = (50, 75)
SEARCH_STRATEGY_LABELS = {"interleaved": "interleaved", "top_local": "top-local", "stage1_error": "stage-1 error",
                          "greedy": "greedy validation", "cost_aware": "cost-aware"}


def _search(p: str) -> list[RowDecl]:
    """Per site and budget, the paper's fixed choices (interleaved; top-local at 50 % MHA, Fig. 4b's locality
    ranking exists there only) then the searched ones; ``extra.strategy`` names the selection."""
    rows = []
    for site, stem, label, latex, strategies in SEARCH_STUDIES:
        for ratio in SEARCH_BUDGETS:
            # (row id suffix, the summary's strategy, the selection it names)
            choices = [(f"interleaved{ratio}", f"interleaved{ratio}", "interleaved")]
            if site == "attn" and ratio == 50:
                choices.append(("top_local", "top_local", "top_local"))
            choices += [(f"{s}{ratio}", s, s) for s in strategies]
            for suffix, strategy, selection in choices:
                rows.append(RowDecl(f"{site}-{stem}-{suffix}",
                                    f"{label}, {SEARCH_STRATEGY_LABELS[selection]}, {ratio} %",
                                    f"{latex}, {selection.replace('_', ' ')}, {ratio}\\,\\%", SITE_GROUP[site], site,
                                    stem, ratio, strategy, {"strategy": selection, "budget": ratio}))
    return rows


DECLARATIONS: dict[str, Callable[[str], list[RowDecl]]] = {
    "baseline": _baseline_target, "table1": _table1, "table2": _table2, "table3": _table3, "table5": _table5,
    "table6": _table6, "fig2": _fig2, "fig4a": _fig4a, "fig4b": _fig4b, "search": _search}
ALIASES = {"table4": "table3"}


def declared_rows(target: str, preset_name: str = "paper") -> list[RowDecl]:
    """The rows of ``target`` on ``preset_name`` in the paper's order (built on each call: plugin operators may
    register later)."""
    target = ALIASES.get(target, target)
    if target not in DECLARATIONS:
        raise ValueError(f"no row declarations for target {target!r}; known: {', '.join(DECLARATIONS)}")
    return DECLARATIONS[target](preset_name)


def declared(target: str, preset_name: str) -> dict[str, RowDecl]:
    """``{row id: declaration}`` of ``target`` on ``preset_name``."""
    return {d.id: d for d in declared_rows(target, preset_name)}
