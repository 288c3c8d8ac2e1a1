"""Integration tests against a *real* Slurm cluster (the one-node cluster of ``slurm/local-cluster.sh``).

Run with ``tox -e slurm`` (brings the cluster up and down) or, with the cluster up,
``pytest -m slurm tests/test_slurm_integration.py``. Skipped with the reason when ``sbatch`` is missing or the
cluster does not answer; ``GRAFTBENCH_REQUIRE_SLURM=1`` (set by tox -e slurm and .ci/run) turns that skip into a
failure, so CI cannot go green without having run them.

Two tiers:

* submitit directly (always): a job array, an ``afterok`` dependency (and a never-satisfied one), a 2-task
  DDP job over gloo, and the stage-2 resume contract (``graft_core.stages.finetune``: a Checkpointable-style job that
  checkpoints every k steps and resumes from the newest checkpoint in its ``out_dir``) exercised with a small
  torch stand-in, ``MiniFinetune``: preempted via ``job._interrupt()`` (SIGTERM + USR2, what Slurm sends on
  preemption) → submitit requeues it → it resumes from its checkpoint; cancelled with ``scancel`` → a re-run
  resumes from the checkpoint. In both cases the final weights equal an uninterrupted run bit for bit.
* the benchmark driver (``python -m benchmark.run``, skipped while it does not exist): a micro target (fig4b, or
  ``GRAFTBENCH_SLURM_TARGET``) end to end through ``--executor slurm`` with stage 2 as a 2-task DDP job, its stage-2
  job preempted while it runs and finished by the requeue with nothing upstream re-run, and a second launch that
  submits zero jobs.

Measured on the 2-core CI machine: see slurm/README.md.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "slurm"
REQUIRE = os.environ.get("GRAFTBENCH_REQUIRE_SLURM", "0") == "1"


def skip_unless_required(reason: str) -> None:
    """Skip, or fail under GRAFTBENCH_REQUIRE_SLURM=1 (tox -e slurm, .ci/run): there a missing part is a failure."""
    if REQUIRE:
        pytest.fail(f"GRAFTBENCH_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)
READY_STATES = {"idle", "mixed", "allocated", "completing"}
# seconds to wait for a job to reach a point: generous, a loaded 2-core machine takes minutes to start python + torch
WAIT = float(os.environ.get("GRAFTBENCH_SLURM_WAIT", "300"))
STEPS = 24  # MiniFinetune steps; at 0.5 s a step a job outlives the 5 s KillWait after a signal at step 3


# ----------------------------------------------------------------------------------------------------------------
# Cluster detection and helpers
# ----------------------------------------------------------------------------------------------------------------


def _run(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def cluster_problem() -> str | None:
    """None when a usable Slurm cluster answers, else why not (used as the skip reason)."""
    if shutil.which("sbatch") is None:
        return "sbatch not found: install and start the local cluster with `slurm/local-cluster.sh up` (or `tox -e slurm`)"
    try:
        p = _run(["sinfo", "-h", "-N", "-o", "%T"])
    except subprocess.TimeoutExpired:
        return "sinfo timed out: the Slurm controller does not answer (`slurm/local-cluster.sh status`)"
    if p.returncode != 0:
        return f"Slurm cluster not up (`sinfo` failed: {p.stderr.strip()[:200]}); run `slurm/local-cluster.sh up`"
    states = {s.strip().rstrip("*~#$@+") for s in p.stdout.split()}
    if not states & READY_STATES:
        return f"no Slurm node ready (states: {sorted(states)}); run `slurm/local-cluster.sh up`"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    """Skip (or fail under GRAFTBENCH_REQUIRE_SLURM=1) without a cluster; put the sacct stand-in first on PATH."""
    problem = cluster_problem()
    if problem:
        skip_unless_required(problem)
    old_path = os.environ["PATH"]
    # submitit polls `sacct`; without accounting the real one fails and a cancelled job's result() hangs.
    # Prepending slurm/ makes the stand-in win even when `local-cluster.sh up` could not install it.
    os.environ["PATH"] = f"{SLURM_DIR}{os.pathsep}{old_path}"
    try:
        yield
    finally:
        os.environ["PATH"] = old_path


@pytest.fixture(scope="module")
def node_cpus() -> int:
    out = _run(["sinfo", "-h", "-N", "-o", "%c"]).stdout.split()
    return int(out[0]) if out else 1


def make_executor(folder: Path, **params):
    # cluster= explicitly: AutoExecutor picks slurm whenever srun is on PATH, even with the daemons down.
    # max_num_timeout is a constructor argument (update_parameters rejects it): timeout_min < 50 makes submitit
    # count every USR2 as a timeout, so each preemption uses one of these requeues.
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=3)
    ex.update_parameters(
        **{"timeout_min": 10, "slurm_partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "name": "graftbench-it",
           **params}
    )
    return ex


def scontrol_job(job_id: str) -> dict[str, str]:
    out = _run(["scontrol", "show", "job", "-o", job_id]).stdout
    line = out.splitlines()[0] if out.strip() else ""
    return dict(t.split("=", 1) for t in line.split() if "=" in t)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it is truthy or ``timeout`` passes. A Slurm command that times out (slurmctld busy
    under the rehearsal's load: "Socket timed out on send/recv") is asked again, within the same deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except subprocess.TimeoutExpired:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def job_state(job) -> str:
    return job.get_info(mode="force").get("State", "UNKNOWN")  # job.state is cached


def job_ids_used() -> int:
    """A fresh job id from the controller (a trivial held job, cancelled at once): ids only ever increase."""
    out = _run(["sbatch", "--parsable", "--hold", "-J", "graftbench-id-probe", "-o", "/dev/null", "--wrap", "true"])
    assert out.returncode == 0, out.stderr
    jid = out.stdout.strip().split(";")[0]
    _run(["scancel", jid])
    return int(jid)


# ----------------------------------------------------------------------------------------------------------------
# Job callables (pickled by value: this test module is not importable inside the job)
# ----------------------------------------------------------------------------------------------------------------


def square_with_env(x: int) -> dict:
    return {"x": x, "y": x * x, "task": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "array": os.environ.get("SLURM_ARRAY_JOB_ID"), "job": os.environ.get("SLURM_JOB_ID")}


def write_after(path: str, text: str, seconds: float) -> float:
    time.sleep(seconds)
    Path(path).write_text(text)
    return time.time()


def read_file(path: str) -> tuple[str, float]:
    return Path(path).read_text(), time.time()


def fail() -> None:
    raise RuntimeError("deliberate failure")


class MiniFinetune(submitit.helpers.Checkpointable):
    """Stand-in for the stage-2 contract of ``graft_core.stages.finetune.finetune`` (docs/contracts.md).

    Trains a tiny linear model for ``steps`` SGD+momentum steps; every ``checkpoint_every`` steps rank 0 writes
    ``out_dir/checkpoints/step_XXXXXX.pt`` atomically (model, optimizer, step); a new call resumes from the newest
    checkpoint found in ``out_dir`` *at run time* (never from state in the pickle, which a requeue re-reads).
    Batches are a function of the step, so a resumed run equals an uninterrupted one. DDP (gloo) when
    ``WORLD_SIZE>1``: each rank takes half of every batch. Every attempt appends one line to ``attempts.jsonl``.
    """

    def __init__(self, out_dir: str, steps: int = STEPS, checkpoint_every: int = 1, step_seconds: float = 0.0):
        self.out_dir, self.steps, self.every, self.step_seconds = out_dir, steps, checkpoint_every, step_seconds

    def __call__(self) -> dict:
        import torch

        if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            # what the driver's job wrapper does for a multi-task job: MASTER_ADDR/PORT, RANK, WORLD_SIZE, ...
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        rank, world = 0, 1
        if distributed:
            torch.distributed.init_process_group("gloo")
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        out = Path(self.out_dir)
        ckpt_dir = out / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        start = 0
        ckpts = sorted(ckpt_dir.glob("step_*.pt"))
        if ckpts:
            state = torch.load(ckpts[-1], weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start = state["step"]
        if rank == 0:
            with open(out / "attempts.jsonl", "a") as f:
                f.write(json.dumps({"start_step": start, "job_id": os.environ.get("SLURM_JOB_ID"),
                                    "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
                                    "world_size": world}) + "\n")
        net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
        for step in range(start, self.steps):
            g = torch.Generator().manual_seed(1000 + step)
            x = torch.randn(8, 4, generator=g, dtype=torch.float64)
            y = torch.sin(x.sum(1, keepdim=True))
            if distributed:
                x, y = x.chunk(world)[rank], y.chunk(world)[rank]
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
            if (step + 1) % self.every == 0 and rank == 0:
                tmp = ckpt_dir / f".step_{step + 1:06d}.pt.tmp"
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1}, tmp)
                os.replace(tmp, ckpt_dir / f"step_{step + 1:06d}.pt")
            time.sleep(self.step_seconds)
        if distributed:
            torch.distributed.destroy_process_group()
        return {"rank": rank, "world_size": world, "weights": {k: v.tolist() for k, v in model.state_dict().items()}}

    # checkpoint() is Checkpointable's: requeue the same callable with the same arguments, which is right
    # because the state lives in out_dir, not in the pickle.


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def read_attempts(out_dir: Path) -> list[dict]:
    path = out_dir / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def latest_step(out_dir: Path) -> int:
    ckpts = sorted((out_dir / "checkpoints").glob("step_*.pt"))
    return int(ckpts[-1].stem.split("_")[1]) if ckpts else 0


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory) -> dict:
    """The uninterrupted run, in this process."""
    return MiniFinetune(str(tmp_path_factory.mktemp("reference")))()["weights"]


# ----------------------------------------------------------------------------------------------------------------
# Tier 1: submitit against the real cluster
# ----------------------------------------------------------------------------------------------------------------


def test_array_job(tmp_path):
    ex = make_executor(tmp_path, slurm_array_parallelism=2)
    jobs = ex.map_array(square_with_env, [0, 1, 2, 3])
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(4)]
    results = [j.result() for j in jobs]
    assert [r["y"] for r in results] == [0, 1, 4, 9]
    assert [r["task"] for r in results] == ["0", "1", "2", "3"]
    assert {r["array"] for r in results} == {array_id}
    # the result pickle is written before the task exits: give the scheduler a moment to mark it COMPLETED
    wait_for(lambda: all(job_state(j) == "COMPLETED" for j in jobs), WAIT, "the array tasks to be COMPLETED", 0.5)


def test_afterok_dependency(tmp_path):
    ex = make_executor(tmp_path)
    flag = tmp_path / "flag.txt"
    first = ex.submit(write_after, str(flag), "from the first job", 3.0)
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{first.job_id}"})
    second = ex.submit(read_file, str(flag))
    ex.update_parameters(slurm_additional_parameters={})
    # while the first job runs, the second waits on its dependency
    info = wait_for(lambda: (i := scontrol_job(second.job_id)).get("Reason") == "Dependency" and i, 30,
                    "the dependent job to wait on its dependency")
    assert info["JobState"] == "PENDING", info
    first_end = first.result()
    text, second_start = second.result()
    assert text == "from the first job"
    assert second_start >= first_end

    # afterok on a failed job: never runs (Slurm keeps it PENDING, Reason=DependencyNeverSatisfied)
    failing = ex.submit(fail)
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{failing.job_id}"})
    orphan = ex.submit(read_file, str(flag))
    ex.update_parameters(slurm_additional_parameters={})
    with pytest.raises(Exception, match="deliberate failure"):
        failing.result()
    info = wait_for(lambda: (i := scontrol_job(orphan.job_id)).get("Reason") == "DependencyNeverSatisfied" and i,
                    WAIT, "the orphaned dependent job to be flagged")
    assert info["JobState"] == "PENDING"
    _run(["scancel", orphan.job_id])


def test_ddp_two_tasks_matches_single_process(tmp_path, node_cpus, reference_weights):
    if node_cpus < 2:
        skip_unless_required(f"the node has {node_cpus} CPU(s); a 2-task job needs 2")
    ex = make_executor(tmp_path, tasks_per_node=2, cpus_per_task=1, mem_gb=2)
    job = ex.submit(MiniFinetune(str(tmp_path / "run")))
    results = job.results()
    assert [r["rank"] for r in results] == [0, 1]
    assert {r["world_size"] for r in results} == {2}
    assert results[0]["weights"] == results[1]["weights"], "DDP ranks disagree"
    # averaged half-batch gradients = the full-batch gradient of the single-process run (up to float rounding)
    import torch

    for k, ref in reference_weights.items():
        torch.testing.assert_close(torch.tensor(results[0]["weights"][k]), torch.tensor(ref), rtol=1e-9, atol=1e-12)
    assert read_attempts(tmp_path / "run") == [{"start_step": 0, "job_id": job.job_id, "restart_count": 0,
                                                 "world_size": 2}]


def test_preempted_job_is_requeued_and_resumes_from_checkpoint(tmp_path, reference_weights):
    out = tmp_path / "run"
    ex = make_executor(tmp_path)
    job = ex.submit(MiniFinetune(str(out), step_seconds=0.5))
    wait_for(lambda: latest_step(out) >= 3, WAIT, "the first checkpoints")
    job._interrupt()  # scancel --signal SIGTERM, then USR2: what Slurm sends on preemption
    result = job.result()  # submitit ran checkpoint() and `scontrol requeue`; the same job id finishes
    attempts = read_attempts(out)
    assert len(attempts) == 2, attempts
    assert attempts[0]["start_step"] == 0 and 3 <= attempts[1]["start_step"] < STEPS, attempts
    assert {a["job_id"] for a in attempts} == {job.job_id}
    assert attempts[1]["restart_count"] == 1
    assert result["weights"] == reference_weights, "resumed run differs from the uninterrupted one"
    assert latest_step(out) == STEPS


def test_cancelled_job_rerun_resumes_from_checkpoint(tmp_path, reference_weights):
    out = tmp_path / "run"
    ex = make_executor(tmp_path)
    job = ex.submit(MiniFinetune(str(out), step_seconds=0.5))
    wait_for(lambda: latest_step(out) >= 3, WAIT, "the first checkpoints")
    # submitit's job ignores the SIGTERM of scancel: the job trains on for KillWait (5 s here) until SIGKILL
    _run(["scancel", job.job_id])
    wait_for(lambda: job_state(job).startswith("CANCELLED"), WAIT, "the job to be cancelled", interval=0.5)
    killed_at = latest_step(out)
    assert 3 <= killed_at < STEPS
    rerun = ex.submit(MiniFinetune(str(out)))  # what a driver re-launch does: same out_dir
    result = rerun.result()
    attempts = read_attempts(out)
    assert [a["job_id"] for a in attempts] == [job.job_id, rerun.job_id]
    assert attempts[1]["start_step"] == killed_at > 0
    assert result["weights"] == reference_weights, "re-run after cancel differs from the uninterrupted one"


# ----------------------------------------------------------------------------------------------------------------
# Tier 2: the benchmark driver on a micro target through the real cluster
# ----------------------------------------------------------------------------------------------------------------
# One launch of DRIVER_TARGET (fig4b on micro: teacher → 2 captures → stage-1 array → stage 2 → eval, a locality
# job whose result a `replan` job turns into more runs, and a collect job; every edge an afterok dependency), with
# stage 2 as a 2-task DDP job (gloo). The stage-2 job is preempted once it runs (SIGTERM + USR2, as Slurm does and
# as submitit's job._interrupt() sends); RunUnit is Checkpointable, so submitit requeues it under the same job id
# and it resumes from what is on disk. Then the same command again must submit nothing.

DRIVER_TARGET = os.environ.get("GRAFTBENCH_SLURM_TARGET", "fig4b")
DRIVER_TIMEOUT = float(os.environ.get("GRAFTBENCH_SLURM_DRIVER_TIMEOUT", "600"))  # s for the whole DAG


def _driver_missing() -> str | None:
    import importlib.util

    try:
        if importlib.util.find_spec("benchmark.run") is None:
            return "benchmark.run does not exist yet"
    except ImportError as err:
        return f"benchmark.run cannot be imported: {err}"
    return None


def run_driver(results: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmark.run", DRIVER_TARGET, "--preset", "micro", "--executor", "slurm",
           "--results-dir", str(results), "--slurm", "stage2.tasks_per_node=2", "--quiet", *extra]
    # one cache for every launch and its jobs (Slurm passes the environment on): the conftest's per-test cache is
    # not set yet when the module fixture launches, and a teacher missing from the cache is re-run
    env = {**os.environ, "GRAFTBENCH_CACHE": str(results / "cache")}
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    print(f"$ {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p


def our_jobs() -> list[tuple[str, str, str]]:
    """(job id, name, state) of the driver's jobs (names start with gb-) still in the queue."""
    out = _run(["squeue", "-h", "-o", "%i|%j|%T"]).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if "|gb-" in line]


