"""What runs inside a job: ``RunUnit`` executes a list of step runs, each guarded by a lock, logged, recorded.

Only run keys (``kind/run_id``) and the results folder cross the pickle boundary; the job reads config.json itself
and, on a requeue, starts again from what is on disk (DONE runs are skipped, stage 2 resumes from its newest
checkpoint), never from state stored in the pickle. ``RunUnit`` is a ``submitit.helpers.Checkpointable``: on
preemption or timeout submitit requeues the same call. What a run executes is the job's step runner:
``benchmark.steps.execute`` unless the launcher was given another (``RunUnit(execute=...)``, pickled with the job:
a module-level function or a picklable object, e.g. the tests' ``benchmark.fakes.steps.FakeSteps``). The job also
carries the profile's execution settings per step kind (``RunUnit(settings=Profile.all_job_settings())``, e.g.
``{"stage2": {"grad_accumulation": 4}}``), handed to each step as ``StepContext.settings``: they come from the
launch, not from config.json, because they change how a run executes, never its results or its id. It also carries
the GPUs the profile asks for per kind (``RunUnit(gpus=...)``): a real step whose profile asked for a GPU and that
sees none stops with one line (``benchmark.gpus.no_gpu_line``) instead of running on the CPU.

Multi-task jobs (paper-preset stage 2: one task per GPU) export ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/
``WORLD_SIZE``/``LOCAL_RANK`` from ``submitit.JobEnvironment()`` before ``graft_core.stages.finetune`` initialises
``torch.distributed``; only rank 0 writes records.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import socket
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable

import submitit

from benchmark import steps
from benchmark.gpus import no_gpu_line
from benchmark.hints import with_hint
from benchmark.liveness import holder_alive, status_alive
from benchmark.provenance import provenance
from benchmark.store import RunPaths, Store, atomic_write_json, now, read_json

PREFIX = "[graftbench]"


class StepsFailed(RuntimeError):
    pass


def say(msg: str) -> None:
    print(f"{PREFIX} {time.strftime('%H:%M:%S')} {msg}", flush=True)


# --------------------------------------------------------------------------------------------------------- environment
def job_environment() -> dict:
    """Job id and ranks from submitit (Slurm / local / debug) or this plain process."""
    try:
        env = submitit.JobEnvironment()
        return {"cluster": env.cluster, "job_id": str(env.job_id), "rank": env.global_rank,
                "local_rank": env.local_rank, "world_size": env.num_tasks, "hostnames": list(env.hostnames)}
    except RuntimeError:  # not inside a submitit job
        return {"cluster": "process", "job_id": str(os.getpid()), "rank": 0, "local_rank": 0, "world_size": 1,
                "hostnames": [socket.gethostname()]}


def setup_distributed(env: dict) -> None:
    """torch.distributed variables for a multi-task job (graft_core.runtime.distributed reads them); a one-task job
    overrides stale ones it inherited (e.g. a launcher run under torchrun), which would make it wait for peers."""
    if env["world_size"] <= 1:
        if "WORLD_SIZE" in os.environ:
            os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0")
        return
    digits = "".join(ch for ch in env["job_id"].split("_")[0] if ch.isdigit()) or "0"
    os.environ.update(MASTER_ADDR=env["hostnames"][0], MASTER_PORT=str(20000 + int(digits) % 20000),
                      RANK=str(env["rank"]), WORLD_SIZE=str(env["world_size"]), LOCAL_RANK=str(env["local_rank"]))


def environment_record(env: dict) -> dict:
    # not platform.platform(): it forks `uname -p`, which a mocked subprocess (submitit's test cluster) refuses
    record = {**provenance(), "python": platform.python_version(), "host": socket.gethostname(),
              "platform": f"{platform.system()}-{platform.release()}-{platform.machine()}", "job": env, "time": now(),
              "slurm": {k: v for k, v in os.environ.items() if k.startswith("SLURM_") and k in SLURM_VARS},
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}  # what the launcher gave the job
    if "torch" in sys.modules:  # only describe the device once a step has loaded torch
        import torch

        record["threads"] = torch.get_num_threads()
        record["device"] = {"cuda": torch.cuda.is_available(),
                            "name": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                            else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
                            "count": torch.cuda.device_count(),
                            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            # what the step used, not what it could see: 0 = it never put a tensor on the GPU
                            "cuda_peak_bytes": torch.cuda.max_memory_allocated()
                            if torch.cuda.is_available() and torch.cuda.is_initialized() else 0}
    return record


def _reset_cuda_peak() -> None:
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()


SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION", "SLURM_NODELIST",
              "SLURM_NTASKS", "SLURM_CPUS_PER_TASK", "SLURM_RESTART_COUNT", "SLURM_JOB_ACCOUNT", "SLURM_JOB_QOS")


# --------------------------------------------------------------------------------------------------------- logging
class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            try:
                st.write(s)
            except ValueError:  # a closed stream
                pass
        return len(s)

    def flush(self):
        for st in self.streams:
            with contextlib.suppress(ValueError):
                st.flush()

    def isatty(self):
        return False


@contextlib.contextmanager
def tee_output(path: Path):
    """Copy everything Python prints (stdout and stderr) into ``path`` (appended)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as log:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(old_out, log), _Tee(old_err, log)
        try:
            yield log
        finally:
            sys.stdout, sys.stderr = old_out, old_err


