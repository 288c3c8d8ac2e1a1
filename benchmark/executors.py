"""Executors: a registry of launcher backends (``BACKENDS``) that run the units of a launch through submitit —
``debug`` (this process), ``local`` (subprocesses, up to ``--jobs`` at a time, progress lines streamed) and ``slurm``
(every unit submitted at once with ``afterok`` dependencies, stage-1 layers as job arrays chunked under
``MaxArraySize``, a ``replan`` job for rows waiting on a locality result and a final ``collect`` job). Job ids are
recorded in each run's status.json right away. ``launch`` is the loop every command goes through.

A launcher runs its jobs with a step runner: the real steps unless the caller passes ``execute`` (the tests pass
``benchmark.fakes.steps.FakeSteps``); it travels with each job (``RunUnit(execute)``), so subprocesses and Slurm jobs
run the same one, together with the profile's execution settings (``Launcher.job_settings``).
"""
from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import submitit
from submitit.core.utils import FailedJobError

from benchmark import liveness, targets
from benchmark.cost import node_cost
from benchmark.dag import Node
from benchmark.gpus import GpuPool, detected_gpus
from benchmark.jobs import PREFIX, RunUnit
from benchmark.launch import (TargetPlan, Unit, all_nodes, collect_job, make_units, plan_targets,
                              refresh_blocked, select_rows)
from benchmark.profiles import KINDS, Profile
from benchmark.status import NodeState, node_states, repair_records
from benchmark.store import Store, error_line

DEFAULT_MAX_ARRAY = 1001


class LaunchError(Exception):
    """A user-facing problem: one line, exit code 2, nothing launched."""


def resolve_executor(name: str, log=print) -> str:
    if name not in EXECUTORS:
        raise LaunchError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
    if name == "auto":
        if shutil.which("sbatch") is None:
            return "local"
        if liveness.slurm_responds():
            return "slurm"
        log("note: sbatch is on PATH but the Slurm controller does not answer; running locally "
            "(start it with `slurm/local-cluster.sh up`, or pass --executor local to silence this)")
        return "local"
    if name == "slurm" and shutil.which("sbatch") is None:
        raise LaunchError("--executor slurm needs Slurm's `sbatch` on PATH (none found); run on a Slurm login node, "
                          "start the local cluster with `slurm/local-cluster.sh up`, or use --executor local")
    if name == "slurm" and not liveness.slurm_responds():
        raise LaunchError("--executor slurm: sbatch is installed but the Slurm controller does not answer "
                          "(`squeue` fails); start it (`slurm/local-cluster.sh up`) or use --executor local")
    return name


def max_array_size() -> int:
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY
    for line in out.splitlines():
        if line.strip().startswith("MaxArraySize"):
            try:
                return int(line.split("=", 1)[1].strip())
            except ValueError:
                break
    return DEFAULT_MAX_ARRAY


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


def _record(store: Store, node: Node, cluster: str, job_id, pid=None) -> None:
    run = store.run(node.kind, node.run_id)
    if not job_id:  # before the submission: mark the run pending for this (live) launcher process
        store.update_status(run, state="pending", cluster=cluster, job_id=None, pid=pid,
                            submit_host=socket.gethostname(), error=None)
        return
    current = store.read_status(run)
    if current.get("job_id") == str(job_id) and current.get("state") in ("running", "failed", "done"):
        return  # the job already started (fast scheduler): do not overwrite its own record
    store.record_submission(run, cluster=cluster, job_id=str(job_id), submitit_folder=str(store.submitit_dir),
                            pid=pid)


@dataclass
class LaunchResult:
    executor: str
    units: list[Unit]
    jobs: list[str] = field(default_factory=list)  # one id per job or array
    tasks: list[str] = field(default_factory=list)  # every job / array-task id, in submission order
    failed_units: list[str] = field(default_factory=list)
    plans: list[TargetPlan] = field(default_factory=list)  # set by ``launch``: the plans as the launch left them

    @property
    def launched(self) -> int:
        return sum(len(u.nodes) for u in self.units)


