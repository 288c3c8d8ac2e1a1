"""Bad input ends in one clear line and the right exit code (issue: faults and bad input). Each case runs in seconds."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr, p.stderr
    assert len(lines) == 1 or lines[-1].startswith("python -m"), p.stderr  # argparse: usage line + error line
    return lines[-1]


def test_tables_build_refuses_a_missing_results_folder(tmp_path):
    p = cli("-m", "tables.build", "--results", str(tmp_path / "nope"))
    assert p.returncode == 2 and "is not a folder" in one_error_line(p)


def test_tables_build_refuses_an_unknown_preset(tmp_path):
    p = cli("-m", "tables.build", "--results", str(tmp_path), "--preset", "nosuch")
    assert p.returncode == 2 and "unknown preset 'nosuch'" in one_error_line(p)


@pytest.mark.parametrize("jobs", ["-3", "0", "two"])
def test_driver_refuses_a_bad_jobs_count(jobs):
    p = cli("-m", "benchmark.run", "table3", "--jobs", jobs, "--dry-run")
    assert p.returncode == 2 and "--jobs: expected an integer >= 1" in one_error_line(p)


def test_teacher_cli_refuses_an_unknown_preset():
    p = cli("-m", "graft_core.models.teacher", "--preset", "nosuch")
    assert p.returncode == 2 and "unknown preset 'nosuch'" in one_error_line(p)


def test_a_truncated_classifier_record_names_its_file(tmp_path):
    from graft_core.metrics.classifier import META_FILE, read_meta

    (tmp_path / META_FILE).write_text('{"sha256": "ab')
    with pytest.raises(ValueError, match=f"{META_FILE} is not valid JSON.*delete .* to retrain"):
        read_meta(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# prepare imagenet: undecodable images are skipped at index time and listed; CMYK / greyscale JPEGs are converted
# ---------------------------------------------------------------------------------------------------------------------
def _tiny_vae_folder(folder: Path) -> Path:
    """A random-init 8×-downsampling AutoencoderKL saved as a ``--vae`` folder (the SD-VAE's structure, tiny)."""
    from benchmark.fakes.prerequisites import sd_vae

    sd_vae(8, layers_per_block=1, norm_num_groups=4, sample_size=32).save_pretrained(folder)
    return folder


def _bad_imagenet(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = lambda: rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)  # noqa: E731
    for c in ("n01", "n02"):
        (root / c).mkdir(parents=True)
        Image.fromarray(pixels()).save(root / c / f"{c}_rgb.JPEG")
    Image.fromarray(pixels()).convert("CMYK").save(root / "n01" / "n01_cmyk.JPEG")
    Image.fromarray(pixels()).convert("L").save(root / "n02" / "n02_grey.JPEG")
    Image.fromarray(pixels()).save(root / "n02" / "n02_png.JPEG", format="PNG")  # PNG-in-JPEG, as ImageNet has
    (root / "n01" / "x.JPEG").write_bytes(np.random.default_rng(1).bytes(4096))  # not an image at all
    good = (root / "n02" / "n02_rgb.JPEG").read_bytes()
    (root / "n02" / "n02_trunc.JPEG").write_bytes(good[: len(good) // 2])  # cut off mid-scan
    return root


def test_prepare_imagenet_skips_undecodable_images_and_lists_them(tmp_path, capsys):
    from benchmark.prepare import main
    from graft_core.data import imagenet as inet

    src, out = _bad_imagenet(tmp_path / "train"), tmp_path / "out"
    args = ["imagenet", "--src", str(src), "--out", str(out), "--vae", str(_tiny_vae_folder(tmp_path / "vae")),
            "--resolution", "32", "--shard-size", "2", "--num-workers", "0", "--quiet", "--device", "cpu"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "skipped 2 image(s) that cannot be decoded" in captured.err and "skipped.txt" in captured.err
    index = inet.read_index(out / "train" / "index")
    assert index.files == ("n01/n01_cmyk.JPEG", "n01/n01_rgb.JPEG", "n02/n02_grey.JPEG", "n02/n02_png.JPEG",
                           "n02/n02_rgb.JPEG")
    listed = (out / "train" / "index" / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == ["n01/x.JPEG", "n02/n02_trunc.JPEG"]
    assert str(src) not in "".join(listed)  # the same list wherever the copy is mounted
    assert json.loads((out / "train" / "index" / "meta.json").read_text())["num_skipped"] == 2
    assert inet.done_shards(out / "train") == [0, 1, 2]  # every shard encoded: the CMYK/grey/PNG files too
    latents, labels = inet.load_latents(out / "train")
    assert latents.shape == (5, 4, 4, 4) and labels.tolist() == [0, 0, 1, 1, 1]
    assert json.loads(captured.out)["undecodable"] == 2


def test_prepare_imagenet_fails_in_one_line_when_a_class_ends_up_empty(tmp_path, capsys):
    from benchmark.prepare import main

    src = _bad_imagenet(tmp_path / "train")
    for f in (src / "n01").glob("*_*.JPEG"):  # only the undecodable x.JPEG is left in n01
        f.unlink()
    assert main(["imagenet", "--src", str(src), "--out", str(tmp_path / "out"), "--vae", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "n01: all 1 of its images cannot be decoded" in err


# ---------------------------------------------------------------------------------------------------------------------
# benchmark.run: a results dir that is a file / read-only / a full disk → one line, exit 2, nothing lost
# ---------------------------------------------------------------------------------------------------------------------
def test_driver_refuses_a_results_dir_that_is_a_file(tmp_path):
    (tmp_path / "results").write_text("")
    for extra in ((), ("--status",), ("--dry-run",)):
        p = cli("-m", "benchmark.run", "table3", "--preset", "micro", "--executor", "debug", "--results-dir",
                str(tmp_path / "results" / "sub"), *extra)
        line = one_error_line(p)
        assert p.returncode == 2 and f"{tmp_path / 'results'} is a file, not a folder" in line, p.stderr


def _driver(tmp_path, *args):
    from benchmark.run import main

    return main(["table3", "--preset", "micro", "--executor", "debug", "--quiet", "--results-dir", str(tmp_path),
                 "--steps", "benchmark.fakes.steps:fake_execute", *args])


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.strip()]


def test_driver_refuses_a_read_only_results_dir(tmp_path, capsys, monkeypatch):
    import os

    results = tmp_path / "ro"
    results.mkdir()
    if os.geteuid() == 0:  # root writes through 0555: refuse creating files there as a read-only mount would
        real_open = os.open

        def read_only(path, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR) and Path(path).resolve().is_relative_to(results):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", read_only)
    else:
        results.chmod(0o555)
    try:
        assert _driver(results, "--rows", "baseline") == 2
    finally:
        results.chmod(0o755)
    (line,) = _error_lines(capsys)
    assert line.startswith(f"error: --results-dir {results}: cannot write in {results}") and "pass a folder" in line
    assert not any(results.iterdir())


def test_a_full_disk_during_a_launch_is_one_line_and_loses_nothing(tmp_path, capsys, monkeypatch):
    import errno
    import os

    from benchmark import targets
    from benchmark.launch import all_nodes, plan_targets, select_rows
    from benchmark.store import Store

    assert _driver(tmp_path, "--rows", "attn-hyena_x-interleaved50") == 0  # teacher, captures, stage 1/2, eval
    store = Store(tmp_path, "micro")
    first = select_rows(plan_targets(store, targets.expand(["table3"])), ["attn-hyena_x-interleaved50"])
    done_before = {n.key: store.run(n.kind, n.run_id).done.stat().st_mtime_ns for n in all_nodes(first)}
    capsys.readouterr()

    real_fsync, calls = os.fsync, []

    def fsync_fills_the_disk(fd):  # the 40th record write onward: the disk is full
        calls.append(fd)
        if len(calls) >= 40:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_fills_the_disk)
    assert _driver(tmp_path) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}") and "No space left on device" in lines[0]
    assert "free space" in lines[0] and "finished runs are kept" in lines[0]
    assert not list(tmp_path.rglob(".*.tmp"))  # the atomic writer leaves no half-written temp files

    monkeypatch.setattr(os, "fsync", real_fsync)
    for key, mtime in done_before.items():  # nothing finished before the fault was touched
        assert store.run(*key.split("/")).done.stat().st_mtime_ns == mtime
    # space freed: the same command, from a new process (the runs this launcher had queued name it as their owner)
    p = cli("-m", "benchmark.run", "table3", "--preset", "micro", "--executor", "debug", "--quiet", "--results-dir",
            str(tmp_path), "--steps", "benchmark.fakes.steps:fake_execute")
    assert p.returncode == 0, p.stderr
    for key, mtime in done_before.items():  # ... without redoing what was finished
        assert store.run(*key.split("/")).done.stat().st_mtime_ns == mtime
    summary = json.loads((tmp_path / "micro" / "table3" / "summary.json").read_text())
    assert {r["status"] for r in summary["rows"]} == {"done"}


# ---------------------------------------------------------------------------------------------------------------------
# a finished run's corrupt config.json / status.json: rewritten from the plan, its dependents run, nothing redone
# ---------------------------------------------------------------------------------------------------------------------
def test_a_corrupt_config_of_a_finished_stage2_is_rewritten_and_its_eval_runs(tmp_path, capsys):
    from benchmark import targets
    from benchmark.launch import plan_targets, select_rows
    from benchmark.status import node_states
    from benchmark.store import Store

    row = "attn-hyena_x-interleaved50"
    assert _driver(tmp_path, "--rows", row) == 0
    store = Store(tmp_path, "micro")
    (rp,) = select_rows(plan_targets(store, targets.expand(["table3"])), [row])[0].row_plans
    s2 = next(n for n in rp.nodes if n.kind == "stage2")
    s2_run, eval_run = store.run(s2.kind, s2.run_id), store.run(rp.final.kind, rp.final.run_id)
    s2_done = s2_run.done.stat().st_mtime_ns
    s2_run.config.write_text('{"run_id": "' + s2.run_id[:5])  # truncated
    s2_run.status.write_text("{")
    store.invalidate(eval_run, "test: the eval must run again and read stage 2's config")
    assert node_states(store, rp.nodes, ask_slurm=False)[s2.key].repair  # detected where the state is decided
    capsys.readouterr()

    assert _driver(tmp_path, "--rows", row) == 0
    out = capsys.readouterr().out
    assert f"rewriting config.json of {s2.key}" in out and f"rewriting status.json of {s2.key}" in out
    assert s2_run.done.stat().st_mtime_ns == s2_done  # stage 2 kept, not re-run
    assert store.read_config(s2_run) == s2.config and store.read_status(s2_run)["state"] == "done"
    assert list(s2_run.folder.glob("config.json.invalid-*")) and list(s2_run.folder.glob("status.json.invalid-*"))
    assert eval_run.done.exists() and store.read_metrics(eval_run)
    assert not node_states(store, rp.nodes, ask_slurm=False)[s2.key].repair


# ---------------------------------------------------------------------------------------------------------------------
# tables.build on a truncated summary keeps the table it rendered before
# ---------------------------------------------------------------------------------------------------------------------
def test_tables_build_keeps_a_rendered_table_when_its_summary_is_truncated(tmp_path):
    results = tmp_path / "results"
    summary = results / "micro" / "table5" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"target": "table5", "preset": "micro", "git_rev": "x", "rows": [
        {"row": "baseline", "status": "done", "metrics": {"fid": 12.5, "is": 3.0}}]}))
    p = cli("-m", "tables.build", "--results", str(results), "--git-rev", "r")
    table = results / "micro" / "tables" / "table5.tex"
    assert p.returncode == 0, p.stderr
    good = table.read_bytes()
    assert b"12.5" in good
    summary.write_text(summary.read_text()[:40])  # truncated mid-write
    p = cli("-m", "tables.build", "--results", str(results), "--git-rev", "r")
    assert p.returncode == 1, p.stderr
    assert table.read_bytes() == good  # not replaced by "not yet run" placeholders
    (line,) = [x for x in p.stderr.splitlines() if "SKIPPED" in x]
    assert line.startswith("micro/table5: SKIPPED") and str(summary) in line and "invalid JSON" in line
    assert "Traceback" not in p.stderr


# ---------------------------------------------------------------------------------------------------------------------
# --status "log:" shows the error, never a progress bar
# ---------------------------------------------------------------------------------------------------------------------
def test_status_log_field_shows_the_error_line_not_the_progress_bar(tmp_path):
    from benchmark.status import log_error
    from benchmark.store import RunPaths, Store, last_error_line, tail

    store = Store(tmp_path, "micro")
    run = RunPaths(tmp_path / "micro" / "runs" / "stage2" / "abc")
    run.logs.mkdir(parents=True)
    bar = "".join(f"\rstage2:  {p}%|{'█' * (p // 10):<10}| {p * 25}/2500 [00:{p:02d}<00:15, 97.3it/s, loss=0.1]"
                  for p in range(0, 41, 4))
    run.log.write_text("[graftbench] start stage2 x (stage2/abc, job 7, attempt 1)\n"
                       "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                       "RuntimeError: CUDA error: an illegal memory access was encountered\n" + bar)
    assert len(tail(run.log)) == 5  # a redrawn bar is one line, as on a terminal
    assert log_error(store, run, {}) == "RuntimeError: CUDA error: an illegal memory access was encountered"
    err = tmp_path / "micro" / "submitit" / "7" / "7_0_log.err"
    err.parent.mkdir(parents=True)
    err.write_text(bar + "\nslurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-01-01T00:00 DUE TO TIME LIMIT ***\n")
    assert "DUE TO TIME LIMIT" in log_error(store, run, {"job_id": "7"})
    run.log.write_text("[graftbench] start stage2 x\n" + bar)  # killed: no error anywhere → no "log:" at all
    assert log_error(store, run, {}) is None
    assert last_error_line(tail(run.log)) == "[graftbench] start stage2 x"


# ---------------------------------------------------------------------------------------------------------------------
# run locks: a requeued job takes over its own lock; two waiters breaking one stale lock never both take it
# ---------------------------------------------------------------------------------------------------------------------
def test_a_requeued_slurm_job_takes_over_the_lock_it_left_itself(tmp_path, monkeypatch, capsys):
    import threading

    from submitit.core import utils

    from benchmark.jobs import RunUnit
    from benchmark.store import Store
    from benchmark.fakes.steps import FakeSteps

    store = Store(tmp_path, "micro")
    run = store.ensure_config("teacher", "abc", {"kind": "teacher"})
    # left by the first attempt of job 4242 on another node, hard-killed there; Slurm requeued the job
    run.lock.write_text(json.dumps({"host": "node-7", "pid": 4321, "job_id": "4242", "cluster": "slurm"}))
    monkeypatch.setattr("benchmark.liveness.slurm_states", lambda ids: {str(j): "RUNNING" for j in ids})
    out = {}

    def requeued_job():
        with utils.environment_variables(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="4242"):
            out.update(RunUnit(FakeSteps())(str(tmp_path), "micro", ["teacher/abc"], progress=False))

    job = threading.Thread(target=requeued_job, daemon=True)
    job.start()
    job.join(15)
    assert not job.is_alive(), "the requeued job waits on its own lock"
    assert out["done"] == ["teacher/abc"] and run.done.exists() and not run.lock.exists()
    assert "taking over the lock of teacher/abc: it names this job (slurm job 4242) itself" in capsys.readouterr().out


def test_two_waiters_breaking_one_stale_lock_never_both_take_it(tmp_path, monkeypatch, lock_waits):
    import os
    import threading
    import time

    from benchmark import jobs
    from benchmark.store import Store

    run = Store(tmp_path, "micro").run("eval", "abc")
    run.folder.mkdir(parents=True)
    run.lock.write_text(json.dumps({"host": "gone-node", "pid": 1, "job_id": "9", "cluster": "local"}))  # stale
    real_alive, first = jobs.holder_alive, {}

    def alive(holder):  # the second waiter found the lock stale; before it breaks it, the first breaks and takes it
        if holder.get("host") == "gone-node" and not first:
            first["lock"] = jobs.run_lock(run, {"job_id": "1", "cluster": "local"}, poll=0.05)
            first["lock"].__enter__()
            first["record"] = json.loads(run.lock.read_text())
        return real_alive(holder)

    monkeypatch.setattr(jobs, "holder_alive", alive)
    second = threading.Event()

    def wait_then_take(env):
        with jobs.run_lock(run, env, poll=0.05):
            second.set()

    t = threading.Thread(target=wait_then_take, args=({"job_id": "2", "cluster": "local"},), daemon=True)
    t.start()
    assert lock_waits.wait(10), "the second waiter never waited"
    assert first["record"]["job_id"] == "1" and not second.is_set()  # the second waiter lost the race: it waits
    assert json.loads(run.lock.read_text()) == first["record"]  # the first's lock, put back where it was
    first["lock"].__exit__(None, None, None)
    assert second.wait(5)
    t.join(5)
    assert not run.lock.exists() and not list(run.folder.glob("*.stale-*"))

    run.lock.write_text("")  # just created by O_EXCL, its record not written yet: being written, not stale
    second.clear()
    lock_waits.clear()
    t = threading.Thread(target=wait_then_take, args=({"job_id": "3", "cluster": "local"},), daemon=True)
    t.start()
    assert lock_waits.wait(10), "the waiter took a lock whose record is still being written"
    assert not second.is_set()
    os.utime(run.lock, (time.time() - 60, time.time() - 60))  # an old unreadable lock is stale
    assert second.wait(5)
    t.join(5)


# ---------------------------------------------------------------------------------------------------------------------
# local launches: a second launch waits for the teacher the first is producing; Ctrl-C is one line, rows "missing"
# ---------------------------------------------------------------------------------------------------------------------
GATED = ("-m", "benchmark.run", "table3", "--preset", "micro", "--executor", "local",
         "--steps", "benchmark.fakes.steps:gated_teacher_execute")


def _launch(tmp_path, gate, *args):
    """A launch in its own process group (as a terminal runs it), so that ``_kill`` ends its jobs too."""
    import os

    env = {**os.environ, "GRAFTBENCH_FAKE_GATE": str(gate), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *GATED, "--results-dir", str(tmp_path), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill(proc):
    import contextlib
    import os
    import signal

    if proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_for(condition, what, timeout=90.0):
    import time

    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _teacher_state(tmp_path):
    found = list((tmp_path / "micro" / "runs" / "teacher").glob("*/status.json"))
    return json.loads(found[0].read_text()).get("state") if found else None


def _lines_of(proc, lines):
    import threading

    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()


def test_an_overlapping_local_launch_waits_for_the_teacher_another_one_produces(tmp_path):
    from benchmark import targets
    from benchmark.launch import plan_targets, select_rows
    from benchmark.status import node_states
    from benchmark.store import Store

    gate = tmp_path / "teacher may finish"
    first, second = _launch(tmp_path, gate, "--rows", "attn-hyena_x-interleaved50"), None
    try:
        _wait_for(lambda: _teacher_state(tmp_path) == "running", "the first launch's teacher to run")
        second, lines = _launch(tmp_path, gate, "--rows", "baseline"), []
        _lines_of(second, lines)
        _wait_for(lambda: any("waiting for input teacher/" in line for line in lines), "the second launch to wait")
        gate.write_text("")
        assert second.wait(120) == 0, second.stderr.read()
        assert first.wait(120) == 0, first.stderr.read()
    finally:
        _kill(first)
        _kill(second)
    (line,) = [line for line in lines if "waiting for input teacher/" in line]
    assert "running in local job" in line and "(pid " in line
    assert not any("is not done" in line for line in lines)
    store = Store(tmp_path, "micro")
    plans = select_rows(plan_targets(store, targets.expand(["table3"])), ["baseline", "attn-hyena_x-interleaved50"])
    rows = plans[0].row_plans
    states = node_states(store, [n for rp in rows for n in rp.nodes], ask_slurm=False)
    assert {states[rp.final.key].state for rp in rows} == {"done"}
    teacher = next(n for n in rows[0].nodes if n.kind == "teacher")
    assert store.read_status(store.run(teacher.kind, teacher.run_id))["attempts"] == 1  # produced once


def test_ctrl_c_of_a_local_launch_is_one_line_and_leaves_the_rows_missing(tmp_path):
    import os
    import signal

    from benchmark import targets
    from benchmark.launch import all_nodes, plan_targets
    from benchmark.status import node_states
    from benchmark.store import Store

    proc = _launch(tmp_path, tmp_path / "never", "--rows", "baseline")
    try:
        _wait_for(lambda: _teacher_state(tmp_path) == "running", "the teacher to run")
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the launcher, submitit's controller, the job
        out, err = proc.communicate(timeout=60)
    finally:
        _kill(proc)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["interrupted; finished runs are kept, a re-run resumes"]
    assert "Traceback" not in out
    store = Store(tmp_path, "micro")
    states = node_states(store, all_nodes(plan_targets(store, targets.expand(["table3"]))), ask_slurm=False)
    assert {s.state for s in states.values()} == {"missing"}


# ---------------------------------------------------------------------------------------------------------------------
# --executor debug: a step that fills the disk inside its own job is one line too
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lasting", [True, False], ids=["disk-stays-full", "space-freed-at-once"])
def test_a_full_disk_inside_a_step_of_the_debug_executor_is_one_line(tmp_path, capsys, monkeypatch, lasting):
    import errno
    import os

    from benchmark.run import main
    from benchmark.store import atomic_write_json
    from benchmark.fakes.steps import FakeSteps

    fake, real_fsync = FakeSteps(), os.fsync

    def full(fd):
        if not lasting:
            monkeypatch.setattr(os, "fsync", real_fsync)
        raise OSError(errno.ENOSPC, "No space left on device")

    def step(ctx):  # the disk fills up while the eval writes its samples
        if ctx.kind == "eval":
            monkeypatch.setattr(os, "fsync", full)
            atomic_write_json(ctx.run.out / "samples.json", {"n": 40})
        return fake(ctx)

    rc = main(["table3", "--preset", "micro", "--executor", "debug", "--rows", "baseline", "--results-dir",
               str(tmp_path)], execute=step)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err, captured.out + captured.err
    (log,) = (tmp_path / "micro" / "runs" / "eval").glob("*/logs/step.log")
    assert "Traceback" in log.read_text()  # the traceback is kept, in the step's log
    if lasting:  # the failure cannot even be recorded: the launch stops, in one line
        (line,) = [x for x in captured.err.splitlines() if x.strip()]
        assert rc == 2 and line.startswith("error: ") and "No space left on device" in line and "free space" in line
    else:  # recorded as a failed run: one progress line says why and where the traceback is
        (line,) = [x for x in captured.out.splitlines() if "FAILED" in x]
        assert rc == 1 and not captured.err.strip()
        assert "samples.json" in line and "No space left on device" in line and f"(traceback in {log})" in line


# ---------------------------------------------------------------------------------------------------------------------
# seq_len = 0: the one command line that takes a sequence length refuses it in one line
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", ["0", "-4"])
def test_the_operator_benchmark_refuses_a_sequence_length_below_one(n):
    p = cli("-m", "benchmarks.operators", "--quick", "--n", "64", n)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr  # was a ZeroDivisionError at N = 0
    assert p.stderr.splitlines()[-1] == f"operators.py: error: argument --n: expected a sequence length >= 1, got '{n}'"


def test_a_plan_refuses_seq_len_zero_however_it_is_made():
    from graft_core.grafting.plan import GraftPlan, make_plan

    for make in (lambda: make_plan("mlp", "mlp_hyena_x", "full", num_layers=4, seq_len=0),
                 lambda: GraftPlan.from_dict({"site": "mlp", "operator": "mlp_hyena_x", "layers": [0], "seq_len": 0})):
        with pytest.raises(ValueError, match=r"^seq_len must be a positive int or None, got 0$"):
            make()


# ---------------------------------------------------------------------------------------------------------------------
# benchmark.prepare: bad numeric arguments are argparse's one line, exit 2 (before: ValueError traceback at --resolution 0)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (("imagenet", "--src", "x", "--resolution", "0"), "--resolution: expected an integer >= 1, got 0"),
    (("imagenet", "--src", "x", "--shard-size", "-5"), "--shard-size: expected an integer >= 1, got -5"),
    (("imagenet", "--src", "x", "--batch-size", "two"), "--batch-size: expected an integer >= 1, got 'two'"),
    (("imagenet", "--src", "x", "--num-workers", "-1"), "--num-workers: expected an integer >= 0, got -1"),
    (("subsets", "--per-class", "stage1=0"), "--per-class: expected NAME=COUNT with COUNT an integer >= 1"),
], ids=["resolution", "shard-size", "batch-size", "workers", "per-class"])
def test_prepare_refuses_bad_numbers_in_one_line(args, says, tmp_path):
    p = cli("-m", "benchmark.prepare", *args, "--out", str(tmp_path / "out"))
    assert p.returncode == 2 and says in one_error_line(p), p.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------------
# B11–B13: placeholder prerequisites stop a real paper-smoke launch in preflight: one line each, exit 2, nothing launched
# (tests/test_preflight.py checks the lines of benchmark.preflight.problems; this is the driver's path)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_prereqs(tmp_path_factory):
    """The fake prerequisites a paper-smoke table3 baseline needs (DiT, SD-VAE, latents + subsets, Inception, ADM
    reference), made directly (no PixArt, a 4-image reference batch)."""
    from benchmark.fakes import prerequisites as fakes

    root = tmp_path_factory.mktemp("smoke")
    hf = root / "hf"
    fakes.make_dit(hf)
    fakes.make_vae(hf)
    inception = fakes.make_inception_weights(root / "inception" / fakes.INCEPTION_FILE)
    reference = fakes.make_adm_reference(root / "adm" / "VIRTUAL_imagenet256_labeled.npz", num_images=4,
                                         inception=inception)
    latents = fakes.encode_latents(root, hf)
    return {"HF_HOME": str(hf), "HF_HUB_OFFLINE": "1", "GRAFTBENCH_INCEPTION_WEIGHTS": str(inception),
            "GRAFTBENCH_ADM_REFERENCE": str(reference), "GRAFTBENCH_IMAGENET": str(latents)}


def _break_snapshot(env, tmp_path):  # B11: the DiT snapshot folder exists but is empty
    import shutil

    from benchmark.fakes import prerequisites as fakes

    hf = tmp_path / "hf"
    shutil.copytree(env["HF_HOME"], hf)
    snap = fakes._snapshot(hf, fakes.DIT_REPO)
    shutil.rmtree(snap)
    snap.mkdir()
    return {"HF_HOME": str(hf)}


def _break_subsets(env, tmp_path):  # B12: a junk subsets.json in the prepared latents folder
    import shutil

    latents = tmp_path / "latents"
    shutil.copytree(env["GRAFTBENCH_IMAGENET"], latents)
    (latents / "subsets" / "subsets.json").write_text("junk")
    return {"GRAFTBENCH_IMAGENET": str(latents)}


def _break_inception(env, tmp_path):  # B13: a 0-byte Inception weights file
    (tmp_path / "inception.pth").write_bytes(b"")
    return {"GRAFTBENCH_INCEPTION_WEIGHTS": str(tmp_path / "inception.pth")}


@pytest.mark.parametrize("breaks, says", [
    (_break_snapshot, "facebook/DiT-XL-2-256: transformer/config.json is not in the Hugging Face cache; on a machine "
                      "with internet run `huggingface-cli download facebook/DiT-XL-2-256`"),
    (_break_subsets, "subsets.json is not a subsets manifest (corrupt?): re-run `python -m benchmark.prepare subsets`"),
    (_break_inception, "inception.pth is not a loadable state dict (EOFError); download "
                       "weights-inception-2015-12-05-6726825d.pth"),
], ids=["B11-empty-hf-snapshot", "B12-junk-subsets-json", "B13-empty-inception-file"])
def test_a_placeholder_prerequisite_stops_a_paper_smoke_launch_in_one_line(smoke_prereqs, breaks, says, tmp_path,
                                                                            monkeypatch, capsys):
    from benchmark.preflight import problems
    from benchmark.run import main
    from graft_core.presets import get_preset

    for k, v in smoke_prereqs.items():
        monkeypatch.setenv(k, v)
    kinds = {"teacher", "eval"}  # table3's baseline row
    assert problems({"s": (get_preset("paper-smoke"), kinds)}) == []  # intact, they pass: the one break is the cause
    for k, v in breaks(smoke_prereqs, tmp_path).items():
        monkeypatch.setenv(k, v)
    results = tmp_path / "r"
    assert main(["table3", "--preset", "paper-smoke", "--rows", "baseline", "--executor", "debug", "--quiet",
                 "--results-dir", str(results)]) == 2
    problem, end = _error_lines(capsys)
    assert problem.startswith("error: ") and says in problem and end == "error: nothing launched"
    assert not results.exists()  # nothing launched, nothing written
