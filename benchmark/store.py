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

Every whole-file write goes through the one atomic writer, ``graft_core.runtime.paths.atomic_write_bytes`` (temp file, fsync,
``os.replace``, mode 0644 under the usual umask), re-exported here; readers treat a run as a
result only when DONE exists *and* its metrics.json parses. Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft_core.runtime.paths import atomic_write_bytes, atomic_write_json  # noqa: F401  (re-exported for the driver)

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

    @classmethod
    def at(cls, root: Path | str) -> "Store":
        """The store whose preset folder (``results/<preset>``) is ``root``."""
        root = Path(root)
        return cls(root.parent, root.name)

    # ---------------------------------------------------------------------------------------------------- paths
    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run(self, kind: str, run_id: str) -> RunPaths:
        return RunPaths(self.runs_dir / kind / run_id)

    def kinds(self) -> list[str]:
        """The step kinds that have run folders on disk, sorted."""
        return sorted(p.name for p in self.runs_dir.iterdir() if p.is_dir()) if self.runs_dir.is_dir() else []

    def runs(self, kind: str) -> list[RunPaths]:
        """Every run folder of ``kind`` on disk (planned by any version of the targets), sorted by run id."""
        folder = self.runs_dir / kind
        return [RunPaths(p) for p in sorted(folder.iterdir()) if p.is_dir()] if folder.is_dir() else []

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

    def config_problem(self, run: RunPaths, config: dict) -> str | None:
        """Why config.json of ``run`` is not the record of ``config`` (None when it is): a later step reads it (stage
        2's plan, the eval's inputs), so a finished run whose config does not parse would fail its dependents on
        every re-run."""
        try:
            record = read_json(run.config)
        except CorruptRecord as err:
            return str(err)
        if record is None:
            return f"{run.config} is missing"
        if not isinstance(record, dict) or record.get("config") != config:
            return f"{run.config}: not the record of this run's config"
        return None

    def restore_config(self, run: RunPaths, config: dict, deps: tuple[str, ...] = (), desc: str = "") -> None:
        """Set a bad config.json aside and write it again from the plan. Nothing is re-run: the run id is the hash
        of the config, so the planned config is exactly the one the finished run was made with."""
        self.set_aside(run.config)
        self.ensure_config(run.kind, run.run_id, config, deps, desc)

    def status_problem(self, run: RunPaths) -> str | None:
        """Why status.json of ``run`` cannot be read as a status record (None when it can, or when it is absent)."""
        try:
            record = read_json(run.status)
        except CorruptRecord as err:
            return str(err)
        return None if record is None or isinstance(record, dict) else f"{run.status}: expected a JSON object"

    def restore_done_status(self, run: RunPaths, reason: str) -> None:
        """A finished run's unreadable status.json: set aside, replaced by a plain "done" record (DONE decides)."""
        self.set_aside(run.status)
        atomic_write_json(run.status, {"state": "done", "error": None, "updated": now(),
                                       "note": f"rewritten: {reason}"})

    def set_aside(self, path: Path) -> Path | None:
        """Rename a bad record to ``<name>.invalid-<time>`` (kept for a post-mortem, never read again)."""
        if not path.exists():
            return None
        aside = path.with_name(f"{path.name}.invalid-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        return aside

    def read_config(self, run: RunPaths) -> dict:
        return self.read_record(run, missing_ok=False)["config"]

    def read_record(self, run: RunPaths, *, missing_ok: bool = True) -> dict:
        """config.json as written by :meth:`ensure_config` (``config``, ``deps``, ``desc``, ...); ``{}`` when absent
        (``FileNotFoundError`` unless ``missing_ok``), ``CorruptRecord`` when it does not parse."""
        record = read_json(run.config)
        if record is None and not missing_ok:
            raise FileNotFoundError(f"{run.config} is missing")
        if record is not None and not isinstance(record, dict):
            raise CorruptRecord(f"{run.config}: expected a JSON object")
        return record or {}

    def read_environment(self, run: RunPaths) -> dict:
        """environment.json written by the job (``{}`` before the job started); ``CorruptRecord`` when unreadable."""
        return read_json(run.environment) or {}

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
        for path in (run.done, run.metrics):
            self.set_aside(path)
        self.update_status(run, state="failed", error=f"invalidated: {reason}")


def tail(path: Path, lines: int = 20) -> list[str]:
    """Last ``lines`` lines of a text file ([] when absent), as a terminal shows them: a progress bar redraws its
    line with ``\r``, so only the text after a line's last ``\r`` is kept (not one "line" per redraw)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    shown = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in data.split("\n")]
    return shown[-lines:]


# tqdm's bar ("stage2:  40%|████      | 1000/2500 [00:10<00:15, 97.3it/s, loss=0.1]") and its form without a total
# ("capture: 12it [00:03, 3.9it/s]"): progress, never the reason a run failed
_PROGRESS_BAR = re.compile(r"^.*?(\d+%\|.*?\|\s*\S+/\S+\s*|\d+it\s*)\[[^\]]*\]")
_ERROR_MARKS = ("Error", "Exception", "error:", "Killed", "CANCELLED", "DUE TO TIME LIMIT", "oom-kill", "oom_kill",
                "Segmentation fault", "core dumped")


def _without_progress(line: str) -> str:
    """``line`` without a leading progress bar (text printed right after an unterminated bar stays)."""
    return _PROGRESS_BAR.sub("", line, count=1).strip()


def error_line(lines: list[str]) -> str | None:
    """The last line of a log tail that reports an error (exception, Slurm's "CANCELLED ... DUE TO TIME LIMIT", an
    OOM kill), progress bars removed; None when there is none (a killed process often prints nothing)."""
    for line in reversed(lines):
        s = _without_progress(line)
        if s and any(m in s for m in _ERROR_MARKS) and not s.startswith("File "):
            return s
    return None


def last_error_line(lines: list[str]) -> str | None:
    """The most informative line of a log tail: the last error line, else the last non-empty line that is not a
    progress bar."""
    found = error_line(lines)
    if found is not None:
        return found
    for line in reversed(lines):
        s = _without_progress(line)
        if s:
            return s
    return None
