"""The command line: errors are one line + exit 2 with nothing written, --dry-run writes nothing, --status reads
states from run folders and Slurm."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import targets
from benchmark.launch import plan_targets
from benchmark.run import main
from benchmark.store import Store

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, cwd=REPO):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "benchmark.run", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["table9"], "unknown target 'table9'; choose from: baseline, table1"),
    (["table3", "--preset", "huge"], "unknown preset 'huge'; choose one of: micro, paper"),
    (["table3", "--executor", "cloud"], "unknown executor 'cloud'; choose one of: auto, debug, local, slurm"),
    (["table3", "--profile", "nope"], "unknown profile 'nope'; choose one of: cpu, paper"),
    (["table3", "--slurm", "partion=gpu"], "unknown key 'partion'"),
    (["table3", "--slurm", "stage2.grad_accumulation=0"], "grad_accumulation must be an integer >= 1, got 0"),
    (["table3", "--slurm", "stage2.grad_accumulation=x"], "grad_accumulation must be an integer >= 1, got 'x'"),
    ([], "no target given"),
])
def test_usage_errors_are_one_line_exit_2_and_write_nothing(tmp_path, args, message):
    proc = run_cli(*args, "--results-dir", str(tmp_path / "results"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and message in proc.stderr
    assert not (tmp_path / "results").exists()


def test_slurm_executor_without_sbatch_is_a_clear_error(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = run_cli("baseline", "--preset", "micro", "--executor", "slurm", "--results-dir", str(tmp_path / "r"),
                   env={"PATH": str(empty)})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "needs Slurm's `sbatch` on PATH" in proc.stderr
    assert "--executor local" in proc.stderr
    assert not (tmp_path / "r" / "micro" / "runs").exists()


def test_auto_executor_without_sbatch_runs_locally(monkeypatch):
    from benchmark.executors import resolve_executor

    monkeypatch.setattr("shutil.which", lambda name: None)
    assert resolve_executor("auto") == "local"
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr("benchmark.liveness.slurm_responds", lambda: False)
    notes = []
    assert resolve_executor("auto", log=notes.append) == "local" and "does not answer" in notes[0]
    monkeypatch.setattr("benchmark.liveness.slurm_responds", lambda: True)
    assert resolve_executor("auto") == "slurm"


def test_missing_paper_weights_stop_the_launch(tmp_path):
    proc = run_cli("baseline", "--preset", "paper", "--executor", "debug", "--results-dir", str(tmp_path / "r"),
                   env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()  # one line per missing prerequisite (preflight reports them all), then the end
    assert all(line.startswith("error: ") for line in lines) and lines[-1] == "error: nothing launched"
    assert any("huggingface-cli download facebook/DiT-XL-2-256" in line for line in lines)
    assert not (tmp_path / "r" / "paper" / "runs").exists()


def test_missing_imagenet_latents_stop_the_launch_with_the_prepare_command(tmp_path, monkeypatch, capsys):
    """ImageNet latents not prepared: one line naming `benchmark.prepare` (the other prerequisites are
    tests/test_preflight.py's business)."""
    from benchmark.run import main

    monkeypatch.setenv("GRAFTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GRAFTBENCH_IMAGENET", raising=False)
    assert main(["table3", "--preset", "paper", "--executor", "debug", "--results-dir", str(tmp_path / "r")]) == 2
    lines = capsys.readouterr().err.splitlines()
    latents = [line for line in lines if "ImageNet latents are not prepared" in line]
    assert len(latents) == 1 and "python -m benchmark.prepare imagenet --src" in latents[0]
    assert lines[-1] == "error: nothing launched"
    assert not (tmp_path / "r" / "paper" / "runs").exists()


def test_dry_run_lists_the_paper_grid_with_layers_and_cost_and_writes_nothing(tmp_path):
    proc = run_cli("--dry-run", "--preset", "paper", "table3", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    paper_rows = ["baseline"] + [f"{site}-{c}-full" for site in ("attn", "mlp") for c in ("random_init", "self_graft")]
    paper_rows += [f"attn-{op}-{s}" for op in ("hyena_se", "hyena_x", "hyena_y", "swa", "mamba2")
                   for s in ("interleaved50", "interleaved75", "full")]
    paper_rows += [f"mlp-{op}-{s}" for op in ("mlp_r3", "mlp_r6", "mlp_hyena_x")
                   for s in ("interleaved50", "interleaved75", "full")]
    assert len(paper_rows) == 29
    for row in paper_rows + ["control-teacher-stage2"]:
        assert f"  {row} " in out, row
    assert "layers [1,3,5,7,9,11,13,15,17,19,21,23,25,27] (14)" in out
    assert "layers [1,2,3,5,6,7,9,10,11,13,14,15,17,18,19,21,22,23,25,26,27] (21)" in out
    assert "280 stage1" in out and "27 stage2" in out  # 10 operators × 28 layers, each layer once
    assert "GPU-h" in out and "% of DiT-XL/2 pretraining compute" in out
    assert "stage2    8 GPUs, 8 tasks" in out
    assert "nothing was written" in out
    assert not (tmp_path / "r").exists()


def test_steps_option_selects_the_step_runner(tmp_path, capsys):
    """``--steps MODULE:FUNCTION`` hands the jobs another step runner (no environment variable does)."""
    from benchmark.fakes import steps as testing

    testing.CALLS.clear()
    args = ["baseline", "--preset", "micro", "--executor", "debug", "--results-dir", str(tmp_path), "--quiet"]
    assert main([*args, "--steps", "benchmark.fakes.steps:fake_execute"]) == 0
    assert sorted(k.split("/")[0] for k in testing.CALLS) == ["eval", "floor", "noise", "teacher"]
    assert main([*args, "--steps", "benchmark.fakes.steps:no_such_runner"]) == 2
    assert "--steps benchmark.fakes.steps:no_such_runner" in capsys.readouterr().err


def test_list_and_help():
    proc = run_cli("--list")
    assert proc.returncode == 0 and "table3     30 rows" in proc.stdout and "fig4b" in proc.stdout
    proc = run_cli("--help")
    assert proc.returncode == 0 and "--dry-run" in proc.stdout and "--executor" in proc.stdout
    proc = run_cli("--validate")
    assert proc.returncode == 0 and proc.stdout.startswith("ok:")


# ------------------------------------------------------------------------------------------------------ status
def write_status(store, node, **status):
    run = store.ensure_config(node.kind, node.run_id, node.config, node.deps, node.desc)
    store.update_status(run, **status)
    return run


def test_status_reads_states_from_run_folders_and_slurm(tmp_path, monkeypatch, capsys):
    store = Store(tmp_path, "tiny")
    (tp,) = plan_targets(store, targets.expand(["table1"]))
    rows = {rp.row.id: rp for rp in tp.row_plans}
    # baseline: done
    for n in rows["baseline"].nodes:
        run = write_status(store, n, state="done")
        store.finish(run, {"metrics": {"fid": 1.0}})
    # attn-l2: a stage-1 layer failed with an error line in its log
    s1 = [n for n in rows["attn-l2"].nodes if n.kind == "stage1"][0]
    run = write_status(store, s1, state="failed", error=None, cluster="local")
    run.logs.mkdir(parents=True, exist_ok=True)
    run.log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad operator\n")
    # attn-l1: its eval runs in this (live) process
    write_status(store, rows["attn-l1"].final, state="running", cluster="local", pid=os.getpid(),
                 host=os.uname().nodename, job_id=str(os.getpid()))
    # Slurm jobs: pending, finished without DONE, forgotten by Slurm
    write_status(store, rows["attn-huber"].final, state="pending", cluster="slurm", job_id="777")
    write_status(store, rows["mlp-l2"].final, state="running", cluster="slurm", job_id="778_3")
    write_status(store, rows["mlp-l1"].final, state="pending", cluster="slurm", job_id="779")
    asked = []

    def fake_slurm(ids):
        asked.append(sorted(ids))
        return {"777": "PENDING", "778_3": "COMPLETED"}

    monkeypatch.setattr("benchmark.liveness.slurm_states", fake_slurm)
    monkeypatch.setattr("benchmark.liveness.slurm_responds", lambda: True)
    assert main(["table1", "--status", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert " done" in lines["baseline"]
    assert " failed" in lines["attn-l2"] and "ValueError: bad operator" in lines["attn-l2"]
    assert " running" in lines["attn-l1"]
    assert " pending" in lines["attn-huber"] and "job 777" in lines["attn-huber"]
    assert " failed" in lines["mlp-l2"] and "Slurm job 778_3 ended (COMPLETED) without DONE" in lines["mlp-l2"]
    assert " failed" in lines["mlp-l1"] and "no longer known to Slurm" in lines["mlp-l1"]
    assert " missing" in lines["mlp-huber"]
    assert "9 rows: 1 done, 1 running, 1 pending, 3 failed, 3 missing" in out  # + the 2 activation_stats rows
    assert asked == [["777", "778_3", "779"]]  # one query for every recorded job
    assert not (tmp_path / "tiny" / "table1" / "summary.json").exists()  # --status only reads


def test_squeue_output_parsing(monkeypatch):
    from benchmark import liveness

    class Proc:
        def __init__(self, out, rc=0):
            self.stdout, self.returncode = out, rc

    calls = []

    def fake_run(cmd, timeout=30):
        calls.append(cmd[0])
        if cmd[0] == "squeue":
            return Proc("79_[1-5%1]|PENDING\n79_0|RUNNING\n")
        return Proc("JobID|State\n65|CANCELLED by 0\n")

    monkeypatch.setattr(liveness, "_run", fake_run)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)
    got = liveness.slurm_states(["79_0", "79_3", "65", "80"])
    assert got == {"79_0": "RUNNING", "79_3": "PENDING", "65": "CANCELLED"}
    assert calls == ["squeue", "sacct"]


def test_profiles_validate_and_override():
    import submitit

    from benchmark.profiles import SLURM_KEYS, Profile, ProfileError

    # the key list mirrors submitit's (dependencies are the driver's business, not a profile's)
    assert set(SLURM_KEYS) == (set(submitit.SlurmExecutor._valid_parameters()) - {"dependency"}) | {"max_num_timeout"}
    prof = Profile.load("paper", ["partition=h100", "stage2.timeout_min=2880", "slurm_qos=high", "stage1.mem_gb=32"])
    init, params = prof.executor_parameters("stage2")
    assert init == {"slurm_max_num_timeout": 3}
    assert params["slurm_partition"] == "h100" and params["timeout_min"] == 2880 and params["slurm_qos"] == "high"
    assert params["tasks_per_node"] == 8 and params["gpus_per_node"] == 8
    assert prof.resources("stage1")["mem_gb"] == 32 and prof.resources("eval")["mem_gb"] == 96
    for bad in ("stage9.mem_gb=1", "foo=1", "timeout_min=1:30", "nokey"):
        with pytest.raises(ProfileError):
            Profile.load("cpu", [bad])


def test_grad_accumulation_is_a_validated_driver_key_not_a_submitit_parameter(tmp_path):
    import json

    from benchmark.executors import make_launcher
    from benchmark.profiles import Profile, ProfileError

    paper = Profile.load("paper")
    assert paper.job_settings("stage2") == {"grad_accumulation": 1} and paper.job_settings("stage1") == {}
    prof = Profile.load("paper", ["stage2.grad_accumulation=4"])
    init, params = prof.executor_parameters("stage2")
    assert not any("accumulation" in k for k in [*init, *params])  # submitit would refuse it
    assert prof.all_job_settings() == {"stage2": {"grad_accumulation": 4}}
    assert "grad_accumulation=4" in prof.describe("stage2") and "accumulation" not in prof.describe("stage1")
    # every job of a launch carries the settings (a Slurm job reads them, not config.json)
    unit = make_launcher("debug", Store(tmp_path, "micro"), profile=prof).unit_job()
    assert unit.settings == {"stage2": {"grad_accumulation": 4}}
    for value in (0, "x", -2, 1.5, True):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"defaults": {}, "steps": {"stage2": {"grad_accumulation": value}}}))
        with pytest.raises(ProfileError, match="grad_accumulation must be an integer >= 1") as err:
            Profile.load(str(path))
        assert "\n" not in str(err.value)
    with pytest.raises(ProfileError, match="applies to stage2, stage1_online only"):
        Profile.load("cpu", ["stage1.grad_accumulation=2"])