def default_jobs() -> int:
    """Local jobs at a time when ``--jobs`` is not given: one per usable core, at most 2 (two 1-thread jobs beat one
    2-thread job on 2 cores: benchmarks/results/levers-threads.json; beyond 2 the rows of a chain wait for each
    other anyway)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


class Launcher(abc.ABC):
    """A backend: turns the units of a launch into jobs. ``prepare`` is shared; ``run`` is the backend's."""

    name = ""
    ask_slurm = False  # the states of recorded jobs need Slurm's answer
    passes = True  # repeat the launch while rows wait for a locality result (Slurm instead submits a replan job)
    inline = False  # the job runs in this process, at submission (its output is the user's terminal)

    def __init__(self, store: Store, *, profile: Profile | None = None, jobs: int | None = None, progress: bool = True,
                 log=print, target_names: list[str] | None = None, profile_overrides: list[str] | None = None,
                 execute: Callable | None = None, rows: list[str] | None = None, debug: bool = False):
        self.store = store
        self.profile = profile
        self.jobs = max(1, jobs) if jobs else default_jobs()
        self.progress = progress
        self.log = log
        self.target_names = target_names or []
        self.rows = rows or []  # --rows patterns: a replan job plans these rows only, as the launch did
        self.profile_overrides = profile_overrides or []
        self.execute = execute  # the jobs' step runner; None = the real steps
        self.debug = debug  # --debug: tracebacks where they happen (and submitit's post-mortem in the debug executor)
        self.run_settings: dict[str, dict] = {}  # per run (node key): settings the memory model chose (``prepare``)

    @property
    def executor(self) -> str:
        return self.name

    def job_settings(self) -> dict[str, dict]:
        """The profile's execution settings per step kind (e.g. stage 2's ``grad_accumulation``), for every job,
        and per run (node key ``kind/run_id``) those the memory model chose (``benchmark.resources.run_settings``:
        the accumulation that fits ``gpu_mem_gb``)."""
        if self.profile is None:
            return {}
        return {**self.profile.all_job_settings(), **self.run_settings}

    def job_gpus(self) -> dict[str, int]:
        """GPUs the profile asks for per step kind, for the job's check that it sees them (none in this process:
        the debug executor runs where it is)."""
        if self.profile is None or self.inline:
            return {}
        return {k: int(self.profile.resources(k).get("gpus_per_node") or 0) for k in KINDS}

    def unit_job(self) -> RunUnit:
        return RunUnit(self.execute, settings=self.job_settings(), in_terminal=self.inline and not self.debug,
                       gpus=self.job_gpus())

    def prepare(self, plans: list[TargetPlan], states: dict[str, NodeState]) -> list[Unit]:
        """Write config.json of every run to launch, take corrupt records out of service and rewrite the bad
        config/status records of finished runs (``repair_records``)."""
        repair_records(self.store, all_nodes(plans), states, self.log)
        if self.profile is not None:
            from benchmark.resources import run_settings

            self.run_settings = run_settings(all_nodes(plans), self.profile)
            for key, chosen in self.run_settings.items():
                self.log(f"{key}: {', '.join(f'{k}={v}' for k, v in chosen.items())} (chosen to fit gpu_mem_gb)")
        units = make_units(plans, states, self.name)
        for u in units:
            for n in u.nodes:
                run = self.store.run(n.kind, n.run_id)
                if states[n.key].corrupt and run.done.exists():
                    self.log(f"re-running {n.key}: {states[n.key].error}")
                    self.store.invalidate(run, states[n.key].error or "corrupt record")
                self.store.ensure_config(n.kind, n.run_id, n.config, n.deps, n.desc)
        return units

    @abc.abstractmethod
    def run(self, units: list[Unit], plans: list[TargetPlan]) -> LaunchResult:
        """Submit or run ``units`` (each backend's own way) and return what was launched."""


