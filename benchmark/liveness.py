"""Is a recorded job still alive? Local processes by pid, Slurm jobs through ``squeue`` then ``sacct``.

A leaf: the run states (``benchmark.status``), the run lock (``benchmark.jobs``) and the executor choice
(``benchmark.executors``) all ask the same questions, so the answers live here once.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Iterable

SLURM_ALIVE = {"PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending",
               "REQUEUE_FED": "pending", "SUSPENDED": "pending", "RESV_DEL_HOLD": "pending",
               "RUNNING": "running", "COMPLETING": "running", "RESIZING": "running", "STAGE_OUT": "running",
               "SIGNALING": "running"}


# ------------------------------------------------------------------------------------------------------ processes
def pid_alive(pid) -> bool:
    """A process with this pid exists on this host and is not a zombie (anything not an int: False)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        if stat.read_text().split(") ", 1)[1].startswith("Z"):  # a zombie is dead
            return False
    return True


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


# ------------------------------------------------------------------------------------------------------ lock holders
def holder_alive(record: dict) -> bool:
    """The process recorded in a lock file (``host``, ``pid``, ``job_id``, ``cluster``) still runs: by pid on this
    host, else by asking Slurm about its job (a holder on another host outside Slurm counts as dead)."""
    if not record:
        return False
    if record.get("host") == socket.gethostname():
        return pid_alive(record.get("pid"))
    job = record.get("job_id")
    if not job or record.get("cluster") != "slurm":
        return False
    return slurm_states([job]).get(job) in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED")


def status_alive(status: dict) -> bool:
    """The job or process that a run's status.json names as producing the run (state pending / running) still
    exists, decided as ``benchmark.status`` decides it: a Slurm job by Slurm's answer (trusted as recorded when Slurm
    does not answer), else the recorded process on this host (the job's, or the local launcher's that queued it)."""
    state = status.get("state")
    if state not in ("pending", "running"):
        return False
    if status.get("cluster") == "slurm":
        job = str(status.get("job_id") or "")
        known = slurm_states([job]).get(job) if job else None
        return known in SLURM_ALIVE if known is not None else bool(job) and not slurm_responds()
    pid = status.get("pid") if state == "running" else (status.get("pid") or status.get("job_id"))
    return (status.get("host") or status.get("submit_host")) in (None, socket.gethostname()) and pid_alive(pid)
