"""Crash tests through the CLI: a real micro stage 2, and the launcher, SIGKILLed at a fault-injection point, then
the same command resumes and ends with the metrics of an uninterrupted run.

* stage 2: ``GRAFTBENCH_KILL_AFTER_CHECKPOINT=3`` (``graft_core.stages.finetune``) makes the stage-2 job kill itself right
  after its step-3 checkpoint is written (micro: 6 steps, a checkpoint every 3); the relaunch resumes from it;
* the launcher: SIGKILLed once a stage-2 checkpoint exists (the test watches for the file, with a deadline); the job
  it started runs on alone; once that job has let go of its run lock, the relaunch picks up from the store.

Compared with an uninterrupted run of the same command: the row's metrics (FID, IS, class accuracy, …) and stage
2's loss history, to float rounding (relative 1e-5: with more than one BLAS thread a resumed process's reductions may
round differently; a resume that lost its optimizer state, its data order or a step moves them by far more).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graft_core.stages.finetune import KILL_AFTER_CHECKPOINT_ENV

pytestmark = pytest.mark.slow

ROW = "attn-hyena_x-interleaved50"
DEADLINE_S = 600
REL = 1e-5


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=REL, abs=1e-9) for k in a)


def same_history(a: list[dict], b: list[dict]) -> bool:
    """The logged (step, loss, lr) of two stage-2 runs: the same steps, losses and rates to float rounding."""
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def command(results: Path) -> list[str]:
    return [sys.executable, "-m", "benchmark.run", "table3", "--preset", "micro", "--executor", "local", "--jobs", "1",
            "--rows", ROW, "--results-dir", str(results), "--quiet"]


def env(**extra) -> dict:
    out = {k: v for k, v in os.environ.items() if k != KILL_AFTER_CHECKPOINT_ENV}
    out["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + out.get("PYTHONPATH", "")
    return {**out, **extra}


def run(results: Path, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(command(results), env=env(**extra), capture_output=True, text=True, timeout=DEADLINE_S)


def row_metrics(results: Path) -> dict:
    rows = json.loads((results / "micro" / "table3" / "summary.json").read_text())["rows"]
    row = next(r for r in rows if r["row"] == ROW)
    assert row["status"] == "done", row
    return row["metrics"]


def stage2(results: Path) -> dict:
    (folder,) = (results / "micro" / "runs" / "stage2").iterdir()
    return json.loads((folder / "metrics.json").read_text())


def checkpoints(results: Path) -> list[Path]:
    return sorted((results / "micro" / "runs" / "stage2").glob("*/out/checkpoints/step_*.pt"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = tmp_path_factory.mktemp("uninterrupted")
    done = run(results)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return row_metrics(results), stage2(results)


def test_stage2_killed_after_a_checkpoint_resumes_to_the_same_metrics(tmp_path, uninterrupted):
    killed = run(tmp_path, **{KILL_AFTER_CHECKPOINT_ENV: "3"})
    assert killed.returncode != 0, "the stage-2 job was not killed"
    assert [p.name for p in checkpoints(tmp_path)] == ["step_00000003.pt"]  # killed right after writing it
    resumed = run(tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    metrics, s2 = row_metrics(tmp_path), stage2(tmp_path)
    assert s2["resumed_from"] == 3
    assert same(metrics, uninterrupted[0]), (metrics, uninterrupted[0])
    assert same_history(s2["history"], uninterrupted[1]["history"])
    assert s2["final_loss"] == pytest.approx(uninterrupted[1]["final_loss"], rel=REL)


def test_launcher_killed_mid_stage2_then_the_same_command_finishes_the_same(tmp_path, uninterrupted):
    launcher = subprocess.Popen(command(tmp_path), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not checkpoints(tmp_path):  # the fault-injection point: stage 2 has written a checkpoint
            assert launcher.poll() is None, "the launcher ended before stage 2 wrote a checkpoint"
            assert time.monotonic() < deadline, "no stage-2 checkpoint before the deadline"
            time.sleep(0.05)
        launcher.send_signal(signal.SIGKILL)
    finally:
        launcher.wait(60)
    assert launcher.returncode == -signal.SIGKILL
    # the job it had started is alive without it (a killed launcher does not take its jobs along); a relaunch while it
    # runs reports it "running" and leaves it be, so wait for it to let go of its run lock, then relaunch
    while list((tmp_path / "micro" / "runs").glob("*/*/.lock")):
        assert time.monotonic() < deadline, "the orphaned job never released its run lock"
        time.sleep(0.05)
    again = run(tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert same(row_metrics(tmp_path), uninterrupted[0])
    assert same_history(stage2(tmp_path)["history"], uninterrupted[1]["history"])