def test_grad_accumulation_reaches_stage2_without_changing_its_run_id(tmp_path, monkeypatch, capsys):
    """``--slurm stage2.grad_accumulation=2`` on a micro run: the stage-2 record says 2 (micro-batches of 4), and a
    launch without it finds the same run id done (accumulation is not part of the run's identity)."""
    import json

    monkeypatch.setattr("benchmark.launch.build_tables", lambda *a, **k: None)
    args = ["table3", "--preset", "micro", "--executor", "debug", "--rows", "control-teacher-stage2",
            "--results-dir", str(tmp_path), "--quiet"]
    assert main(args + ["--slurm", "stage2.grad_accumulation=2"]) == 0, capsys.readouterr().out
    (stage2,) = (tmp_path / "micro" / "runs" / "stage2").iterdir()
    metrics = json.loads((stage2 / "metrics.json").read_text())
    assert metrics["grad_accumulation"] == 2 and metrics["micro_batch_size"] == 4 and metrics["complete"]
    config = json.loads((stage2 / "config.json").read_text())
    assert "accumulation" not in json.dumps(config) and "accumulation" not in json.dumps(metrics["stage2"])
    from benchmark.launch import all_nodes

    planned = [n.run_id for n in all_nodes(plan_targets(Store(tmp_path, "micro"), targets.expand(["table3"])))
               if n.kind == "stage2"]
    assert stage2.name in planned
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing to launch" in capsys.readouterr().out


def test_a_teacher_whose_weights_were_deleted_is_trained_again(tmp_path):
    from benchmark.dag import Planner
    from benchmark.status import node_states
    from graft_core.presets import get_preset

    store = Store(tmp_path, "tiny")
    node = Planner.teacher(get_preset("tiny"))
    weights = tmp_path / "cache" / "teachers" / "k"
    weights.mkdir(parents=True)
    run = write_status(store, node, state="running")
    store.finish(run, {"teacher_key": "k", "weights_dir": str(weights)})
    assert node_states(store, [node])[node.key].state == "done"
    weights.rmdir()
    state = node_states(store, [node])[node.key]
    assert state.state == "failed" and state.corrupt and "weights are gone" in state.error
