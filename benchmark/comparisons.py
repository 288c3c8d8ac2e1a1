"""The paired FID comparisons each paper item asks for, for the ``comparisons`` section of a target's summary.

Which pairs: a registry ``PAIRS`` (target → function of the summary rows → ``(a, b, kind)``), following what each
paper item claims — Table 1: each objective vs the best of its site; Tables 3/4: each row vs the "teacher + the same
stage 2" control (the control vs the baseline), vs its grid neighbours (the next ratio of the same operator, the next
operator of the site at the same ratio), MLP r=3 vs r=6 at each ratio and 100 % vs 50 % (the grafting-damage check of
``benchmarks/conclusions.py``); Fig. 4a: 10 % vs 20 % stage-2 data per
operator; Fig. 4b: each layer-selection strategy vs interleaved.

How: each eval run keeps its per-draw FIDs (``graft_core.metrics.paired.BOOTSTRAP_FILE``) over index draws shared by
every evaluation of the same size and its ``pairing`` record; a comparison checks the two records
(``check_paired``: one line naming what differs when they are not paired) and subtracts the vectors
(``paired_difference``). Nothing is resampled or re-extracted here, so building a summary stays cheap. An eval run
from before paired comparisons (no record, no vector) still reads as done; its comparisons carry an ``error`` line
saying to rerun it.

The interval covers the sampling noise of the generated set only (the trained weights and the reference set are held
fixed): it says nothing about how the rows would move with another training seed.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from benchmark.dag import RowPlan
from benchmark.store import CorruptRecord, Store

INTERVAL_NOTE = ("95 % paired bootstrap interval of the FID difference a - b: the generated samples' indices "
                 "resampled once per draw and both FIDs recomputed on the same indices, the reference set fixed. "
                 "It covers sampling noise only, not training-seed variance.")

Pair = tuple[str, str, str]  # (row a, row b, kind)


def _done_fid(rows: Iterable[dict]) -> dict[str, float]:
    return {r["row"]: r["metrics"]["fid"] for r in rows
            if r["status"] == "done" and isinstance((r.get("metrics") or {}).get("fid"), (int, float))}


def table1_pairs(rows: list[dict]) -> list[Pair]:
    """Each stage-1 objective vs the best (lowest FID) objective of its site."""
    fid = _done_fid(rows)
    out: list[Pair] = []
    for site in dict.fromkeys(r["site"] for r in rows if r["extra"].get("objective")):
        ids = [r["row"] for r in rows if r["site"] == site and r["extra"].get("objective") and r["row"] in fid]
        if len(ids) < 2:
            continue
        best = min(ids, key=fid.get)
        out += [(rid, best, f"{site}: objective vs the best of the site") for rid in ids if rid != best]
    return out


CONTROL, BASELINE = "control-teacher-stage2", "baseline"


def grid_pairs(rows: list[dict]) -> list[Pair]:
    """Table 3/4: vs the same-stage-2 control, vs the next ratio / next operator, r=3 vs r=6 (each pair once)."""
    ids = {r["row"] for r in rows}
    out: list[Pair] = []
    if CONTROL in ids and BASELINE in ids:
        out.append((CONTROL, BASELINE, "control vs baseline"))
    grid = [r for r in rows if r.get("ratio") is not None and r["row"] not in (CONTROL, BASELINE)]
    if CONTROL in ids:
        out += [(r["row"], CONTROL, "vs control (teacher + the same stage 2)") for r in grid]
    cell = {(r["site"], r["operator"], r["ratio"]): r["row"] for r in grid}
    for site in dict.fromkeys(r["site"] for r in grid):
        operators = list(dict.fromkeys(r["operator"] for r in grid if r["site"] == site
                                       and r["operator"] not in ("random_init", "self_graft")))
        ratios = sorted({r["ratio"] for r in grid if r["site"] == site and r["operator"] in operators})
        for op in operators:
            for lo, hi in zip(ratios, ratios[1:]):
                if (site, op, lo) in cell and (site, op, hi) in cell:
                    out.append((cell[site, op, hi], cell[site, op, lo], "grid neighbours: next ratio"))
            if len(ratios) > 2 and (site, op, ratios[0]) in cell and (site, op, ratios[-1]) in cell:
                out.append((cell[site, op, ratios[-1]], cell[site, op, ratios[0]],  # the damage check's pair
                            f"{ratios[-1]} % vs {ratios[0]} %"))
        for ratio in ratios:
            for a, b in zip(operators, operators[1:]):
                if (site, a, ratio) in cell and (site, b, ratio) in cell:
                    kind = "r=3 vs r=6" if {a, b} == {"mlp_r3", "mlp_r6"} else "grid neighbours: next operator"
                    out.append((cell[site, a, ratio], cell[site, b, ratio], kind))
    return out


def fig4a_pairs(rows: list[dict]) -> list[Pair]:
    """Per operator: 10 % vs 20 % stage-2 data."""
    by = {(r["operator"], r["extra"].get("stage2_data")): r["row"] for r in rows}
    return [(by[op, 10.0], by[op, 20.0], "10 % vs 20 % data") for op in dict.fromkeys(r["operator"] for r in rows)
            if (op, 10.0) in by and (op, 20.0) in by]


def fig4b_pairs(rows: list[dict]) -> list[Pair]:
    """Each layer-selection strategy vs interleaved."""
    ref = next((r["row"] for r in rows if r.get("strategy") == "interleaved50"), None)
    return [] if ref is None else [(r["row"], ref, "strategy vs interleaved") for r in rows if r["row"] != ref]


PAIRS: dict[str, Callable[[list[dict]], list[Pair]]] = {
    "table1": table1_pairs, "table3": grid_pairs, "table4": grid_pairs, "fig4a": fig4a_pairs, "fig4b": fig4b_pairs,
}


class _Evals:
    """Per-row eval record + per-draw FIDs, read once per summary build."""

    def __init__(self, store: Store, plans: dict[str, RowPlan]):
        self.store, self.plans, self.cache = store, plans, {}

    def get(self, row_id: str) -> tuple[dict, np.ndarray | None]:
        if row_id not in self.cache:
            self.cache[row_id] = self._read(row_id)
        return self.cache[row_id]

    def _read(self, row_id: str) -> tuple[dict, np.ndarray | None]:
        from graft_core.metrics.paired import BOOTSTRAP_FILE

        node = self.plans[row_id].final
        if node is None or node.kind != "eval":
            return {}, None
        run = self.store.run(node.kind, node.run_id)
        try:
            record = self.store.read_metrics(run) or {}
        except CorruptRecord:
            return {}, None
        path = run.out / BOOTSTRAP_FILE
        return record, (np.load(path) if path.exists() else None)


def compare(evals: _Evals, rows: dict[str, dict], a: str, b: str, kind: str) -> dict:
    from graft_core.metrics.paired import NotPairedError, check_paired, paired_difference

    entry: dict = {"a": a, "b": b, "kind": kind, "metric": "fid"}
    (ra, va), (rb, vb) = evals.get(a), evals.get(b)
    try:
        check_paired(ra.get("pairing") or {}, rb.get("pairing") or {}, (a, b))
        if va is None or vb is None:
            raise NotPairedError(f"{a if va is None else b}: per-draw FIDs missing from its eval run's out/; rerun "
                                 f"its eval step to compare it")
        entry.update(paired_difference(ra["metrics"]["fid"], va, rb["metrics"]["fid"], vb))
    except NotPairedError as err:
        entry["error"] = str(err)
    spreads = [((rows[r].get("extra") or {}).get("other_metrics") or {}).get("fid_std") for r in (a, b)]
    entry["unpaired_std"] = spreads
    return entry


def comparisons(store: Store, target: str, row_plans: list[RowPlan], rows: list[dict]) -> dict | None:
    """The summary's ``comparisons`` section (None for a target without paired comparisons). Pairs of rows not
    both done are left out (the summary is rewritten when they finish)."""
    pairs_of = PAIRS.get(target)
    if pairs_of is None:
        return None
    done = {r["row"]: r for r in rows if r["status"] == "done"}
    evals = _Evals(store, {rp.row.id: rp for rp in row_plans})
    entries = [compare(evals, done, a, b, kind) for a, b, kind in pairs_of(list(done.values()))]
    return {"metric": "fid", "interval": INTERVAL_NOTE, "pairs": entries}