# --------------------------------------------------------------------------------------------------------- locks
LOCK_WRITE_GRACE = 30.0  # seconds an unreadable lock counts as being written (O_EXCL creates it empty first)
_HELD: set[str] = set()  # lock files this process holds now: two threads of one process are two holders


@contextlib.contextmanager
def run_lock(run: RunPaths, env: dict, poll: float = 2.0):
    """Exclusive lock on a run folder (O_EXCL file): waits while a live process holds it, breaks a stale one
    atomically (``_break_stale``) and takes over one that names the asking job itself (``_names_me``)."""
    run.folder.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": env["job_id"], "cluster": env["cluster"],
          "since": now(), "token": uuid.uuid4().hex}
    announced = False
    while not _create_lock(run.lock, me):
        raw, holder = _read_lock(run.lock)
        if raw is None:  # released meanwhile
            continue
        if holder is not None and _names_me(holder, me, run.lock):
            say(f"taking over the lock of {run.kind}/{run.run_id}: it names this job ({me['cluster']} job "
                f"{me['job_id']}) itself, left by an earlier attempt (killed, then requeued)")
            atomic_write_json(run.lock, me)
            break
        if _held(run.lock, holder):
            if not announced:
                say(f"waiting for {run.kind}/{run.run_id}: locked by pid {holder.get('pid') if holder else '?'} on "
                    f"{holder.get('host') if holder else '?'}")
                announced = True
            time.sleep(poll)
            continue
        _break_stale(run.lock, raw)
    _HELD.add(str(run.lock))
    try:
        yield
    finally:
        _HELD.discard(str(run.lock))
        _release_lock(run.lock, me["token"])


