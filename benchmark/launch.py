"""Plan → units: what a launch consists of (the executors that run the units are in ``benchmark/executors.py``).

* A launch = the planned runs − DONE − alive (pending/running per the scheduler). Failed runs (and runs whose record
  is corrupt: their DONE and record are renamed aside first, nothing deleted) are launched again; runs shared by
  several rows or targets are launched once.
* Units (= jobs): on Slurm one per step run, except the stage-1 layers of a row, which form one job array; each waits
  on its inputs (``afterok``). Locally one ``prep`` job for the shared teacher and captures, then one job per row
  (the row's stage-1 layers in one process: one process start per row, not per layer).
* An input that an earlier, still live launch is producing is not launched again: on Slurm the unit waits on that
  job (``Unit.wait_jobs`` → ``afterok``); locally the run waits for it inside its job, and fails only if nobody
  produces it any more (``benchmark.jobs.wait_for_inputs``).
* Rows whose layers come from a locality result (Fig. 4b top/low-local) or a layer search (the ``search`` target) wait
  for it: locally the plan is simply
  redone once it exists; on Slurm a small ``replan`` job (``afterok`` on the locality job) submits the rest, and a
  final ``collect`` job (``afterany``) writes the summaries and builds the tables.
* A command plans its targets once (``plan_targets``) and passes the plans down; only rows that waited for a
  locality result are expanded again once it exists (``refresh_blocked``).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from types import ModuleType

from benchmark import targets
from benchmark.dag import Node, Planner, RowPlan, topological
from benchmark.rows import LocalityConfig
from benchmark.status import NodeState, node_states
from benchmark.store import CorruptRecord, Store
from benchmark.summary import build_tables, mark_tables_built, tables_up_to_date, write_summary

# synthetic: Table 5's teacher samples, which its captures read; encode: the T5 states its teacher reads
PREP_KINDS = ("encode", "teacher", "synthetic", "capture")
# On Slurm, a row's runs of these kinds form one job array (independent GPU jobs: stage-1 layers, sampling tasks,
# Table 5's synthetic-pair and T5-encoding tasks) ...
ARRAY_KINDS = ("stage1", "sample", "synthetic", "encode")
# ... and its captures one job that runs them in turn: each (layer, site) capture is one teacher pass plus its writes,
# so loading the teacher once beats a job per pair (and keeps a CI rehearsal of 56 pairs in one job).
SEQUENTIAL_KINDS = ("capture",)


# --------------------------------------------------------------------------------------------------------- planning
@dataclass
class TargetPlan:
    name: str
    module: ModuleType
    row_plans: list[RowPlan]


def locality_reader(store: Store):
    def read(node: Node, cfg: LocalityConfig):
        run = store.run(node.kind, node.run_id)
        if not run.done.exists():
            return None
        try:
            record = store.read_metrics(run) or {}
            loc = record["locality"]
            return [layer[loc["k"].index(cfg.select_k)] for layer in loc["layers"]]
        except (CorruptRecord, KeyError, ValueError, TypeError, IndexError):
            return None

    return read


def search_reader(store: Store):
    """A DONE search run's chosen ``[layer, operator, options]`` triples (None while it is not done or unreadable)."""
    def read(node: Node):
        run = store.run(node.kind, node.run_id)
        if not run.done.exists():
            return None
        try:
            chosen = (store.read_metrics(run) or {})["assignment"]
            return [[int(layer), str(op), dict(opts)] for layer, op, opts in chosen] or None
        except (CorruptRecord, KeyError, ValueError, TypeError):
            return None

    return read


def make_planner(store: Store) -> Planner:
    """The planner of a command: rows that wait for a locality or search result are resolved from the store."""
    return Planner(locality_reader(store), search_reader(store))


def plan_targets(store: Store, modules: list[ModuleType]) -> list[TargetPlan]:
    planner = make_planner(store)
    return [TargetPlan(m.NAME, m, [planner.expand(m.NAME, row) for row in m.rows(store.preset)]) for m in modules]


def refresh_blocked(store: Store, plans: list[TargetPlan]) -> list[TargetPlan]:
    """The plans with every row that waited for a locality result expanded again (the others kept as they are)."""
    if not any(rp.blocked for tp in plans for rp in tp.row_plans):
        return plans
    planner = make_planner(store)
    return [TargetPlan(tp.name, tp.module, [planner.expand(tp.name, rp.row) if rp.blocked else rp
                                            for rp in tp.row_plans]) for tp in plans]


