"""Per-target ``results/<preset>/<target>/summary.json`` — the one file the tables read — and the table build hook.

Schema (exactly; the ``tables`` package relies on it)::

    {"target": str, "preset": str, "git_rev": str | null,   # benchmark.provenance.git_rev(): "<sha>[-dirty]"
     "rows": [{"row": id, "label": str, "group": "Baseline" | "MHA grafting" | "MLP grafting" | ...,
               "site": "attn" | "mlp" | null, "operator": str | null, "ratio": 50 | 75 | 100 | null,
               "strategy": str | null, "status": "done" | "running" | "pending" | "failed" | "missing",
               "metrics": {"is", "fid", "sfid", "precision", "recall", "kid", "class_acc"} or {},
               "efficiency": {"d_flops_op", "d_flops_ft", "d_param"} or {},
               "extra": {...}}]}

``extra`` always carries ``layers`` (0-based indices, or null) and, where one exists, ``error`` (the last error line of
a failed row); per target: table1 ``objective`` (+ ``stage1_val_mse``), table2 ``stage1_data``/``stage2_data`` (paper
percentages 0.63 / 5.0 / 10.0, null for "–"), table6's parallel row the latency record (``speedup``,
``speedup_eager``, ``latency``, ``params_m``, ``teacher_params_m``, ``params_delta_pct``, ``depth``, ``teacher_depth``),
table5's rows the eval record (``geneval_or_acc``: GenEval overall on paper, prompt accuracy on tiny; ``params_m``;
``prompt_acc_by_template`` or ``geneval_tasks``) and on the grafted row the latency record (``speedup``,
``speedup_long`` at ``long_tokens``, ``teacher_params_m``),
fig2 ``locality`` = ``{"k": [...], "layers": [[...]]}``, table1's activation_stats rows
``activation_stats`` = ``{"site", "outlier_sigma", "num_samples", "split", "layers": [{"layer", "variance", "std",
"max_abs", "p999_abs", "outlier_frac", "kurtosis", "input_variance", ...}]}``, fig4a
``stage2_data``, fig4b ``strategy``. Row order is the target's order.

table1, table3/table4, fig4a and fig4b summaries also carry ``"comparisons": {"metric": "fid", "interval": str,
"pairs": [{"a", "b", "kind", "metric", "diff", "mean", "std", "lo", "hi", "confidence", "excludes_zero",
"unpaired_std": [a, b]} or {"a", "b", "kind", "metric", "error", "unpaired_std"}]}`` — paired FID differences
``a − b`` with their bootstrap interval (``benchmark.comparisons``; sampling noise only, not training-seed variance).
"""
from __future__ import annotations

from pathlib import Path

from benchmark.dag import RowPlan
from benchmark.family import family_for_row
from benchmark.provenance import git_rev
from benchmark.status import NodeState, row_state
from benchmark.store import CorruptRecord, Store, atomic_write_bytes, atomic_write_json, read_json
from graft_core.config import stable_hash

SUMMARY_METRICS = ("is", "fid", "sfid", "precision", "recall", "kid", "class_acc")
EFFICIENCY_KEYS = ("d_flops_op", "d_flops_ft", "d_param")


def row_record(store: Store, rp: RowPlan, states: dict[str, NodeState]) -> dict:
    row = rp.row
    state, error = row_state(rp, states)
    metrics: dict = {}
    efficiency: dict = {}
    extra = dict(row.extra)
    extra["layers"] = list(rp.layers) if rp.layers is not None else None
    if state == "done":
        try:
            record = store.read_metrics(store.run(rp.final.kind, rp.final.run_id)) or {}
        except CorruptRecord as err:  # raced with a writer or corrupted after the state check
            record, state, error = {}, "failed", str(err)
        values = record.get("metrics")
        if isinstance(values, dict):
            metrics = {k: values.get(k) for k in SUMMARY_METRICS}
            others = {k: v for k, v in values.items() if k not in SUMMARY_METRICS}
            if others:
                extra["other_metrics"] = others
        eff = record.get("efficiency")
        if isinstance(eff, dict) and eff:
            efficiency = {k: eff.get(k) for k in EFFICIENCY_KEYS}
            for k in ("flops_source", "paper_d_flops_op", "paper_d_flops_ft"):
                if eff.get(k) is not None:
                    extra[k] = eff[k]
        val = stage1_val_mse(store, rp)
        if val is not None:
            extra["stage1_val_mse"] = val
        if "locality" in record:
            extra["locality"] = record["locality"]
            extra["select_k"] = record.get("select_k")
        if "activation_stats" in record:
            extra["activation_stats"] = record["activation_stats"]
        family = family_for_row(rp.row.kind)
        if family is not None:  # a family's own fields (PixArt-Σ: prompt following, parameters)
            extra.update(family.summary(record))
        for node in rp.extras:  # e.g. Table 6's latency run: speed-up, latencies, parameter counts
            try:
                extra.update(store.read_metrics(store.run(node.kind, node.run_id)) or {})
            except CorruptRecord as err:
                state, error = "failed", str(err)
    if error:
        extra["error"] = error
    if rp.blocked:
        extra["waiting_for"] = rp.waiting_for.key
    return {"row": row.id, "label": row.label, "group": row.group, "site": row.site, "operator": row.operator,
            "ratio": row.ratio, "strategy": row.strategy, "status": state, "metrics": metrics,
            "efficiency": efficiency, "extra": extra}


