"""Local jobs see the GPUs their profile asks for, concurrent ones get disjoint GPUs, and a real step that asked
for a GPU and sees none stops with one line. Through submitit's local executor, the GPU count faked in the launcher
(the jobs themselves run on this machine, CPU-only in CI)."""
import json

import pytest
import submitit

from benchmark.gpus import GpuPool, detected_gpus
from benchmark.jobs import RunUnit
from benchmark.run import main
from benchmark.store import Store
from benchmark.fakes.steps import FakeSteps

PROFILE = {"defaults": {"timeout_min": 60, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 1, "gpus_per_node": 1,
                        "mem_gb": 2}, "steps": {"collect": {"gpus_per_node": 0}}}


@pytest.fixture(autouse=True)
def _no_tables(monkeypatch):
    monkeypatch.setattr("benchmark.launch.build_tables", lambda *a, **k: None)


def gpu_profile(tmp_path, **changes) -> str:
    data = json.loads(json.dumps(PROFILE))
    data["defaults"].update(changes)
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(data))
    return str(path)


def visible_devices(results, preset="micro") -> dict[str, str]:
    """Run key -> the CUDA_VISIBLE_DEVICES its job was given (from each run's environment record)."""
    out = {}
    for env in (results / preset / "runs").glob("*/*/environment.json"):
        out[f"{env.parent.parent.name}/{env.parent.name}"] = json.loads(env.read_text())["cuda_visible_devices"]
    return out


def test_detected_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert detected_gpus() == [2, 5]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detected_gpus() == []


def test_pool_hands_out_disjoint_gpus():
    pool = GpuPool([0, 1, 2])
    a, b = pool.take(2), pool.take(1)
    assert set(a).isdisjoint(b) and pool.take(1) is None
    pool.give(a)
    assert pool.take(2) == [0, 1]


def gpus_per_job(results, preset="micro") -> dict[str, set[str]]:
    """Job id -> the CUDA_VISIBLE_DEVICES values its runs saw; the prep job (teacher + captures) left out."""
    store = Store(results, preset)
    jobs: dict[str, set[str]] = {}
    prep = set()
    for key, seen in visible_devices(results, preset).items():
        job = store.read_status(store.run(*key.split("/")))["job_id"]
        jobs.setdefault(job, set()).add(seen)
        if key.startswith("teacher/"):
            prep.add(job)
    return {j: v for j, v in jobs.items() if j not in prep}


def test_concurrent_local_jobs_get_disjoint_gpus(tmp_path, monkeypatch):
    monkeypatch.setattr("benchmark.executors.detected_gpus", lambda: [0, 1])
    results = tmp_path / "r"
    assert main(["table1", "--preset", "micro", "--executor", "local", "--jobs", "2", "--rows", "baseline,attn-l1",
                 "--profile", gpu_profile(tmp_path), "--results-dir", str(results), "--quiet"],
                execute=FakeSteps()) == 0
    rows = gpus_per_job(results)
    assert len(rows) == 2 and all(len(v) == 1 for v in rows.values())  # one GPU per job, set for every run
    assert set.union(*rows.values()) == {"0", "1"}  # the two rows started together after the prep: one GPU each


def test_with_one_gpu_the_second_job_waits_for_it(tmp_path, monkeypatch):
    monkeypatch.setattr("benchmark.executors.detected_gpus", lambda: [3])
    results = tmp_path / "r"
    assert main(["table1", "--preset", "micro", "--executor", "local", "--jobs", "2", "--rows", "baseline,attn-l1",
                 "--profile", gpu_profile(tmp_path), "--results-dir", str(results), "--quiet"],
                execute=FakeSteps()) == 0
    store = Store(results, "micro")
    spans = {}
    for key in visible_devices(results):
        status = store.read_status(store.run(*key.split("/")))
        span = spans.setdefault(status["job_id"], [status["started"], status["ended"]])
        span[0], span[1] = min(span[0], status["started"]), max(span[1], status["ended"])
    assert set(visible_devices(results).values()) == {"3"}
    (a0, a1), (b0, b1) = sorted(spans.values())[-2:]
    assert a1 <= b0  # the second row's job started after the first had given the GPU back


def test_local_jobs_without_a_gpu_profile_see_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr("benchmark.executors.detected_gpus", lambda: [0, 1])
    results = tmp_path / "r"
    assert main(["table1", "--preset", "micro", "--executor", "local", "--rows", "baseline",
                 "--results-dir", str(results), "--quiet"], execute=FakeSteps()) == 0  # cpu profile: 0 GPUs
    assert set(visible_devices(results).values()) == {""}


def test_a_unit_asking_more_gpus_than_the_machine_has_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("benchmark.executors.detected_gpus", lambda: [0])
    results = tmp_path / "r"
    assert main(["table1", "--preset", "micro", "--executor", "local", "--rows", "baseline",
                 "--profile", gpu_profile(tmp_path, gpus_per_node=2), "--results-dir", str(results), "--quiet"],
                execute=FakeSteps()) == 2
    err = capsys.readouterr().err
    assert "asks for 2 GPUs" in err and ".gpus_per_node=1" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_real_step_that_asked_for_a_gpu_and_sees_none_stops(tmp_path):
    store = Store(tmp_path, "micro")
    run = store.ensure_config("teacher", "abc", {"kind": "teacher", "preset": "micro"})
    ex = submitit.LocalExecutor(folder=tmp_path / "sub" / "%j")
    ex.update_parameters(timeout_min=5, gpus_per_node=1, visible_gpus=(0,))
    job = ex.submit(RunUnit(None, gpus={"teacher": 1}), str(tmp_path), "micro", ["teacher/abc"], False, False)
    assert job.result() == {"done": [], "failed": ["teacher/abc"]}
    error = store.read_status(run)["error"]
    assert error.startswith("teacher: the profile asked for 1 GPU but this job sees none")
    assert "CUDA_VISIBLE_DEVICES='0'" in error and "\n" not in error
    assert not run.done.exists() and not run.log.exists()  # nothing ran


def test_gpu_smoke_judges_the_device_a_step_used_not_the_one_it_saw(tmp_path):
    """A step that saw a GPU (cuda: true) but never put a tensor on it ran on the CPU."""
    from benchmarks.gpu_smoke import step_lines

    for rid, peak in (("a", 0), ("b", 5_000_000_000)):
        run = tmp_path / "paper-smoke" / "runs" / "stage2" / rid
        run.mkdir(parents=True)
        (run / "status.json").write_text(json.dumps({"state": "done"}))
        (run / "environment.json").write_text(json.dumps({"device": {"cuda": True, "name": "NVIDIA H100",
                                                                     "cuda_peak_bytes": peak}}))
    lines = {r["step"]: r for r in step_lines(tmp_path)}
    assert lines["stage2/a"]["device"] == "cpu" and lines["stage2/b"]["device"] == "NVIDIA H100"
    assert lines["stage2/b"]["peak_gpu_gb"] == 5.0