# ------------------------------------------------------------------------------------------------ this machine
class ProcessLauncher(Launcher):
    """Units in dependency order on this machine through a submitit executor of the backend's ``name``. On Ctrl-C
    the running jobs are stopped and every run this launch still held goes back to missing."""

    def parallel(self) -> int:
        return 1

    def executor_for(self) -> submitit.AutoExecutor:
        return submitit.AutoExecutor(folder=self.store.submitit_dir / "%j", cluster=self.name)

    def job_pid(self, job) -> int:
        return os.getpid()

    def run(self, units: list[Unit], plans: list[TargetPlan]) -> LaunchResult:
        result = LaunchResult(self.name, units)
        ex = self.executor_for()
        parallel = self.parallel()
        pending = list(units)
        running: dict[int, dict] = {}
        finished: set[int] = set()
        counter = 0
        self.eta = ETA(units, parallel)
        if len(units) > 1:
            self.log(f"estimated ~{_duration(self.eta.remaining())} for {len(units)} units (cost model, "
                     f"{parallel} at a time)")
        for u in units:  # queued by this launcher: --status shows them pending, a second launcher leaves them alone
            for n in u.nodes:
                _record(self.store, n, self.name, job_id="", pid=os.getpid())
        try:
            while pending or running:
                for u in list(pending):
                    if len(running) >= parallel:
                        break
                    if not u.deps <= finished or not self.can_start(u):
                        continue
                    counter += 1
                    running[u.index] = self.start(ex, u, counter, len(units), parallel)
                    pending.remove(u)  # after the start: a unit interrupted while starting is released with the rest
                    if self.inline:  # it runs in this process, right now
                        self._finish(running[u.index], result)
                        running.pop(u.index)
                        finished.add(u.index)
                for idx, r in list(running.items()):
                    r["seen"] = self._forward(r["job"].paths.stdout, r["seen"])
                    if r["job"].done():
                        r["seen"] = self._forward(r["job"].paths.stdout, r["seen"])
                        self._finish(running.pop(idx), result)
                        self.released(r["unit"])
                        finished.add(idx)
                if running:
                    time.sleep(0.5)
                elif pending and not any(u.deps <= finished for u in pending):
                    raise RuntimeError(f"unschedulable units: {[u.name for u in pending]}")  # a bug, not a user error
        except KeyboardInterrupt:
            for r in running.values():
                _cancel_local(r["job"])
            self._release_interrupted([*pending, *(r["unit"] for r in running.values())],
                                      {str(r["job"].job_id) for r in running.values()})
            raise
        return result

    def _release_interrupted(self, units: list[Unit], job_ids: set[str]) -> None:
        """After Ctrl-C, the runs of the interrupted and never-started units that this launcher or its jobs still
        hold go back to missing ("cancelled"), not "gone without DONE". A run that another launcher's job took, a
        failed one and a finished one keep their records."""
        mine = job_ids | {str(os.getpid())}
        for u in units:
            for n in u.nodes:
                run = self.store.run(n.kind, n.run_id)
                status = self.store.read_status(run)
                if run.done.exists() or status.get("state") not in ("pending", "running"):
                    continue
                if str(status.get("job_id")) in mine or str(status.get("pid")) in mine:
                    self.store.update_status(run, state="cancelled", pid=None)

    def can_start(self, u: Unit) -> bool:
        """The unit's resources are free now (see ``LocalLauncher``: its GPUs)."""
        return True

    def place(self, ex, u: Unit) -> str:
        """Give the executor the unit's resources before its submission; returns a note for the start line."""
        return ""

    def released(self, u: Unit) -> None:
        """The unit's job ended: its resources are free again."""

    def start(self, ex, u: Unit, i: int, total: int, parallel: int) -> dict:
        kinds = ", ".join(f"{k}×{c}" if c > 1 else k for k, c in _kind_counts(u.nodes).items())
        note = self.place(ex, u)
        self.log(f"[{i}/{total}] {u.name}: {kinds}{note}")
        env = {}
        if parallel > 1 and "OMP_NUM_THREADS" not in os.environ:  # share the cores between the jobs
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
        with _environ(env), self.submitting():
            job = ex.submit(self.unit_job(), str(self.store.results_dir), self.store.preset,
                            [n.key for n in u.nodes], not self.inline, self.progress)
        for n in u.nodes:
            _record(self.store, n, self.name, job_id=job.job_id, pid=self.job_pid(job))
        return {"unit": u, "job": job, "start": time.time(), "seen": 0, "label": f"[{i}/{total}] {u.name}"}

    def submitting(self):
        """Context of a submission (see ``LocalLauncher``)."""
        return contextlib.nullcontext()

    def _finish(self, r: dict, result: LaunchResult) -> None:
        job, u = r["job"], r["unit"]
        result.jobs.append(str(job.job_id))
        result.tasks.append(str(job.job_id))
        try:
            outcome = job.result()
        except Exception as err:  # noqa: BLE001 — the job recorded which runs failed; keep going
            self.log(f"  job {job.job_id} failed: {failure_reason(err, job)}")
            outcome = {"failed": [n.key for n in u.nodes]}
        if isinstance(outcome, dict) and outcome.get("os_error"):  # in this process: a full disk, a read-only folder
            raise outcome["os_error"]
        failed = outcome.get("failed", []) if isinstance(outcome, dict) else []
        seconds = time.time() - r["start"]
        self.log(f"{r['label']}: {'ok' if not failed else f'{len(failed)} failed'} in {seconds:.0f} s")
        if failed:
            result.failed_units.append(u.name)
        eta = getattr(self, "eta", None)
        if eta is not None:
            line = eta.finished(u, seconds)
            if line:
                self.log(line)

    def _forward(self, path: Path, seen: int) -> int:
        """Print the job's progress lines ([graftbench] ...) that appeared since ``seen`` bytes."""
        try:
            with open(path, "rb") as f:
                f.seek(seen)
                data = f.read()
        except FileNotFoundError:
            return seen
        end = data.rfind(b"\n") + 1
        for line in data[:end].decode(errors="replace").splitlines():
            if line.startswith(PREFIX) and self.progress:
                self.log("  " + line[len(PREFIX) + 1:])
        return seen + end


