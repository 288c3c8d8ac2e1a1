"""What each grid row cost, read from the run store, and one operator's rows against another's (issue 18).

A row's cost is the summed step time (``metrics.json`` ``seconds_step``) of its eval run, the stage-2 run that eval
reads and the stage-1 runs that stage 2 reads: what a researcher waits for that row alone. A stage-1 run shared by
two rows (the same operator and layer) counts in both. Rows are keyed by the plan's site, operator and number of
replaced layers.

``compare`` sets an operator's rows (Mamba-2) against a baseline operator's rows (Hyena-X) with the same number of
layers, and gives a lower bound on the ratio ("floor") that no implementation of the operator can go under at the
same stage-1 epochs and the same time per FLOP as the baseline: the baseline's stage-1 time scaled by the analytic
operator FLOP ratio (``graft_core.grafting.accounting.operator_cost``; stage 1 trains the operator alone), its stage 2 and
eval unchanged (the operator's model has more FLOPs there too, so this part of the bound is loose).
"""
from __future__ import annotations

from pathlib import Path

from benchmark.store import RunPaths, Store

KINDS = ("stage1", "stage2", "eval")
FLOOR_NOTE = ("the baseline row with its stage-1 time scaled by the operator FLOP ratio (same epochs, same time per "
              "FLOP), its stage 2 and eval unchanged")


def step_seconds(store: Store, run: RunPaths) -> float | None:
    """The step time of a finished run (None while it is not done); a corrupt record raises, as in the driver."""
    if not store.is_done(run):
        return None
    return (store.read_metrics(run) or {}).get("seconds_step")


def row_costs(root: Path) -> list[dict]:
    """One entry per finished grafted row under ``root`` = ``results/<preset>``: site, operator, layers, stage-1 /
    stage-2 / eval seconds and their total. Rows whose chain is unfinished are left out; a record that does not
    parse raises the store's ``CorruptRecord`` (``python -m benchmark.run`` re-runs that run)."""
    store = Store.at(root)
    rows = []
    for run in store.runs("eval"):
        record = store.read_record(run)
        model = (record.get("config") or {}).get("model") or {}
        if model.get("source") != "stage2":
            continue
        stage2 = store.run("stage2", model["run"])
        s2 = store.read_record(stage2)
        plan = (s2.get("config") or {}).get("plan") or {}
        stage1 = [store.run(*dep.split("/", 1)) for dep in s2.get("deps", []) if dep.startswith("stage1/")]
        parts = {"eval": [step_seconds(store, run)], "stage2": [step_seconds(store, stage2)],
                 "stage1": [step_seconds(store, r) for r in stage1]}
        if not plan or any(v is None for values in parts.values() for v in values):
            continue
        cost = {kind: round(sum(parts[kind]), 2) for kind in KINDS}
        rows.append({"desc": record.get("desc"), "site": plan.get("site"), "operator": plan.get("operator"),
                     "options": plan.get("options") or {}, "layers": len(plan.get("layers") or []),
                     "stage1_runs": len(stage1),
                     **{f"{k}_s": v for k, v in cost.items()}, "total_s": round(sum(cost.values()), 2),
                     "teacher": (s2.get("config") or {}).get("teacher") or {}})
    return rows


def flop_ratio(operator: str, baseline: str, teacher: dict, options: dict | None = None,
               baseline_options: dict | None = None) -> float | None:
    """Analytic per-layer FLOPs (op + ft) of ``operator`` over ``baseline`` (each with its plan's options) at the
    teacher's width and token count; None when a formula or a teacher field is missing."""
    from graft_core.grafting.accounting import NoCostFormula, operator_cost

    try:
        dim = int(teacher["num_attention_heads"]) * int(teacher["attention_head_dim"])
        heads, tokens = int(teacher["num_attention_heads"]), (int(teacher["sample_size"]) // int(teacher["patch_size"])) ** 2
        new, old = (operator_cost(name, dim, num_heads=heads, seq_len=tokens, **dict(opts or {}))
                    for name, opts in ((operator, options), (baseline, baseline_options)))
    except (KeyError, TypeError, ValueError, NoCostFormula):
        return None
    return (new.flops_op + new.flops_ft) / (old.flops_op + old.flops_ft)


def compare(rows: list[dict], operator: str, baseline: str, *, target: float) -> dict | None:
    """``operator``'s rows over ``baseline``'s rows with the same site and layer count: measured ratio per row, the
    FLOP floor (module docstring) and whether every row meets ``target``; None when no pair exists."""
    base = {(r["site"], r["layers"]): r for r in rows if r["operator"] == baseline}
    pairs = []
    for r in sorted((r for r in rows if r["operator"] == operator), key=lambda r: r["layers"]):
        b = base.get((r["site"], r["layers"]))
        if b is None or not b["total_s"]:
            continue
        ops = flop_ratio(operator, baseline, r["teacher"], r.get("options"), b.get("options"))
        floor = ((b["stage1_s"] * ops + b["stage2_s"] + b["eval_s"]) / b["total_s"]) if ops else None
        pairs.append({"layers": r["layers"], "site": r["site"], **{f"{operator}_{k}": r[k] for k in
                                                                   (*(f"{x}_s" for x in KINDS), "total_s")},
                      **{f"{baseline}_{k}": b[k] for k in (*(f"{x}_s" for x in KINDS), "total_s")},
                      "ratio": r["total_s"] / b["total_s"],
                      "ratio_by_kind": {k: (r[f"{k}_s"] / b[f"{k}_s"]) if b[f"{k}_s"] else None for k in KINDS},
                      "operator_flop_ratio": ops, "floor_ratio": floor})
    if not pairs:
        return None
    return {"operator": operator, "baseline": baseline, "rows": pairs, "target": target,
            "met": all(p["ratio"] <= target for p in pairs),
            "floor_above_target": any(p["floor_ratio"] is not None and p["floor_ratio"] > target for p in pairs),
            "note": f"floor: {FLOOR_NOTE}"}


def table_rows(comparison: dict) -> list[list]:
    """Rows for ``benchmarks.common.format_table`` (and the README): one per layer count."""
    op, base = comparison["operator"], comparison["baseline"]
    out = []
    for p in comparison["rows"]:
        parts = " / ".join(f"{p[f'{op}_{k}_s']:.0f}" for k in KINDS)
        base_parts = " / ".join(f"{p[f'{base}_{k}_s']:.0f}" for k in KINDS)
        floor = f"{p['floor_ratio']:.2f}×" if p["floor_ratio"] is not None else "–"
        out.append([f"{p['layers']} layers", f"{p[f'{op}_total_s']:.0f} s ({parts})",
                    f"{p[f'{base}_total_s']:.0f} s ({base_parts})", f"{p['ratio']:.2f}×", floor])
    return out


TABLE_HEADERS = ("row", "operator: total (stage 1 / stage 2 / eval)", "baseline: total (stage 1 / stage 2 / eval)",
                 "ratio", "floor")