def read_json_file(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def driver_launch(tmp_path_factory, node_cpus):
    """Launch, preempt stage 2 once it runs, wait for every job; returns what the tests below check."""
    missing = _driver_missing()
    if missing:
        skip_unless_required(missing)
    if node_cpus < 2:
        skip_unless_required(f"the node has {node_cpus} CPU(s); the 2-task stage-2 job needs 2")
    assert not our_jobs(), f"driver jobs from an earlier run are still queued: {our_jobs()}"
    results = tmp_path_factory.mktemp("driver-results")
    runs = results / "micro" / "runs"
    t0 = time.monotonic()
    first = run_driver(results)
    assert first.returncode == 0, first.stderr
    submit_seconds = time.monotonic() - t0

    def running_stage2():
        for status in (runs / "stage2").glob("*/status.json"):
            s = read_json_file(status)
            if s.get("state") == "running":
                return status.parent, s
        return None

    stage2_dir, status = wait_for(running_stage2, DRIVER_TIMEOUT, "a stage-2 run to start", interval=0.5)
    preempted_job = str(status["job_id"])
    ckpts_at_preemption = sorted(p.name for p in (stage2_dir / "out").rglob("step_*.pt")) \
        if (stage2_dir / "out").exists() else []
    # what Slurm sends on preemption and submitit's SlurmJob._interrupt() reproduces
    assert _run(["scancel", "--signal", "TERM", preempted_job]).returncode == 0
    assert _run(["scancel", "--signal", "USR2", preempted_job]).returncode == 0
    wait_for(lambda: not our_jobs(), DRIVER_TIMEOUT, "the driver's jobs to end", interval=1.0)
    return {"results": results, "runs": runs, "stage2_dir": stage2_dir, "preempted_job": preempted_job,
            "ckpts_at_preemption": ckpts_at_preemption, "first": first, "submit_seconds": submit_seconds,
            "seconds": time.monotonic() - t0}


def test_driver_runs_the_micro_target_on_slurm(driver_launch):
    runs = driver_launch["runs"]
    first = driver_launch["first"].stdout
    assert "submitted stage1" in first and "submitted stage2" in first and "(after " in first, first
    summary = read_json_file(driver_launch["results"] / "micro" / DRIVER_TARGET / "summary.json")
    states = {row["row"]: row["status"] for row in summary["rows"]}
    failed = {p.parent.name: read_json_file(p).get("error") for p in runs.glob("*/*/status.json")
              if read_json_file(p).get("state") == "failed"}
    assert set(states.values()) == {"done"}, f"rows: {states}; failed runs: {failed}"
    for status in runs.glob("*/*/status.json"):
        s = read_json_file(status)
        assert s["cluster"] == "slurm" and s["state"] == "done", (status, s)
    # stage-1 layers of a row go out as one job array (a single layer as a plain job)
    import re

    arrays = [int(k) for k in re.findall(r"submitted stage1 ×(\d+)", first)]
    stage1_env = [read_json_file(p) for p in runs.glob("stage1/*/environment.json")]
    assert stage1_env
    if any(k > 1 for k in arrays):
        assert any("SLURM_ARRAY_TASK_ID" in e["slurm"] for e in stage1_env), stage1_env
    print(f"{DRIVER_TARGET} on micro through Slurm: {driver_launch['seconds']:.0f} s "
          f"(submission {driver_launch['submit_seconds']:.1f} s)")


def test_driver_stage2_is_ddp_and_survives_preemption(driver_launch):
    stage2_dir = driver_launch["stage2_dir"]
    status = read_json_file(stage2_dir / "status.json")
    env = read_json_file(stage2_dir / "environment.json")
    metrics = read_json_file(stage2_dir / "metrics.json")
    assert env["job"]["world_size"] == 2, env["job"]  # two tasks, one DDP process group over gloo
    # requeued under the same job id (not re-launched), second attempt finished it
    assert status["state"] == "done" and status["attempts"] == 2, status
    assert [j["job_id"] for j in status["jobs"]] == [driver_launch["preempted_job"]], status["jobs"]
    assert env["slurm"].get("SLURM_RESTART_COUNT") == "1", env["slurm"]
    assert (stage2_dir / "DONE").exists()
    # stage 2 resumed from the newest checkpoint it had written before the signal (if any)
    print(f"checkpoints at preemption: {driver_launch['ckpts_at_preemption']}; stage-2 metrics: "
          f"{ {k: metrics.get(k) for k in ('steps', 'resumed_from')} }")
    if driver_launch["ckpts_at_preemption"]:
        assert (metrics.get("resumed_from") or 0) > 0, metrics
    # nothing upstream ran twice
    for status_path in driver_launch["runs"].glob("*/*/status.json"):
        if status_path.parent != stage2_dir:
            assert read_json_file(status_path)["attempts"] == 1, status_path


def test_driver_second_launch_submits_nothing(driver_launch):
    before = job_ids_used()
    again = run_driver(driver_launch["results"])
    after = job_ids_used()
    assert again.returncode == 0, again.stderr
    assert after == before + 1, f"job ids {before} → {after}: the second launch submitted {after - before - 1} job(s)"
    assert "launched 0 runs" in again.stdout, again.stdout


# ----------------------------------------------------------------------------------------------------------------
# The paper-preset rehearsal: `paper-smoke` (the paper's code and settings at rehearsal scale) through the driver on
# fake prerequisites of the paper's structure (benchmark.fakes.prerequisites: a 28-block DiT at reduced width in an HF cache, an
# SD-VAE-structured VAE, JPEG ImageFolders run through `benchmark.prepare`, Inception weights in torch-fidelity's
# format, an ADM reference batch). Baseline with floor/noise, two table3 rows (Hyena-X at 50 %, MLP r=3 at 50 %)
# and the control, fig2's locality → fig4b's replanned top-local row, one table2 row, and table6's parallel-pair row
# (block captures of 2 blocks each, a stage-1 array over the 14 pairs, stage 2 on the 25 % subset, eval, latency),
# and table5's two rows on the fake PixArt-Σ (T5 states of its prompts and of GenEval's by one 4-task encoding array,
# a 2-task synthetic-pair array, one online stage-1 job for the 14 grafted layers (no capture), LoRA-64 stage 2,
# GenEval's images by 2-task sampling arrays and its evaluator on a fake detector, latency); the search target's MHA
# rows at one budget (50 %: stage-1 error, greedy validation and cost-aware searches over the stage-1 runs of all 28
# layers, each one job, then their rows replanned beside the interleaved and top-local ones); stage 2 as a 2-task gloo
# DDP job, every DiT eval a 2-task sampling array + one ADM metrics job.
# Then a second launch submits nothing.

SMOKE_ROWS = ("baseline,metric_floor,noise_control,attn-hyena_x-interleaved50,mlp-mlp_r3-interleaved50,"
              "control-teacher-stage2,locality,attn-hyena_x-top_local,attn-random_init-full,parallel-depth14,"
              "attn-hyena_x-pixart,attn-hyena_x-stage1_error50,attn-hyena_x-greedy50,attn-hyena_x-cost_aware50")
SMOKE_TARGETS = ("baseline", "table3", "fig2", "fig4b", "table2", "table6", "table5", "search")
SMOKE_TIMEOUT = float(os.environ.get("GRAFTBENCH_SLURM_SMOKE_TIMEOUT", "2400"))  # s for the whole rehearsal


def run_smoke(results: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmark.run", *SMOKE_TARGETS, "--preset", "paper-smoke", "--rows", SMOKE_ROWS,
           "--executor", "slurm", "--profile", "cpu", "--slurm", "stage2.tasks_per_node=2",
           "--results-dir", str(results), "--quiet"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    print(f"$ {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p


@pytest.fixture(scope="module")
def smoke_launch(tmp_path_factory, node_cpus):
    if node_cpus < 2:
        skip_unless_required(f"the node has {node_cpus} CPU(s); the 2-task stage-2 job needs 2")
    wait_for(lambda: not our_jobs(), DRIVER_TIMEOUT, "earlier driver jobs to end", interval=1.0)
    root = tmp_path_factory.mktemp("paper-smoke")
    t0 = time.monotonic()
    from benchmark.fakes.prerequisites import prepare_rehearsal

    env = {**prepare_rehearsal(root), "OMP_NUM_THREADS": "1"}
    prepared = time.monotonic() - t0
    results = root / "results"
    first = run_smoke(results, env)
    assert first.returncode == 0, first.stderr
    wait_for(lambda: not our_jobs(), SMOKE_TIMEOUT, "the rehearsal's jobs to end", interval=2.0)
    return {"results": results, "env": env, "first": first, "prepare_seconds": prepared,
            "seconds": time.monotonic() - t0}


def _seconds_by_kind(runs: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for metrics in runs.glob("*/*/metrics.json"):
        m = read_json_file(metrics)
        if m.get("seconds_step") is not None:
            out.setdefault(metrics.parent.parent.name, []).append(float(m["seconds_step"]))
    return out


def test_paper_smoke_rehearsal_runs_every_dit_step_on_slurm(smoke_launch):
    import math

    results = smoke_launch["results"]
    runs = results / "paper-smoke" / "runs"
    first = smoke_launch["first"].stdout
    failed = {f"{p.parent.parent.name}/{p.parent.name}": read_json_file(p).get("error")
              for p in runs.glob("*/*/status.json") if read_json_file(p).get("state") != "done"}
    assert not failed, failed
    assert "submitted sample ×2" in first and "submitted stage1 ×14" in first and "submitted replan" in first, first
    wanted = {"baseline": {"baseline", "metric_floor", "noise_control"},
              "table3": {"baseline", "attn-hyena_x-interleaved50", "mlp-mlp_r3-interleaved50",
                         "control-teacher-stage2"},
              "fig2": {"locality"}, "fig4b": {"attn-hyena_x-top_local"}, "table2": {"attn-random_init-full"},
              "table6": {"baseline", "parallel-depth14"}, "table5": {"baseline", "attn-hyena_x-pixart"},
              "search": {"attn-hyena_x-interleaved50", "attn-hyena_x-top_local", "attn-hyena_x-stage1_error50",
                         "attn-hyena_x-greedy50", "attn-hyena_x-cost_aware50"}}
    for target, rows in wanted.items():
        summary = read_json_file(results / "paper-smoke" / target / "summary.json")
        by_row = {r["row"]: r for r in summary["rows"]}
        for row in rows:
            r = by_row[row]
            assert r["status"] == "done", (target, row, r["status"])
            if target == "table5":  # GenEval (fake detector): a finite overall score, no FID on the paper protocol
                assert math.isfinite(r["extra"]["geneval_or_acc"]) and r["extra"]["geneval_tasks"], r
            elif target != "fig2":
                assert all(math.isfinite(r["metrics"][m]) for m in ("fid", "sfid", "is", "precision", "recall")), r
    # table6: the parallel-pair model's latency run gives a finite speed-up over the depth-28 teacher
    table6 = {r["row"]: r for r in read_json_file(results / "paper-smoke" / "table6" / "summary.json")["rows"]}
    speedup = table6["parallel-depth14"]["extra"].get("speedup")
    assert isinstance(speedup, (int, float)) and math.isfinite(speedup) and speedup > 0, table6["parallel-depth14"]
    assert table6["parallel-depth14"]["extra"].get("depth") == 14, table6["parallel-depth14"]["extra"]
    # search: every searched row replaced 14 of the 28 layers (cost-aware: at least Hyena-X's 14 layers of FLOPs)
    search = {r["row"]: r for r in read_json_file(results / "paper-smoke" / "search" / "summary.json")["rows"]}
    for s in ("stage1_error50", "greedy50"):
        assert len(search[f"attn-hyena_x-{s}"]["extra"]["layers"]) == 14, search[f"attn-hyena_x-{s}"]
    assert len(search["attn-hyena_x-cost_aware50"]["extra"]["layers"]) >= 14, search["attn-hyena_x-cost_aware50"]
    table5 = {r["row"]: r for r in read_json_file(results / "paper-smoke" / "table5" / "summary.json")["rows"]}
    grafted = table5["attn-hyena_x-pixart"]["extra"]
    assert grafted["layers"] == [8, 10, 12, 14, 16, 18, 20, 21, 22, 23, 24, 25, 26, 27] and grafted["speedup"] > 0
    assert "submitted synthetic ×2" in first and "submitted stage1_online" in first, first
    assert "submitted encode ×4" in first, first  # T5: training + GenEval sets
    online = [read_json_file(p) for p in runs.glob("stage1_online/*/metrics.json")]
    assert len(online) == 1 and sorted(map(int, online[0]["layers"])) == grafted["layers"], online
    # the paper protocol: FID against the reference batch's stored statistics, scored by the metrics job (DiT)
    evals = [read_json_file(p / "metrics.json") for p in runs.glob("eval/*")
             if (p / "metrics.json").exists() and "pixart" not in read_json_file(p / "config.json")["config"]]
    assert evals and all("fid_adm_stats" in e["metrics"] and e["metrics"]["fid"] == e["metrics"]["fid_adm_stats"]
                         for e in evals)
    # stage 2 was one DDP process group of 2 tasks; the sampling tasks were array tasks
    for env_path in runs.glob("stage2/*/environment.json"):
        assert read_json_file(env_path)["job"]["world_size"] == 2
    assert any("SLURM_ARRAY_TASK_ID" in read_json_file(p)["slurm"] for p in runs.glob("sample/*/environment.json"))
    # captures hold only the planned (layer, site) pairs: one run per (layer, site) and split for the DiT operators,
    # one per block pair and split for table6 (site "block", blocks 2i and 2i + 1: what stage 1 of pair i reads)
    pairs = [read_json_file(p)["config"].get("pairs") for p in runs.glob("capture/*/config.json")]
    assert pairs and all(p is not None for p in pairs), pairs
    blocks = [p for p in pairs if any(site == "block" for _, site in p)]
    assert all(len(p) == 1 and p[0][1] in ("attn", "mlp") for p in pairs if p not in blocks), pairs
    assert all(len(p) == 2 and p[0][1] == p[1][1] == "block" and p[0][0] % 2 == 0 and p[1][0] == p[0][0] + 1
               for p in blocks), blocks
    assert sorted(p[0][0] // 2 for p in blocks) == sorted(list(range(14)) * 2), blocks  # stage1 + heldout splits
    tables = subprocess.run([sys.executable, "-m", "tables.build", "--results", str(results), "--preset",
                             "paper-smoke"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=smoke_launch["env"])
    assert tables.returncode == 0, tables.stderr
    for name in ("table2", "table3", "fig4b", "table6", "table5", "search"):
        tex = (results / "paper-smoke" / "tables" / f"{name}.tex").read_text()
        assert "\\toprule" in tex and "\\bottomrule" in tex, name
    timings = {k: f"{len(v)} runs, {sum(v):.0f} s" for k, v in sorted(_seconds_by_kind(runs).items())}
    print(f"paper-smoke through Slurm: {smoke_launch['seconds']:.0f} s (fakes + prepare "
          f"{smoke_launch['prepare_seconds']:.0f} s); step seconds by kind: {timings}")


@pytest.mark.latex
def test_paper_smoke_tables_compile(smoke_launch):
    """The rehearsal's LaTeX, rendered from its real (fake-weight) runs, compiles with pdflatex: every paper target's
    table in one document (a missing pdflatex fails under CI=true, tests/conftest.py)."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex not installed (.ci/run installs TeX Live as root)")
    results = smoke_launch["results"]
    folder = results / "paper-smoke" / "tables"
    if not folder.exists():
        subprocess.run([sys.executable, "-m", "tables.build", "--results", str(results), "--preset", "paper-smoke"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=smoke_launch["env"], check=True)
    doc = (folder / "all.tex").read_text()  # the full build's standalone document of every table
    assert all(f"\\input{{{name}}}" in doc for name in ("table2", "table3", "table5", "table6", "fig4b")), doc
    proc = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "all.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=300)
    log = folder / "all.log"
    assert proc.returncode == 0, (log.read_text(errors="replace") if log.exists() else proc.stdout)[-3000:]
    assert (folder / "all.pdf").stat().st_size > 0


def test_paper_smoke_second_launch_submits_nothing(smoke_launch):
    before = job_ids_used()
    again = run_smoke(smoke_launch["results"], smoke_launch["env"])
    after = job_ids_used()
    assert again.returncode == 0, again.stderr
    assert after == before + 1, f"job ids {before} → {after}: the second launch submitted {after - before - 1} job(s)"
    assert "launched 0 runs" in again.stdout, again.stdout
