"""The result store: one folder per run, named by the hash of the run's config, with a DONE marker written last.

Layout (``root`` = ``results/<preset>``)::

    runs/<kind>/<run_id>/
        config.json        the full step config + run id + step version (written when the run is first planned)
        status.json        state, attempts, job ids (cluster, job id, submit time), host, pid, timestamps, error tail
        environment.json   git rev, package versions, device, threads (written by the job)
        logs/step.log      everything the step printed (all attempts, appended)
        out/               the step's artefacts (checkpoints, operator weights, captures)
        metrics.json       the step's result record
        DONE               last action of a successful run
    <target>/summary.json  one row per paper row (see ``benchmark.summary``)
    submitit/              submitit's pickles and Slurm logs

Every whole-file write goes through the one atomic writer, ``graft_core.paths.atomic_write_bytes`` (temp file, fsync,
``os.replace``, mode 0644 under the usual umask), re-exported here; readers treat a run as a
result only when DONE exists *and* its metrics.json parses. Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft_core.paths import atomic_write_bytes, atomic_write_json  # noqa: F401  (re-exported for the driver)

class CorruptRecord(ValueError):
    """A JSON record in a run folder that does not parse (reported, the run is re-run)."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing file is ``None``, an unreadable one raises ``CorruptRecord``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptRecord(f"{path}: not valid JSON ({err})") from None


@dataclass(frozen=True)
class RunPaths:
    """Every file name of one run folder, in one place."""

    folder: Path

    @property
    def kind(self) -> str:
        return self.folder.parent.name

    @property
    def run_id(self) -> str:
        return self.folder.name

    config = property(lambda self: self.folder / "config.json")
    status = property(lambda self: self.folder / "status.json")
    environment = property(lambda self: self.folder / "environment.json")
    metrics = property(lambda self: self.folder / "metrics.json")
    done = property(lambda self: self.folder / "DONE")
    logs = property(lambda self: self.folder / "logs")
    log = property(lambda self: self.folder / "logs" / "step.log")
    out = property(lambda self: self.folder / "out")
    lock = property(lambda self: self.folder / ".lock")


class Store:
    """``results/<preset>``: run folders, status records and target summaries."""

    def __init__(self, results_dir: Path | str, preset: str):
        self.results_dir = Path(results_dir)
        self.preset = preset
        self.root = self.results_dir / preset

    # ---------------------------------------------------------------------------------------------------- paths
    def run(self, kind: str, run_id: str) -> RunPaths:
        return RunPaths(self.root / "runs" / kind / run_id)

    def target_dir(self, target: str) -> Path:
        return self.root / target

    def summary_path(self, target: str) -> Path:
        return self.target_dir(target) / "summary.json"

    @property
    def submitit_dir(self) -> Path:
        return self.root / "submitit"

    # ---------------------------------------------------------------------------------------------------- config
    def ensure_config(self, kind: str, run_id: str, config: dict, deps: tuple[str, ...] = (),
                      desc: str = "") -> RunPaths:
        """Create the run folder and write config.json once (never rewritten: the id is the hash of ``config``).

        ``deps`` (input run keys) and ``desc`` are recorded beside the hashed config, not in it.
        """
        run = self.run(kind, run_id)
        try:
            existing = read_json(run.config)
        except CorruptRecord:
            existing = None
        if existing is None or existing.get("config") != config:
            atomic_write_json(run.config, {"run_id": run_id, "kind": kind, "config": config, "deps": list(deps),
                                           "desc": desc, "created": now()})
        return run

    def read_config(self, run: RunPaths) -> dict:
        record = read_json(run.config)
        if record is None:
            raise FileNotFoundError(f"{run.config} is missing")
        return record["config"]

    # ---------------------------------------------------------------------------------------------------- status
    def read_status(self, run: RunPaths) -> dict:
        """status.json as a dict ({} when absent; a corrupt one is reported as a failed state)."""
        try:
            return read_json(run.status) or {}
        except CorruptRecord as err:
            return {"state": "failed", "error": str(err), "corrupt": True}

    def update_status(self, run: RunPaths, **changes) -> dict:
        status = self.read_status(run)
        status.pop("corrupt", None)
        status.update(changes)
        status["updated"] = now()
        atomic_write_json(run.status, status)
        return status

    def record_submission(self, run: RunPaths, *, cluster: str, job_id: str, submitit_folder: str | None,
                          pid: int | None = None) -> None:
        status = self.read_status(run)
        jobs = list(status.get("jobs", []))
        jobs.append({"cluster": cluster, "job_id": str(job_id), "submitted": now(), "host": socket.gethostname()})
        self.update_status(run, state="pending", cluster=cluster, job_id=str(job_id), jobs=jobs[-20:],
                           submitit_folder=submitit_folder, submit_host=socket.gethostname(), pid=pid, error=None)

    # ---------------------------------------------------------------------------------------------------- results
    def is_done(self, run: RunPaths) -> bool:
        return run.done.exists()

    def read_metrics(self, run: RunPaths) -> dict | None:
        """metrics.json of a DONE run; ``CorruptRecord`` when it does not parse or is not an object."""
        record = read_json(run.metrics)
        if record is not None and not isinstance(record, dict):
            raise CorruptRecord(f"{run.metrics}: expected a JSON object")
        return record

    def finish(self, run: RunPaths, metrics: dict) -> None:
        """Write metrics.json, then status done, then DONE — the marker last."""
        atomic_write_json(run.metrics, metrics)
        self.update_status(run, state="done", ended=now(), error=None)
        atomic_write_bytes(run.done, (now() + "\n").encode())

    def invalidate(self, run: RunPaths, reason: str) -> None:
        """Take a finished run out of service without deleting anything: DONE and the bad record are renamed."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for path in (run.done, run.metrics):
            if path.exists():
                os.replace(path, path.with_name(f"{path.name}.invalid-{stamp}"))
        self.update_status(run, state="failed", error=f"invalidated: {reason}")


def tail(path: Path, lines: int = 20) -> list[str]:
    """Last ``lines`` lines of a text file ([] when absent)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return data.splitlines()[-lines:]


def last_error_line(lines: list[str]) -> str | None:
    """The most informative line of a log tail: the last exception line, else the last non-empty line."""
    for line in reversed(lines):
        s = line.strip()
        if s and ("Error" in s or "Exception" in s) and not s.startswith("File "):
            return s
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return None
