"""Row registry: for every target, the rows the paper prints, in the paper's order.

Row order in every table comes from here, never from the order of rows on disk (DomainBed's ``ALGORITHMS`` lesson).
A row on disk is matched to a registry row by its ``row`` id first, and failing that by a target-specific key built
from the descriptive fields — ``(site, operator, ratio)`` for Table 3/4 — so a driver that spells ids differently
still lands in the right place. Rows on disk that match nothing are kept and printed after the registry rows.

Row-id convention (``<site>-<operator>-<strategy>[-<suffix>]``): ``attn-hyena_x-interleaved50``,
``mlp-mlp_r3-full``, ``attn-random_init-full``, ``attn-self_graft-full``, ``baseline``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .common import as_number

TARGETS = ("table1", "table2", "table3", "table5", "table6", "fig2", "fig4a", "fig4b")
ALIASES = {"table4": "table3"}


def canonical_target(target: str) -> str:
    target = ALIASES.get(target, target)
    if target not in TARGETS:
        known = ", ".join(list(TARGETS) + sorted(ALIASES))
        raise ValueError(f"unknown target {target!r}; choose one of: {known}")
    return target


# --------------------------------------------------------------------------------------------------------------------
# Operator names
# --------------------------------------------------------------------------------------------------------------------

MHA_OPERATORS = ("hyena_se", "hyena_x", "hyena_y", "swa", "mamba2")
MLP_OPERATORS = ("mlp_r3", "mlp_r6", "mlp_hyena_x")
CONTROLS = ("random_init", "self_graft")
# Not grafted rows: no ✗ rule, no highlight, not on the Pareto plot. "teacher_stage2" is the driver's "teacher + the
# same stage 2" control row (tiny-testbed.md lesson 1; not in the paper).
NOT_GRAFTED = CONTROLS + ("teacher_stage2",)


def is_grafted(row: dict) -> bool:
    """A row that replaces operators with a new operator (not the baseline, a control or an analysis row)."""
    return row.get("row") != "baseline" and row.get("operator") is not None and row["operator"] not in NOT_GRAFTED

OPERATOR_LABELS = {  # LaTeX, as the paper prints them (Table 4)
    ("attn", "hyena_se"): "Hyena-SE ($K$=4)",
    ("attn", "hyena_x"): "Hyena-X ($K$=4)",
    ("attn", "hyena_y"): "Hyena-Y ($K$=4)",
    ("attn", "swa"): "SWA ($w$=4)",
    ("attn", "mamba2"): "Mamba-2 ($d_s$=64, $E$=2)",
    ("mlp", "mlp_r3"): r"Exp.\ ratio $\downarrow$ ($r$=3)",
    ("mlp", "mlp_r6"): r"Exp.\ ratio $\uparrow$ ($r$=6)",
    ("mlp", "mlp_hyena_x"): "Hyena-X ($r$=2, $K$=4)",
    ("attn", "random_init"): "Random init",
    ("mlp", "random_init"): "Random init",
    ("attn", "self_graft"): "Self-grafting",
    ("mlp", "self_graft"): "Self-grafting ($r$=4)",
}
SHORT_NAMES = {  # plain text for figures
    "hyena_se": "Hyena-SE", "hyena_x": "Hyena-X", "hyena_y": "Hyena-Y", "swa": "SWA", "mamba2": "Mamba-2",
    "mlp_r3": "MLP r=3", "mlp_r6": "MLP r=6", "mlp_hyena_x": "MLP Hyena-X",
}

_ALIASES = {
    "hyena-se": "hyena_se", "hyenase": "hyena_se",
    "hyena-x": "hyena_x", "hyenax": "hyena_x",
    "hyena-y": "hyena_y", "hyenay": "hyena_y",
    "mamba_2": "mamba2", "mamba-2": "mamba2",
    "mlp_r_3": "mlp_r3", "mlp_ratio_3": "mlp_r3", "mlp3": "mlp_r3", "mlp r=3": "mlp_r3",
    "mlp_r_6": "mlp_r6", "mlp_ratio_6": "mlp_r6", "mlp6": "mlp_r6", "mlp r=6": "mlp_r6",
    "mlp-hyena_x": "mlp_hyena_x", "mlp_hyenax": "mlp_hyena_x",
    "random": "random_init", "rand_init": "random_init", "random-init": "random_init",
    "self": "self_graft", "self_grafting": "self_graft", "self-graft": "self_graft", "selfgraft": "self_graft",
    "none": None, "baseline": None, "teacher": None, "": None,
}


def canonical_operator(site: str | None, operator: Any) -> str | None:
    """Map the spellings a driver might use onto the registry's operator names (site-aware)."""
    if operator is None:
        return None
    op = str(operator).strip().lower()
    op = _ALIASES.get(op, op)
    if op is None:
        return None
    if site == "mlp":
        if op == "hyena_x":
            return "mlp_hyena_x"
        if op in ("mlp", "mlp_r4", "mlp_r_4", "mlp_ratio_4"):
            return "self_graft"
    if site == "attn" and op in ("mha", "attn", "attention"):
        return "self_graft"
    return op


def canonical_site(site: Any) -> str | None:
    if site is None:
        return None
    s = str(site).strip().lower()
    return {"mha": "attn", "attention": "attn", "attn1": "attn", "ff": "mlp", "ffn": "mlp"}.get(s, s) or None


STRATEGY_RATIO = {"interleaved50": 50, "interleaved75": 75, "full": 100, "full100": 100}