def _create_lock(path: Path, me: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    return True


def _read_lock(path: Path) -> tuple[bytes | None, dict | None]:
    """The lock's bytes (None: it is gone) and its record (None: it does not parse, e.g. still being written)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        holder = json.loads(raw)
    except ValueError:
        return raw, None
    return raw, holder if isinstance(holder, dict) else None


def _held(path: Path, holder: dict | None) -> bool:
    """A live process holds the lock; an unreadable lock is one being written unless it is old."""
    if holder is None:
        with contextlib.suppress(FileNotFoundError):
            return time.time() - path.stat().st_mtime < LOCK_WRITE_GRACE
        return False
    return holder_alive(holder)


def _names_me(holder: dict, me: dict, path: Path) -> bool:
    """The lock was left by the asking job itself: a Slurm job requeued after a hard kill keeps its job id (and
    Slurm reports it alive, so it would wait on itself forever); a process is itself by host and pid. A lock this
    process holds right now (another thread) is not a leftover."""
    if str(path) in _HELD:
        return False
    if me["cluster"] == "slurm" and holder.get("cluster") == "slurm":
        return str(holder.get("job_id")) == str(me["job_id"])
    return holder.get("host") == me["host"] and str(holder.get("pid")) == str(me["pid"])


def _break_stale(path: Path, raw: bytes) -> bool:
    """Remove the stale lock whose bytes were ``raw``, atomically against other waiters: rename it aside to a name
    of this waiter's own, then check that the renamed file is the one judged stale. A waiter that renamed a newer
    lock (another waiter broke the stale one and took the lock in between) puts it back and waits again."""
    aside = path.with_name(f"{path.name}.stale-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another waiter broke it first
        return False
    if aside.read_bytes() == raw:
        aside.unlink()
        return True
    with contextlib.suppress(FileExistsError):  # never over a lock taken meanwhile
        os.link(aside, path)
    aside.unlink()
    return False


def _release_lock(path: Path, token: str) -> None:
    """Remove the lock if it still is this holder's (never another holder's, whatever happened meanwhile)."""
    _, holder = _read_lock(path)
    if holder is not None and holder.get("token") == token:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --------------------------------------------------------------------------------------------------------- inputs
def wait_for_inputs(store: Store, keys: list[str], *, announce: bool, poll: float = 2.0) -> str | None:
    """Wait for inputs that another live launcher or job is producing (overlapping launches share the teacher and
    the captures); returns the first input that is not done with nobody producing it any more, else None."""
    for key in keys:
        run = store.run(*key.split("/"))
        announced = False
        while not run.done.exists():
            status = store.read_status(run)
            if not status_alive(status):
                if status.get("state") == "done":  # its DONE marker is written right after its status
                    time.sleep(poll)
                if run.done.exists():
                    break
                return key
            if announce and not announced:
                say(f"waiting for input {key}: {_producer(status)}")
                announced = True
            time.sleep(poll)
    return None


def _producer(status: dict) -> str:
    """Who produces a run, from its status.json: e.g. "running in local job 812 (pid 815 on n1)"."""
    cluster, job, pid = status.get("cluster") or "local", status.get("job_id"), status.get("pid")
    who = f"{cluster} job {job}" if job else "a launcher's queue"
    where = f" (pid {pid} on {status.get('host') or status.get('submit_host')})" if pid and cluster != "slurm" else ""
    return f"{status.get('state')} in {who}{where}"


# --------------------------------------------------------------------------------------------------------- the job
class RunUnit(submitit.helpers.Checkpointable):
    """``RunUnit()(results_dir, preset, keys)``: run the listed step runs in order; returns {"done", "failed"}.

    A run waits for inputs that another live launcher or job is producing; one whose inputs are not DONE and that
    nobody produces is recorded as failed (not attempted); the other runs still go ahead. With
    ``raise_on_failure`` (Slurm / local executors) the job ends with an error when any run failed, so Slurm's
    ``afterok`` dependents do not start. ``execute(ctx) -> record`` runs one step (default: the real steps);
    ``settings`` maps a step kind to its execution settings from the profile (``ctx.settings``), and a run's key
    (``kind/run_id``) to those chosen for that run (``benchmark.resources.run_settings``), which take precedence.

    ``in_terminal``: the job prints to the user's terminal (the debug executor without ``--debug``), so a failed
    step's traceback goes to its step.log only, and an OS error of the records (a full disk) is returned as
    ``"os_error"`` for the launcher to report in one line, instead of entering submitit's post-mortem debugger.
    """

    def __init__(self, execute: Callable[[steps.StepContext], dict] | None = None,
                 settings: dict[str, dict] | None = None, in_terminal: bool = False,
                 gpus: dict[str, int] | None = None):
        self.execute = execute
        self.settings = dict(settings or {})
        self.in_terminal = in_terminal
        self.gpus = dict(gpus or {})  # GPUs the profile asks for per step kind: a real step that sees none stops

    def __call__(self, results_dir: str, preset: str, keys: list[str], raise_on_failure: bool = True,
                 progress: bool = True) -> dict:
        store = Store(results_dir, preset)
        env = job_environment()
        setup_distributed(env)
        rank = env["rank"]
        done, failed = [], []
        for key in keys:
            kind, run_id = key.split("/")
            run = store.run(kind, run_id)
            if run.done.exists():
                done.append(key)
                continue
            if rank != 0 and kind != "stage2":
                continue  # multi-task jobs exist for stage 2 only; other ranks skip everything else
            line = no_gpu_line(kind, self.gpus.get(kind, 0)) if self.execute is None else None
            if line:  # a --steps stand-in runs where it is; the real step would fall back to the CPU silently
                if rank == 0:
                    store.update_status(run, state="failed", error=line, ended=now())
                    say(f"FAILED {kind}/{run_id}: {line}")
                failed.append(key)
                continue
            try:
                ok = self.run_one(store, run, env, self.execute or steps.execute, progress,
                                  settings={**self.settings.get(kind, {}), **self.settings.get(key, {})},
                                  in_terminal=self.in_terminal)
            except OSError as err:
                if not self.in_terminal:
                    raise
                return {"done": done, "failed": failed + [key], "os_error": err}
            (done if ok else failed).append(key)
        if failed and raise_on_failure and rank == 0:
            raise StepsFailed(f"{len(failed)} of {len(keys)} runs failed: {', '.join(failed)} "
                              f"(see runs/<kind>/<id>/logs/step.log)")
        return {"done": done, "failed": failed}

    @staticmethod
    def run_one(store: Store, run: RunPaths, env: dict, execute: Callable[[steps.StepContext], dict],
                progress: bool, settings: dict | None = None, in_terminal: bool = False) -> bool:
        record = read_json(run.config)
        config, deps = record["config"], record.get("deps", [])
        desc = record.get("desc") or f"{run.kind} {run.run_id}"
        main = env["rank"] == 0
        missing = wait_for_inputs(store, deps, announce=main)
        if missing:
            if main:
                store.update_status(run, state="failed", error=f"not run: input {missing} is not done",
                                    ended=now())
                say(f"skip {desc}: input {missing} is not done")
            return False
        lock = run_lock(run, env) if main else contextlib.nullcontext()
        with lock:
            if run.done.exists():  # another process finished it while we waited
                return True
            if main:
                status = store.read_status(run)
                store.update_status(run, state="running", attempts=int(status.get("attempts", 0)) + 1,
                                    started=now(), host=socket.gethostname(), pid=os.getpid(),
                                    job_id=env["job_id"], cluster=status.get("cluster", env["cluster"]), error=None)
            _reset_cuda_peak()  # environment.json's cuda_peak_bytes is this run's, not an earlier one's of the job
            start, cpu_start = time.time(), time.process_time()
            with tee_output(run.log) if main else contextlib.nullcontext() as log:
                say(f"start {desc} ({run.kind}/{run.run_id}, job {env['job_id']}, attempt "
                    f"{store.read_status(run).get('attempts', 1)})")
                try:
                    ctx = steps.StepContext(store=store, run=run, config=config, rank=env["rank"],
                                            world_size=env["world_size"], progress=progress,
                                            settings=dict(settings or {}))
                    metrics = execute(ctx)
                    if main:
                        atomic_write_json(run.environment, environment_record(env))
                        metrics = dict(metrics or {})
                        metrics.setdefault("seconds_step", round(time.time() - start, 2))
                        metrics.setdefault("cpu_seconds_step", round(time.process_time() - cpu_start, 2))
                        store.finish(run, metrics)
                    say(f"done  {desc} in {time.time() - start:.1f} s")
                    return True
                except Exception as err:  # noqa: BLE001 — recorded, reported, the next run goes ahead
                    quiet = in_terminal and log is not None
                    traceback.print_exc(file=log if quiet else None)  # None: the job's stderr (and the log)
                    if main:
                        line = f"{type(err).__name__}: {with_hint(err)}".splitlines()[0][:500]
                        store.update_status(run, state="failed", error=line, ended=now())
                    say(f"FAILED {desc}: {type(err).__name__}: {err}"
                        + (f" (traceback in {run.log})" if quiet else ""))
                    return False
