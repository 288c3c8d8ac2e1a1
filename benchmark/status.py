"""Run and row states from the run folders plus the scheduler, and the ``--status`` report.

Decision order for one run (design-lessons.md §5):

1. ``DONE`` exists → **done** (a metrics.json that does not parse → **failed** "corrupt", and the run is re-run);
2. status.json says failed → **failed** (with its error line, else the last error line of the log tail);
3. a recorded job that the scheduler knows as pending / running → **pending** / **running**; for local jobs the
   recorded process must still be alive on this host;
4. a recorded job that ended (or that Slurm no longer knows: jobs older than ``MinJobAge`` vanish from
   ``scontrol``/``squeue`` and without accounting ``sacct`` knows nothing) and no ``DONE`` → **failed** ("ended
   without DONE");
5. no status, or status ``cancelled`` (queued by a local launcher that was interrupted before the run started) →
   **missing**.

Slurm is asked once per report for every recorded job id (``squeue``, then ``sacct`` for the ones it does not know;
``benchmark.liveness``).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Iterable

from benchmark import liveness
from benchmark.dag import Node, RowPlan
from benchmark.liveness import SLURM_ALIVE
from benchmark.store import CorruptRecord, Store, last_error_line, tail


@dataclass
class NodeState:
    state: str  # done | running | pending | failed | missing
    error: str | None = None
    job_id: str | None = None
    cluster: str | None = None
    corrupt: bool = False

    @property
    def alive(self) -> bool:
        return self.state in ("pending", "running")


# ------------------------------------------------------------------------------------------------------ runs
def node_states(store: Store, nodes: Iterable[Node], *, ask_slurm: bool = True) -> dict[str, NodeState]:
    nodes = list({n.key: n for n in nodes}.values())
    statuses = {}
    for n in nodes:
        run = store.run(n.kind, n.run_id)
        statuses[n.key] = None if run.done.exists() else store.read_status(run)
    slurm_ids = [s.get("job_id") for s in statuses.values()
                 if s and s.get("cluster") == "slurm" and s.get("state") in ("pending", "running")]
    slurm_known = liveness.slurm_states(slurm_ids) if (ask_slurm and slurm_ids) else {}
    slurm_reachable = bool(slurm_known) or not slurm_ids or (ask_slurm and liveness.slurm_responds())
    return {n.key: _state(store, n, statuses[n.key], slurm_known, slurm_reachable) for n in nodes}


def _state(store: Store, node: Node, status: dict | None, slurm: dict[str, str], reachable: bool) -> NodeState:
    run = store.run(node.kind, node.run_id)
    if status is None:  # DONE exists
        try:
            record = store.read_metrics(run)
            if record is None:
                raise CorruptRecord(f"{run.metrics} is missing")
        except CorruptRecord as err:
            return NodeState("failed", error=f"corrupt record: {err}", corrupt=True)
        weights = record.get("weights_dir") if node.kind == "teacher" else None
        if weights and not os.path.exists(weights):  # the trained teacher was deleted since: train it again
            return NodeState("failed", error=f"the teacher's weights are gone ({weights})", corrupt=True)
        return NodeState("done")
    if not status:
        return NodeState("missing")
    state, job, cluster = status.get("state"), status.get("job_id"), status.get("cluster")
    if state == "failed":
        error = status.get("error") or last_error_line(tail(run.log)) or "failed"
        return NodeState("failed", error=error, job_id=job, cluster=cluster, corrupt=bool(status.get("corrupt")))
    if state in ("pending", "running"):
        if cluster == "slurm":
            s = slurm.get(str(job))
            if s in SLURM_ALIVE:
                return NodeState(SLURM_ALIVE[s], job_id=job, cluster=cluster)
            if s is None and not reachable:  # cannot tell: trust the record, do not resubmit
                return NodeState(state, error="Slurm did not answer; state as recorded", job_id=job, cluster=cluster)
            why = f"Slurm job {job} ended ({s}) without DONE" if s else \
                f"Slurm job {job} is no longer known to Slurm and left no DONE"
            err = last_error_line(tail(run.log))
            return NodeState("failed", error=why + (f"; log: {err}" if err else ""), job_id=job, cluster=cluster)
        pid = status.get("pid") if state == "running" else (status.get("pid") or job)
        host = status.get("host") or status.get("submit_host")
        if host in (None, socket.gethostname()) and liveness.pid_alive(pid):
            return NodeState(state, job_id=job, cluster=cluster)
        err = last_error_line(tail(run.log))
        return NodeState("failed", error=f"{cluster or 'local'} job {job} is gone without DONE"
                         + (f"; log: {err}" if err else ""), job_id=job, cluster=cluster)
    if state == "done":
        return NodeState("failed", error="status says done but the DONE marker is missing", job_id=job)
    return NodeState("missing")


# ------------------------------------------------------------------------------------------------------ rows
def row_state(rp: RowPlan, states: dict[str, NodeState]) -> tuple[str, str | None]:
    """(state, error) of a row from its runs: done when its final record is done, else the worst of its runs."""
    if rp.final is not None and states[rp.final.key].state == "done":
        return "done", None
    own = [states[n.key] for n in rp.nodes]
    for wanted in ("failed", "running", "pending"):
        hit = next((s for s in own if s.state == wanted), None)
        if hit is not None:
            return wanted, hit.error
    return "missing", None


def counts_line(states: list[str], noun: str = "rows") -> str:
    parts = [f"{states.count(s)} {s}" for s in ("done", "running", "pending", "failed", "missing") if states.count(s)]
    return f"{len(states)} {noun}: " + (", ".join(parts) if parts else "nothing")