def ratio_of(row: dict) -> int | None:
    r = as_number(row.get("ratio"))
    if r is not None:
        return int(round(r))
    return STRATEGY_RATIO.get(str(row.get("strategy") or "").lower())


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


def _grid_strategy(ratio: int) -> str:
    return "full" if ratio == 100 else f"interleaved{ratio}"


def _table3() -> list[RowSpec]:
    rows = [RowSpec("baseline", "Baseline", "Baseline"),
            RowSpec("control-teacher-stage2", "Teacher + same stage 2", "Control (not in the paper)", None,
                    "teacher_stage2")]
    for site, group, ops in (("attn", "MHA grafting", MHA_OPERATORS), ("mlp", "MLP grafting", MLP_OPERATORS)):
        for ctl in CONTROLS:
            rows.append(RowSpec(f"{site}-{ctl}-full", OPERATOR_LABELS[(site, ctl)], group, site, ctl, 100, "full"))
        for op in ops:
            for ratio in (50, 75, 100):
                s = _grid_strategy(ratio)
                rows.append(RowSpec(f"{site}-{op}-{s}", OPERATOR_LABELS[(site, op)], group, site, op, ratio, s))
    return rows


def _table1() -> list[RowSpec]:
    rows = [RowSpec("baseline", "Baseline", "Baseline")]  # printed in the notes (no objective)
    for site, label in (("attn", "MHA"), ("mlp", "MLP")):
        for obj in ("l2", "l1", "huber"):
            rows.append(RowSpec(f"{site}-{obj}", label, label, site, "self_graft", None, "table1_layers",
                                {"objective": obj}))
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


def _table5() -> list[RowSpec]:
    return [
        RowSpec("baseline", r"PixArt-$\Sigma$ (baseline)", "Baseline"),
        RowSpec("attn-hyena_x-pixart", r"PixArt-$\Sigma$ + Hyena-X (14/28 MHA)", "Grafted", "attn", "hyena_x", 50,
                "pixart"),
    ]


def _table6() -> list[RowSpec]:
    return [
        RowSpec("baseline", "DiT-XL/2 (teacher)", "Grafting", extra={"depth": 28}),
        RowSpec("parallel-depth14", "Grafting (parallel pairs)", "Grafting", None, "parallel", None, "parallel",
                {"depth": 14}),
    ]


def _fig2() -> list[RowSpec]:
    return [RowSpec("locality", "MHA band-$k$ locality", "Analysis", "attn", None, None, "full")]


FIG4A_OPERATORS = ("hyena_x", "swa", "mamba2", "hyena_se", "hyena_y")


def _fig4a() -> list[RowSpec]:
    rows = []
    for op in FIG4A_OPERATORS:
        for data in (10, 20):
            rows.append(RowSpec(f"attn-{op}-interleaved50-data{data}", OPERATOR_LABELS[("attn", op)],
                                "Data scale", "attn", op, 50, "interleaved50", {"stage2_data": float(data)}))
    return rows


FIG4B_SELECTIONS = (("interleaved50", "Interleaved"), ("top_local", "Top-local"), ("low_local", "Low-local"),
                    ("deep", "Deep (last half)"))


def _fig4b() -> list[RowSpec]:
    return [RowSpec(f"attn-hyena_x-{s}", label, "Layer selection", "attn", "hyena_x", 50, s)
            for s, label in FIG4B_SELECTIONS]


REGISTRY: dict[str, list[RowSpec]] = {
    "table1": _table1(), "table2": _table2(), "table3": _table3(), "table5": _table5(), "table6": _table6(),
    "fig2": _fig2(), "fig4a": _fig4a(), "fig4b": _fig4b(),
}


def registry_rows(target: str) -> list[RowSpec]:
    return list(REGISTRY[canonical_target(target)])


# --------------------------------------------------------------------------------------------------------------------
# Match keys: what identifies a row when its id is spelled differently
# --------------------------------------------------------------------------------------------------------------------


def _num_key(value: Any) -> float | None:
    x = as_number(value)
    return None if x is None else round(x, 2)


def match_key(target: str, row: dict) -> tuple | None:
    """Target-specific identity of a row (None: not matchable by key; only its id can match)."""
    target = canonical_target(target)
    site = canonical_site(row.get("site"))
    op = canonical_operator(site, row.get("operator"))
    extra = row.get("extra") or {}
    strategy = str(row.get("strategy") or "").lower() or None
    if target == "table3":
        if site is None and op is None:
            return ("baseline",)
        if op == "teacher_stage2":
            return (op,)
        return (site, op, ratio_of(row))
    if target == "table1":
        if site is None and op is None:
            return ("baseline",)
        obj = extra.get("objective")
        return (site, str(obj).lower()) if obj is not None else None
    if target == "table2":
        if site is None and op is None:
            return ("baseline",)
        if op == "random_init":
            return (site, op)
        s2 = _num_key(extra.get("stage2_data"))
        return (site, op, _num_key(extra.get("stage1_data")), None if s2 == 0 else s2)
    if target == "table5":
        return ("baseline",) if op is None else (site, op)
    if target == "table6":
        return ("baseline",) if op is None else (op,)
    if target == "fig2":
        return ("locality",) if isinstance(extra.get("locality"), dict) else None
    if target == "fig4a":
        return (op, _num_key(extra.get("stage2_data")))
    if target == "fig4b":
        return (op, {"interleaved": "interleaved50"}.get(strategy, strategy))
    return None
