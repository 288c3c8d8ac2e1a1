"""Run and row states from the run folders plus the scheduler, and the ``--status`` report.

Decision order for one run (design-lessons.md §5):

1. ``DONE`` exists → **done** (a metrics.json that does not parse → **failed** "corrupt", and the run is re-run);
2. status.json says failed → **failed** (with its error line, else the last error line of the log tail);
3. a recorded job that the scheduler knows as pending / running → **pending** / **running**; for local jobs the
   recorded process must still be alive on this host;
4. a recorded job that ended (or that Slurm no longer knows: jobs older than ``MinJobAge`` vanish from
   ``scontrol``/``squeue`` and without accounting ``sacct`` knows nothing) and no ``DONE`` → **failed** ("ended
   without DONE");
5. no status → **missing**.

Slurm is asked once per report for every recorded job id (``squeue``, then ``sacct`` for the ones it does not know).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Iterable

from benchmark.dag import Node, RowPlan
from benchmark.store import CorruptRecord, Store, last_error_line, tail

SLURM_ALIVE = {"PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending",
               "REQUEUE_FED": "pending", "SUSPENDED": "pending", "RESV_DEL_HOLD": "pending",
               "RUNNING": "running", "COMPLETING": "running", "RESIZING": "running", "STAGE_OUT": "running",
               "SIGNALING": "running"}


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


# ------------------------------------------------------------------------------------------------------ Slurm
def _expand(job_field: str) -> list[str]:
    """``123``, ``123_4``, ``123_[4-6,9%2]`` → the ids they name (array ranges expanded)."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_field)
    if not m:
        return [job_field]
    base, spec = m.group(1), m.group(2).split("%")[0]
    out = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += [f"{base}_{i}" for i in range(int(lo), int(hi) + 1)]
        elif part:
            out.append(f"{base}_{part}")
    return out


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Slurm state (e.g. ``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED``) per known job id.

    Array task ids (``N_i``) are answered from their array. Ids neither ``squeue`` nor ``sacct`` knows are absent.
    """
    ids = sorted({str(j) for j in job_ids if j})
    if not ids or shutil.which("squeue") is None:
        return {}
    masters = sorted({j.split("_")[0] for j in ids})
    found: dict[str, str] = {}

    def parse(text: str):
        for line in text.splitlines():
            parts = line.strip().split("|")
            if len(parts) < 2 or not parts[0] or parts[0] == "JobID":
                continue
            state = parts[1].split()[0] if parts[1] else "UNKNOWN"
            for jid in _expand(parts[0]):
                found.setdefault(jid, state)

    proc = _run(["squeue", "--noheader", "--states=all", "--format=%i|%T", f"--jobs={','.join(masters)}"])
    if proc is not None and proc.returncode == 0:
        parse(proc.stdout)
    else:  # one unknown id makes squeue fail: ask one by one
        for m in masters:
            proc = _run(["squeue", "--noheader", "--states=all", "--format=%i|%T", f"--jobs={m}"])
            if proc is not None and proc.returncode == 0:
                parse(proc.stdout)
    rest = [j for j in ids if j not in found and j.split("_")[0] not in found]
    if rest and shutil.which("sacct"):
        cmd = ["sacct", "-o", "JobID,State", "--parsable2", "--noheader"]
        for j in sorted({r.split("_")[0] for r in rest}):
            cmd += ["-j", j]
        proc = _run(cmd)
        if proc is not None and proc.returncode == 0:
            parse(proc.stdout)
    out = {}
    for j in ids:
        if j in found:
            out[j] = found[j]
        elif "_" not in j and any(k.startswith(j + "_") for k in found):  # a whole array: its "worst" task
            states = [v for k, v in found.items() if k.startswith(j + "_")]
            out[j] = next((s for s in states if s in SLURM_ALIVE), states[0])
    return out


def slurm_responds(timeout: float = 10) -> bool:
    """``sbatch`` is on PATH and the controller answers ``squeue``."""
    if shutil.which("sbatch") is None:
        return False
    proc = _run(["squeue", "--noheader", "--format=%i"], timeout=timeout)
    return proc is not None and proc.returncode == 0


# ------------------------------------------------------------------------------------------------------ runs
def _pid_alive(pid) -> bool:
    from benchmark.jobs import _pid_alive as alive

    try:
        return alive(int(pid))
    except (TypeError, ValueError):
        return False


def node_states(store: Store, nodes: Iterable[Node], *, ask_slurm: bool = True) -> dict[str, NodeState]:
    nodes = list({n.key: n for n in nodes}.values())
    statuses = {}
    for n in nodes:
        run = store.run(n.kind, n.run_id)
        statuses[n.key] = None if run.done.exists() else store.read_status(run)
    slurm_ids = [s.get("job_id") for s in statuses.values()
                 if s and s.get("cluster") == "slurm" and s.get("state") in ("pending", "running")]
    slurm_known = slurm_states(slurm_ids) if (ask_slurm and slurm_ids) else {}
    slurm_reachable = bool(slurm_known) or not slurm_ids or (ask_slurm and slurm_responds())
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
        if host in (None, socket.gethostname()) and _pid_alive(pid):
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