def failure_reason(err: Exception, job) -> str:
    """One line for a failed local job: its error line, never a progress bar or submitit's banner; a job whose
    process died without an error (SIGKILL, the OOM killer) says so and names its log."""
    lines = [line for line in str(err).strip().splitlines()
             if line.strip(" -=") and "failed during processing" not in line]
    reason = error_line(lines)
    if reason is None:
        return f"its process ended without a result or an error (killed?); log: {job.paths.stderr}"
    return reason


class ETA:
    """Time left of a local launch, from the cost model (``benchmark.cost``, CPU minutes per run on 2 cores) scaled
    by how the finished units compared with it on this machine: a person can plan by the line printed after each
    unit."""

    def __init__(self, units: list[Unit], parallel: int):
        self.parallel = max(1, parallel)
        self.estimate = {u.index: sum(node_cost(n, gpu=False)[0] * 60 for n in u.nodes) for u in units}
        self.left = set(self.estimate)
        self.estimated_done = self.measured_done = 0.0

    def finished(self, u: Unit, seconds: float) -> str | None:
        self.left.discard(u.index)
        self.estimated_done += self.estimate[u.index]
        self.measured_done += seconds
        if not self.left:
            return None
        return (f"  ETA ~{_duration(self.remaining())} for the {len(self.left)} unit"
                f"{'s' if len(self.left) != 1 else ''} left (cost model × {self.ratio():.2f}, the ratio measured so "
                f"far)")

    def ratio(self) -> float:
        return self.measured_done / self.estimated_done if self.estimated_done > 0 else 1.0

    def remaining(self) -> float:
        """Seconds of the units left, at the measured ratio, ``parallel`` at a time."""
        return sum(self.estimate[i] for i in self.left) * self.ratio() / self.parallel


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class DebugLauncher(ProcessLauncher):
    """``debug``: every unit in this process, one after the other (a failed run does not raise)."""

    name = "debug"
    inline = True