def stage1_val_mse(store: Store, rp: RowPlan) -> float | None:
    """Mean held-out MSE of the row's stage-1 operators (paper Sec. C.3 compares objectives by it)."""
    vals = []
    for n in rp.nodes:
        if n.kind not in ("stage1", "stage1_online"):  # an online run's val_mse: the mean over its layers
            continue
        try:
            record = store.read_metrics(store.run(n.kind, n.run_id)) or {}
        except CorruptRecord:
            return None
        if record.get("val_mse") is None:
            return None
        vals.append(float(record["val_mse"]))
    return sum(vals) / len(vals) if vals else None


def build_summary(store: Store, target: str, row_plans: list[RowPlan], states: dict[str, NodeState]) -> dict:
    from benchmark.comparisons import comparisons

    rows = [row_record(store, rp, states) for rp in row_plans]
    summary = {"target": target, "preset": store.preset, "git_rev": git_rev(), "rows": rows}
    paired = comparisons(store, target, row_plans, rows)
    if paired is not None:
        summary["comparisons"] = paired
    return summary


def write_summary(store: Store, target: str, row_plans: list[RowPlan], states: dict[str, NodeState],
                  log=print) -> tuple[dict, bool]:
    """Write the summary when its content changed; returns (summary, changed)."""
    summary = build_summary(store, target, row_plans, states)
    path = store.summary_path(target)
    try:
        old = read_json(path)
    except CorruptRecord as err:
        log(f"{err}; rewriting it")
        old = None
    changed = old != summary
    if changed:
        atomic_write_json(path, summary)
    if target == "baseline":
        write_baseline_files(store, row_plans, states)
    return summary, changed


def tables_up_to_date(store: Store, target: str, summary: dict) -> bool:
    marker = store.target_dir(target) / ".tables_built"
    return marker.exists() and marker.read_text().strip() == stable_hash(summary)


def mark_tables_built(store: Store, target: str, summary: dict) -> None:
    atomic_write_bytes(store.target_dir(target) / ".tables_built", (stable_hash(summary) + "\n").encode())


def write_baseline_files(store: Store, row_plans: list[RowPlan], states: dict[str, NodeState]) -> None:
    """``baseline/{metrics,metric_floor,noise_control}.json``: the records of the three baseline runs."""
    names = {"baseline": "metrics.json", "metric_floor": "metric_floor.json", "noise_control": "noise_control.json"}
    for rp in row_plans:
        name = names.get(rp.row.id)
        if name and rp.final is not None and states[rp.final.key].state == "done":
            try:
                record = store.read_metrics(store.run(rp.final.kind, rp.final.run_id))
            except CorruptRecord:
                continue
            atomic_write_json(store.target_dir("baseline") / name,
                              {"preset": store.preset, "run": rp.final.key, **(record or {})})


def build_tables(results_dir: Path, preset: str, target: str, log=print) -> list[Path] | None:
    """``tables.build.build_target`` for a target the tables package renders (only ImportError is tolerated); the
    headers name the code revision in the one format of ``benchmark.provenance`` (the tables do not import it)."""
    try:
        from tables.build import build_target
        from tables.registry import ALIASES, TARGETS
    except ImportError as err:
        log(f"tables not built for {target}: {err}")
        return None
    if target not in TARGETS and target not in ALIASES:
        return None  # e.g. "baseline": its JSON files are the product
    out = build_target(Path(results_dir), preset, target, git_rev=git_rev())
    if out:
        log(f"{target}: wrote {', '.join(str(p) for p in out)}")
    return out