def all_nodes(plans: list[TargetPlan]) -> list[Node]:
    seen: dict[str, Node] = {}
    for tp in plans:
        for rp in tp.row_plans:
            for n in rp.nodes:
                seen.setdefault(n.key, n)
    return topological(seen.values())


# --------------------------------------------------------------------------------------------------------- units
@dataclass
class Unit:
    name: str
    kind: str  # resource kind (step kind, or "prep"/"row" locally)
    nodes: list[Node]
    array: bool = False
    deps: set[int] = field(default_factory=set)  # indices of units launched now that this one waits for
    wait_jobs: set[str] = field(default_factory=set)  # alive Slurm jobs (from earlier launches) it waits for
    index: int = 0
    job_ids: list[str] = field(default_factory=list)  # set on submission (one per job / array chunk)


def to_launch(states: dict[str, NodeState]) -> set[str]:
    return {k for k, s in states.items() if s.state in ("missing", "failed")}


def make_units(plans: list[TargetPlan], states: dict[str, NodeState], executor: str) -> list[Unit]:
    """Group the runs to launch into jobs; every run is in exactly one unit."""
    todo = to_launch(states)
    units: list[Unit] = []
    where: dict[str, int] = {}

    def new_unit(name, kind, nodes, array=False) -> Unit:
        u = Unit(name=name, kind=kind, nodes=list(nodes), array=array, index=len(units))
        units.append(u)
        for n in nodes:
            where[n.key] = u.index
        return u

    if executor != "slurm":
        prep = [n for n in all_nodes(plans) if n.kind in PREP_KINDS and n.key in todo]
        if prep:
            new_unit("prep: teacher and captures", "prep", prep)
    for tp in plans:
        for rp in tp.row_plans:
            fresh = [n for n in rp.nodes if n.key in todo and n.key not in where]
            if not fresh:
                continue
            label = f"{tp.name}/{rp.row.id}"
            if executor != "slurm":
                new_unit(label, "row", fresh)
                continue
            by_kind: dict[str, list[Node]] = {}
            for n in fresh:
                by_kind.setdefault(n.kind, []).append(n)
            for n in fresh:
                if n.key in where:
                    continue
                group = by_kind[n.kind]
                if n.kind in ARRAY_KINDS:
                    new_unit(f"{n.kind} ×{len(group)} {label}", n.kind, group, array=True)
                elif n.kind in SEQUENTIAL_KINDS:
                    new_unit(f"{n.kind} ×{len(group)} {label}", n.kind, group)
                else:
                    new_unit(f"{n.kind} {label}", n.kind, [n])
    for u in units:
        for n in u.nodes:
            for d in n.deps:
                if d in where and where[d] != u.index:
                    u.deps.add(where[d])
                elif d in states and states[d].alive and states[d].job_id:
                    u.wait_jobs.add(str(states[d].job_id))
    return units


# --------------------------------------------------------------------------------------------------------- jobs
def collect_job(results_dir: str, preset: str, target_names: list[str]) -> dict:
    """Slurm job run after all others: refresh the summaries and build the tables."""
    store = Store(results_dir, preset)
    plans = plan_targets(store, targets.expand(target_names))
    write_summaries(store, plans, log=print)
    return {"targets": [tp.name for tp in plans]}


# --------------------------------------------------------------------------------------------------------- top level
def write_summaries(store: Store, plans: list[TargetPlan], *, states: dict[str, NodeState] | None = None,
                    log=print, tables: bool = True) -> dict[str, dict]:
    nodes = all_nodes(plans)
    states = states if states is not None else node_states(store, nodes)
    out = {}
    for tp in plans:
        summary, _ = write_summary(store, tp.name, tp.row_plans, states, log=log)
        alias_of = getattr(tp.module, "ALIAS_OF", None)
        if alias_of:  # e.g. table4: the tables read the canonical target's summary (same rows, same runs)
            write_summary(store, alias_of, tp.row_plans, states, log=log)
        out[tp.name] = summary
        if tables and all(r["status"] == "done" for r in summary["rows"]) \
                and not tables_up_to_date(store, tp.name, summary):
            if build_tables(store.results_dir, store.preset, tp.name, log=log) is not None:
                mark_tables_built(store, tp.name, summary)
    return out


def select_rows(plans: list[TargetPlan], patterns: list[str] | None) -> list[TargetPlan]:
    """Keep the rows whose id matches one of the shell patterns (all rows when ``patterns`` is empty)."""
    if not patterns:
        return plans
    keep = lambda rid: any(fnmatch.fnmatchcase(rid, p) for p in patterns)  # noqa: E731
    return [TargetPlan(tp.name, tp.module, [rp for rp in tp.row_plans if keep(rp.row.id)]) for tp in plans]