class LocalLauncher(ProcessLauncher):
    """``local``: one subprocess per unit, up to ``jobs`` at a time. A unit gets the GPUs its profile asks for (the
    most any of its step kinds asks for) as ``CUDA_VISIBLE_DEVICES`` through submitit's ``gpus_per_node`` /
    ``visible_gpus``, disjoint from those of the units running beside it (``benchmark.gpus.GpuPool``); a unit waits
    while its GPUs are taken. On a machine without GPUs the job is told none and stops with one line
    (``benchmark.gpus.no_gpu_line``). One task per job: a multi-GPU stage 2 runs as one process here."""

    name = "local"

    def parallel(self) -> int:
        return self.jobs

    def gpus_for(self, u: Unit) -> int:
        asked = self.job_gpus()
        return max((asked.get(n.kind, 0) for n in u.nodes), default=0)

    def run(self, units: list[Unit], plans: list[TargetPlan]) -> LaunchResult:
        self.pool = GpuPool(detected_gpus() if any(self.gpus_for(u) for u in units) else [])
        self.holding: dict[int, list[int]] = {}
        if self.pool.all:
            for u in units:
                if self.gpus_for(u) > len(self.pool.all):
                    kind = max((n.kind for n in u.nodes), key=lambda k: self.job_gpus().get(k, 0))
                    raise LaunchError(f"{u.name}: {kind} asks for {self.gpus_for(u)} GPUs (profile "
                                      f"{self.profile.name}) but this machine has {len(self.pool.all)}; pass "
                                      f"--slurm {kind}.gpus_per_node={len(self.pool.all)} or run it on Slurm")
        return super().run(units, plans)

    def can_start(self, u: Unit) -> bool:
        n = self.gpus_for(u)
        return n == 0 or not self.pool.all or len(self.pool.free) >= n

    def place(self, ex, u: Unit) -> str:
        gpus = self.pool.take(self.gpus_for(u)) if self.pool.all else []
        self.holding[u.index] = gpus
        ex.update_parameters(gpus_per_node=len(gpus), visible_gpus=tuple(gpus))  # "" = no GPU, as before
        return f" (GPU {','.join(map(str, gpus))})" if gpus else ""

    def released(self, u: Unit) -> None:
        self.pool.give(self.holding.pop(u.index, []))

    def executor_for(self) -> submitit.LocalExecutor:
        """submitit's ``LocalExecutor`` itself: ``AutoExecutor`` does not pass ``visible_gpus`` on."""
        ex = submitit.LocalExecutor(folder=self.store.submitit_dir / "%j")
        ex.update_parameters(timeout_min=24 * 60)
        return ex

    def job_pid(self, job) -> int:
        return int(job.job_id) if str(job.job_id).isdigit() else os.getpid()

    def submitting(self):
        """submitit's job controller inherits this process's stderr and prints a KeyboardInterrupt traceback there on
        Ctrl-C (or on a cancel): it gets ``submitit/local-controllers.err`` instead (its jobs log to their own
        files), so an interrupted launch ends in the launcher's one line."""
        return _stderr_to(self.store.submitit_dir / "local-controllers.err")


# ------------------------------------------------------------------------------------------------ Slurm
class SlurmLauncher(Launcher):
    """``slurm``: the whole DAG submitted at once (see the module docstring); returns without waiting."""

    name = "slurm"
    ask_slurm = True
    passes = False

    def run(self, units: list[Unit], plans: list[TargetPlan]) -> LaunchResult:
        waiting = sorted({rp.waiting_for.key for tp in plans for rp in tp.row_plans if rp.blocked})
        result = LaunchResult("slurm", units)
        try:
            return self._submit_all(units, result, waiting)
        except FailedJobError as err:
            msg = " ".join(str(err).split())[:300]
            done = f"; {len(result.jobs)} job(s) were submitted before it and keep running ({', '.join(result.jobs)})" \
                if result.jobs else ""
            raise LaunchError(f"sbatch refused a job: {msg}{done}; fix the cause and re-run to submit the rest") \
                from None

    def _submit_all(self, units: list[Unit], result: LaunchResult, replan_after: list[str]) -> LaunchResult:
        max_array = max_array_size()
        job_ids: dict[int, list[str]] = {}
        folder = self.store.submitit_dir / "%j"
        for u in units:
            deps = sorted({j for d in u.deps for j in job_ids.get(d, [])} | {j.split("_")[0] for j in u.wait_jobs})
            ex = self._executor(u.kind, folder, f"gb-{u.kind}", deps, "afterok")
            results_dir, preset = str(self.store.results_dir), self.store.preset
            if u.array:
                ids = []
                for part in chunks(u.nodes, max_array):
                    jobs = ex.map_array(self.unit_job(), [results_dir] * len(part), [preset] * len(part),
                                        [[n.key] for n in part])
                    for n, job in zip(part, jobs):
                        _record(self.store, n, "slurm", job.job_id)
                        result.tasks.append(str(job.job_id))
                    ids.append(str(jobs[0].job_id).split("_")[0])
                job_ids[u.index] = ids
                u.job_ids = list(ids)
            else:
                job = ex.submit(self.unit_job(), results_dir, preset, [n.key for n in u.nodes])
                for n in u.nodes:
                    _record(self.store, n, "slurm", job.job_id)
                job_ids[u.index] = [str(job.job_id)]
                u.job_ids = [str(job.job_id)]
                result.tasks.append(str(job.job_id))
            self.log(f"submitted {u.name}: job {', '.join(job_ids[u.index])}"
                     + (f" (after {', '.join(deps)})" if deps else ""))
            result.jobs += job_ids[u.index]
        if replan_after:  # rows waiting for locality runs: plan again once those jobs succeeded
            ids = sorted({str(self.store.read_status(self.store.run(*k.split("/"))).get("job_id") or "").split("_")[0]
                          for k in replan_after} - {""})
            if ids:
                ex = self._executor("collect", folder, "gb-replan", ids, "afterok")
                job = ex.submit(replan_job, str(self.store.results_dir), self.store.preset, self.target_names,
                                self.profile.name if self.profile else None, self.profile_overrides, self.execute,
                                self.rows)
                self.log(f"submitted replan for the rows waiting on a locality result: job {job.job_id} "
                         f"(after {', '.join(ids)})")
                result.jobs.append(str(job.job_id))
                result.tasks.append(str(job.job_id))
        if result.jobs:
            ex = self._executor("collect", folder, "gb-collect", sorted({j.split("_")[0] for j in result.jobs}),
                                "afterany")
            job = ex.submit(collect_job, str(self.store.results_dir), self.store.preset, self.target_names)
            self.log(f"submitted collect (summaries + tables when the jobs end): job {job.job_id}")
            result.tasks.append(str(job.job_id))
        return result

    def _executor(self, kind: str, folder: Path, name: str, deps: list[str], dep_type: str):
        init, params = self.profile.executor_parameters(kind)
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", **init)
        extra = dict(params.pop("slurm_additional_parameters", None) or {})
        if deps:
            extra["dependency"] = f"{dep_type}:" + ":".join(deps)
            extra["kill-on-invalid-dep"] = "yes"
        ex.update_parameters(name=name, slurm_additional_parameters=extra, **params)
        return ex


