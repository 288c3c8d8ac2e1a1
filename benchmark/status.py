"""Run and row states from the run folders plus the scheduler, and the ``--status`` report.

Decision order for one run :

1. ``DONE`` exists → **done** (a metrics.json that does not parse → **failed** "corrupt", and the run is re-run; a
   config.json or status.json that does not parse, or a config.json that is not the planned config, keeps the run
   done and is rewritten by the next launch: ``NodeState.repair``, ``repair_records``);
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
from benchmark.store import CorruptRecord, Store, error_line, last_error_line, tail


@dataclass
class NodeState:
    state: str  # done | running | pending | failed | missing
    error: str | None = None
    job_id: str | None = None
    cluster: str | None = None
    corrupt: bool = False
    repair: tuple[tuple[str, str], ...] = ()  # (record, why) of a done run's records to rewrite: "config", "status"

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
        repair = tuple((what, why) for what, why in (("config", store.config_problem(run, node.config)),
                                                     ("status", store.status_problem(run))) if why)
        return NodeState("done", repair=repair)
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
            err = log_error(store, run, status)
            return NodeState("failed", error=why + (f"; log: {err}" if err else ""), job_id=job, cluster=cluster)
        pid = status.get("pid") if state == "running" else (status.get("pid") or job)
        host = status.get("host") or status.get("submit_host")
        if host in (None, socket.gethostname()) and liveness.pid_alive(pid):
            return NodeState(state, job_id=job, cluster=cluster)
        err = log_error(store, run, status)
        return NodeState("failed", error=f"{cluster or 'local'} job {job} is gone without DONE"
                         + (f"; log: {err}" if err else ""), job_id=job, cluster=cluster)
    if state == "done":
        return NodeState("failed", error="status says done but the DONE marker is missing", job_id=job)
    return NodeState("missing")


def repair_records(store: Store, nodes: Iterable[Node], states: dict[str, NodeState], log=print) -> int:
    """Rewrite the bad config.json / status.json of finished runs (the bad file is set aside), before a launch runs
    anything that reads them: a dependent step reads its input's config (stage 2's plan), so a corrupt one used to
    fail that step on every re-run. The metrics and artefacts are valid, so nothing is re-run. Returns the count."""
    count = 0
    for n in {n.key: n for n in nodes}.values():
        state = states.get(n.key)
        for what, why in state.repair if state is not None else ():
            run = store.run(n.kind, n.run_id)
            log(f"rewriting {what}.json of {n.key} (kept done, nothing re-run): {why}")
            if what == "config":
                store.restore_config(run, n.config, n.deps, n.desc)
            else:
                store.restore_done_status(run, why)
            count += 1
    return count


def log_error(store: Store, run, status: dict) -> str | None:
    """The "log:" of a job that ended without DONE: what the scheduler said when it killed the job (Slurm's
    "CANCELLED ... DUE TO TIME LIMIT" or an OOM kill, in the job's stderr), else the last error line of the run's
    step log. Progress bars are never shown: a killed process leaves its bar as the last text, which is no reason.
    The job's stderr is read for the scheduler's lines only: a job runs several steps, and the others' errors are
    their own."""
    job = str(status.get("job_id") or "")
    if job:
        folder = status.get("submitit_folder") or store.submitit_dir
        lines = tail(os.path.join(folder, job, f"{job}_0_log.err"), 200)  # submitit's %j folder, task 0
        found = error_line([line for line in lines if any(m in line for m in _SCHEDULER_MARKS)])
        if found:
            return found[:300]
    found = error_line(tail(run.log, 200))
    return found[:300] if found else None


_SCHEDULER_MARKS = ("slurmstepd", "oom-kill", "oom_kill", "Killed", "DUE TO TIME LIMIT", "CANCELLED AT")


# ------------------------------------------------------------------------------------------------------ rows
def row_state(rp: RowPlan, states: dict[str, NodeState]) -> tuple[str, str | None]:
    """(state, error) of a row from its runs: done when its final record (and each of its extras) is done, else the
    worst of its runs."""
    if rp.final is not None and all(states[n.key].state == "done" for n in (rp.final, *rp.extras)):
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