BACKENDS: dict[str, type[Launcher]] = {"debug": DebugLauncher, "local": LocalLauncher, "slurm": SlurmLauncher}
EXECUTORS = ("auto", *BACKENDS)


def make_launcher(executor: str, store: Store, **options) -> Launcher:
    """The backend registered under ``executor`` (a resolved name: not ``auto``)."""
    return BACKENDS[executor](store, **options)


# ------------------------------------------------------------------------------------------------ the loop
def launch(launcher: Launcher, plans: list[TargetPlan], *, max_passes: int = 4) -> LaunchResult:
    """Launch what is missing in ``plans``; on this machine repeat while rows that waited for a locality result
    become plannable (their rows expanded again, nothing else). ``result.plans`` are the plans as they ended."""
    store = launcher.store
    total = LaunchResult(launcher.name, [])
    for _ in range(max_passes):
        states = node_states(store, all_nodes(plans),
                             ask_slurm=launcher.ask_slurm or shutil.which("squeue") is not None)
        units = launcher.prepare(plans, states)
        if not units:
            break
        result = launcher.run(units, plans)
        total.units += result.units
        total.jobs += result.jobs
        total.tasks += result.tasks
        total.failed_units += result.failed_units
        if not launcher.passes or not any(rp.blocked for tp in plans for rp in tp.row_plans):
            break
        plans = refresh_blocked(store, plans)
    total.plans = plans
    return total


def replan_job(results_dir: str, preset: str, target_names: list[str], profile: str | None,
               overrides: list[str], execute: Callable | None = None, rows: list[str] | None = None) -> dict:
    """Slurm job run once a locality result exists: plan again and submit what is still missing among the rows the
    launch selected (``rows``: its --rows patterns; all rows when empty)."""
    store = Store(results_dir, preset)
    prof = Profile.load(profile, overrides) if profile else None
    launcher = SlurmLauncher(store, profile=prof, target_names=target_names, profile_overrides=overrides,
                             execute=execute, rows=rows)
    result = launch(launcher, select_rows(plan_targets(store, targets.expand(target_names)), rows))
    return {"jobs": result.jobs, "tasks": result.tasks}


def _cancel_local(job, grace: float = 3.0) -> None:
    """Stop a local job and its task processes (SIGINT first; SIGKILL what ignores it, e.g. when SIGINT was
    inherited as ignored from a background shell)."""
    proc = getattr(job, "_process", None)
    if proc is None:
        job.cancel(check=False)
        return
    children = []
    with contextlib.suppress(OSError):
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    job.cancel(check=False)
    deadline = time.time() + grace
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    for pid in children + ([proc.pid] if proc.poll() is None else []):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _stderr_to(path: Path):
    """File descriptor 2 of this process points at ``path`` (appended) inside: what starts a subprocess here hands it
    that stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _environ(changes: dict):
    old = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _kind_counts(nodes: list[Node]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in nodes:
        out[n.kind] = out.get(n.kind, 0) + 1
    return out
