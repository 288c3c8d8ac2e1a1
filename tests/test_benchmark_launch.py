"""Launching: only what is missing, shared steps once, failures isolated, corrupt records re-run, Slurm DAGs.

Every launch is handed ``benchmark.fakes.steps.FakeSteps`` as its step runner (records derived from the run id), so these
tests exercise the driver — plan, submitit, jobs, records, summaries — in seconds without torch.
"""
import json
import os

import pytest
from submitit.slurm import test_slurm

from benchmark import targets
from benchmark.executors import DebugLauncher, ProcessLauncher, launch, make_launcher
from benchmark.jobs import RunUnit, run_lock, setup_distributed
from benchmark.launch import all_nodes, make_units, plan_targets, select_rows
from benchmark.profiles import Profile
from benchmark.run import main
from benchmark.status import node_states
from benchmark.store import Store
from benchmark.fakes.steps import CALLS, FakeSteps, fake_steps

SUMMARY_KEYS = {"target", "preset", "git_rev", "rows"}
ROW_KEYS = {"row", "label", "group", "site", "operator", "ratio", "strategy", "status", "metrics", "efficiency",
            "extra"}
METRIC_KEYS = {"is", "fid", "sfid", "precision", "recall", "kid", "class_acc"}


@pytest.fixture(autouse=True)
def _no_tables(monkeypatch):
    """Table rendering is the tables package's business (and its own tests); keep these runs lean."""
    monkeypatch.setattr("benchmark.launch.build_tables", lambda *a, **k: None)


def cli(tmp_path, *args, execute=None):
    return main([*args, "--results-dir", str(tmp_path), "--quiet"], execute=execute or FakeSteps())


def plans_of(store, names, rows=None):
    return select_rows(plan_targets(store, targets.expand(names)), rows)


def summary(tmp_path, preset, target):
    return json.loads((tmp_path / preset / target / "summary.json").read_text())


def test_launch_runs_each_shared_step_once_and_a_second_launch_nothing(tmp_path, capsys):
    assert cli(tmp_path, "table1", "table3", "--preset", "tiny", "--executor", "debug", execute=fake_steps()) == 0
    first = list(CALLS)
    assert len(first) == len(set(first))  # no run executed twice
    store = Store(tmp_path, "tiny")
    planned = all_nodes(plan_targets(store, targets.expand(["table1", "table3"])))
    assert sorted(first) == sorted(n.key for n in planned)
    capsys.readouterr()
    assert cli(tmp_path, "table1", "table3", "--preset", "tiny", "--executor", "debug", execute=fake_steps()) == 0
    assert CALLS == []
    out = capsys.readouterr().out
    assert "nothing to launch" in out and "table3: 30 rows: 30 done" in out


def test_summary_schema(tmp_path):
    from benchmark.comparisons import PAIRS

    assert cli(tmp_path, "all", "--preset", "tiny", "--executor", "debug") == 0
    for target in ("baseline", "table1", "table2", "table3", "fig2", "fig4a", "fig4b"):
        s = summary(tmp_path, "tiny", target)
        # the paired comparisons sit in a section of their own (issue 29): only the targets with close calls have it
        assert set(s) == SUMMARY_KEYS | ({"comparisons"} if target in PAIRS else set()), target
        assert s["target"] == target and s["preset"] == "tiny"
        for row in s["rows"]:
            assert set(row) == ROW_KEYS, row["row"]
            assert row["status"] == "done"
            assert row["metrics"] == {} or set(row["metrics"]) == METRIC_KEYS
            assert row["efficiency"] == {} or set(row["efficiency"]) == {"d_flops_op", "d_flops_ft", "d_param"}
            assert row["ratio"] in (50, 75, 100, None)
    t3 = {r["row"]: r for r in summary(tmp_path, "tiny", "table3")["rows"]}
    assert t3["attn-hyena_x-interleaved50"]["operator"] == "hyena_x" and t3["mlp-mlp_r3-full"]["operator"] == "mlp_r3"
    assert t3["attn-hyena_x-interleaved50"]["efficiency"]["d_flops_op"] == -50.0
    assert t3["attn-hyena_x-interleaved50"]["extra"]["layers"] == [1, 3, 5, 7]
    assert t3["baseline"]["efficiency"] == {} and t3["baseline"]["group"] == "Baseline"
    t1 = {r["row"]: r for r in summary(tmp_path, "tiny", "table1")["rows"]}
    assert t1["attn-huber"]["extra"]["objective"] == "huber" and "stage1_val_mse" in t1["attn-huber"]["extra"]
    t2 = {r["row"]: r for r in summary(tmp_path, "tiny", "table2")["rows"]}
    assert t2["attn-self_graft-full-s1_0.63-s2_5"]["extra"]["stage1_data"] == 0.63
    assert t2["attn-self_graft-full-s1_0.63-s2_5"]["extra"]["stage2_data"] == 5.0
    loc = summary(tmp_path, "tiny", "fig2")["rows"][0]["extra"]["locality"]
    assert loc["k"] == [1, 2, 4, 8, 16, 32] and len(loc["layers"]) == 8 and len(loc["layers"][0]) == 6
    fa = {r["row"]: r for r in summary(tmp_path, "tiny", "fig4a")["rows"]}
    assert fa["attn-mamba2-interleaved50-data20"]["extra"]["stage2_data"] == 20.0
    fb = {r["row"]: r for r in summary(tmp_path, "tiny", "fig4b")["rows"]}
    assert fb["attn-hyena_x-deep"]["extra"]["strategy"] == "deep"
    base = tmp_path / "tiny" / "baseline"
    for name in ("metrics.json", "metric_floor.json", "noise_control.json"):
        assert "metrics" in json.loads((base / name).read_text())
    # the skipped external targets are reported as missing, not dropped
    assert {r["status"] for r in summary(tmp_path, "tiny", "table5")["rows"]} <= {"missing", "done"}


def test_top_and_low_local_rows_wait_for_the_locality_run(tmp_path):
    assert cli(tmp_path, "fig4b", "--preset", "tiny", "--executor", "debug") == 0
    rows = {r["row"]: r for r in summary(tmp_path, "tiny", "fig4b")["rows"]}
    # fake locality (benchmark.fakes.steps): layer score ∝ (5·i mod 7) → top = 1, 2, 4, 5; low = 0, 3, 6, 7
    assert rows["attn-hyena_x-top_local"]["extra"]["layers"] == [1, 2, 4, 5]
    assert rows["attn-hyena_x-low_local"]["extra"]["layers"] == [0, 3, 6, 7]
    assert rows["attn-hyena_x-deep"]["extra"]["layers"] == [4, 5, 6, 7]
    assert all(r["status"] == "done" for r in rows.values())


def test_a_failed_step_fails_its_row_only_and_is_relaunched(tmp_path, capsys):
    store = Store(tmp_path, "tiny")
    (tp,) = plan_targets(store, targets.expand(["table1"]))
    bad = next(n for n in tp.row_plans[1].nodes if n.kind == "stage1")  # attn-l2, layer 0
    assert cli(tmp_path, "table1", "--preset", "tiny", "--executor", "debug", execute=fake_steps(fail=bad.run_id)) == 1
    rows = {r["row"]: r for r in summary(tmp_path, "tiny", "table1")["rows"]}
    assert rows["attn-l2"]["status"] == "failed" and "fake failure" in rows["attn-l2"]["extra"]["error"]
    assert [r["status"] for k, r in rows.items() if k != "attn-l2"] == ["done"] * 8  # incl. 2 activation_stats
    capsys.readouterr()
    assert cli(tmp_path, "table1", "--preset", "tiny", "--status") == 0
    out = capsys.readouterr().out
    assert "9 rows: 8 done, 1 failed" in out and "FakeStepError: fake failure" in out and "step.log" in out
    assert cli(tmp_path, "table1", "--preset", "tiny", "--executor", "debug", execute=fake_steps()) == 0
    eval_of_row = tp.row_plans[1].final.key
    assert sorted(CALLS) == sorted([bad.key, eval_of_row])  # the failed layer, then the row it blocked
    status = json.loads(store.run(bad.kind, bad.run_id).status.read_text())
    assert status["attempts"] == 2 and status["state"] == "done"


def test_a_corrupt_record_is_reported_and_rerun(tmp_path, capsys):
    assert cli(tmp_path, "baseline", "--preset", "tiny", "--executor", "debug") == 0
    store = Store(tmp_path, "tiny")
    (tp,) = plan_targets(store, targets.expand(["baseline"]))
    final = tp.row_plans[0].final
    run = store.run(final.kind, final.run_id)
    run.metrics.write_text('{"metrics": {"fid": 1.')  # truncated
    (tmp_path / "tiny" / "baseline" / "summary.json").write_text("{not json")
    capsys.readouterr()
    assert cli(tmp_path, "baseline", "--preset", "tiny", "--status") == 0
    assert "corrupt record" in capsys.readouterr().out
    assert cli(tmp_path, "baseline", "--preset", "tiny", "--executor", "debug", execute=fake_steps()) == 0
    assert CALLS == [final.key]
    assert json.loads(run.metrics.read_text())["metrics"]["fid"] is not None
    assert list(run.folder.glob("metrics.json.invalid-*")) and list(run.folder.glob("DONE.invalid-*"))
    assert summary(tmp_path, "tiny", "baseline")["rows"][0]["status"] == "done"
    assert "re-running" in capsys.readouterr().out


def test_local_executor_runs_rows_in_subprocesses(tmp_path, capsys):
    assert cli(tmp_path, "table1", "--preset", "micro", "--executor", "local", "--rows", "baseline,attn-l1") == 0
    out = capsys.readouterr().out
    assert "[1/3] prep: teacher and captures" in out and "launched" in out
    rows = {r["row"]: r["status"] for r in summary(tmp_path, "micro", "table1")["rows"]}
    assert rows["baseline"] == rows["attn-l1"] == "done" and rows["mlp-l2"] == "missing"
    status = json.loads(next((tmp_path / "micro" / "runs" / "eval").glob("*/status.json")).read_text())
    assert status["cluster"] == "local" and status["pid"] != os.getpid()


# ------------------------------------------------------------------------------------------------------ Slurm
@pytest.fixture
def slurm(monkeypatch):
    monkeypatch.setattr("benchmark.executors.max_array_size", lambda: 3)
    with test_slurm.mocked_slurm() as mock:
        yield mock


def process(store, mock, job_ids):
    """Run submitted jobs 'on the compute node' (in this process), in submission order."""
    from submitit.core import submission
    from submitit.slurm.slurm import SlurmJob

    for jid in job_ids:
        job = SlurmJob(folder=store.submitit_dir / "%j", job_id=jid)
        with mock.job_context(jid):
            submission.process_job(job.paths.folder)


def sbatch_text(store, job_id):
    from submitit.slurm.slurm import SlurmJob

    return SlurmJob(folder=store.submitit_dir / "%j", job_id=job_id.split("_")[0]).paths.submission_file.read_text()


def test_slurm_submits_each_row_as_a_dag_with_afterok(tmp_path, slurm):
    store = Store(tmp_path, "tiny")
    launcher = make_launcher("slurm", store, profile=Profile.load("cpu"), target_names=["table3"],
                             log=lambda *a: None, execute=FakeSteps())
    result = launch(launcher, plans_of(store, ["table3"], ["baseline", "attn-hyena_x-*"]))
    kinds = [u.kind for u in result.units]
    # teacher, eval(baseline), one job for both captures (the teacher loaded once), then per row: stage1 array,
    # stage2, eval
    assert kinds == ["teacher", "eval", "capture", "stage1", "stage2", "eval", "stage1", "stage2",
                     "eval", "stage1", "stage2", "eval"]
    assert [len(u.nodes) for u in result.units if u.kind == "capture"] == [2]
    arrays = [u for u in result.units if u.array]
    assert [len(u.nodes) for u in arrays] == [4, 2, 2]  # layers 1,3,5,7; then 2,6 (75 %); then 0,4 (100 %)
    # the 4-layer array is split in chunks of MaxArraySize (patched to 3): 3 + 1
    assert [len(u.job_ids) for u in arrays] == [2, 1, 1]
    text = sbatch_text(store, arrays[0].job_ids[0])
    assert "#SBATCH --array=0-2%2" in text
    capture_ids = [u.job_ids[0] for u in result.units if u.kind == "capture"]
    assert f"#SBATCH --dependency=afterok:{':'.join(capture_ids)}" in text
    assert "#SBATCH --kill-on-invalid-dep=yes" in text
    # the full row's stage 2 waits for the teacher and every job holding one of its 8 layers (2 + 1 + 1 chunks)
    stage2_full = sbatch_text(store, [u for u in result.units if u.kind == "stage2"][-1].job_ids[0])
    dep = next(line for line in stage2_full.splitlines() if "--dependency" in line)
    teacher = result.units[0].job_ids
    assert sorted(dep.split("=afterok:")[1].split(":")) == sorted(teacher + [j for u in arrays for j in u.job_ids])
    # while queued, a second launch submits nothing (Slurm cannot be asked here: the recorded state stands)
    again = launch(launcher, plans_of(store, ["table3"], ["baseline", "attn-hyena_x-*"]))
    assert again.units == []
    # run everything "on the node", in order; then nothing is left and the summary is complete
    process(store, slurm, result.tasks)
    states = node_states(store, all_nodes(plan_targets(store, targets.expand(["table3"]))))
    assert {k for k, s in states.items() if s.state == "done"} >= {n.key for u in result.units for n in u.nodes}
    rows = {r["row"]: r["status"] for r in summary(tmp_path, "tiny", "table3")["rows"]}
    assert rows["attn-hyena_x-full"] == rows["baseline"] == "done"  # written by the collect job
    assert "afterany" in sbatch_text(store, result.tasks[-1])


def test_paper_stage2_is_one_multi_gpu_job_and_profiles_apply(tmp_path, slurm):
    store = Store(tmp_path, "paper")
    prof = Profile.load("paper", ["partition=h100", "account=proj", "stage2.timeout_min=2880"])
    launcher = make_launcher("slurm", store, profile=prof, target_names=["table3"], log=lambda *a: None,
                             execute=FakeSteps())
    result = launch(launcher, plans_of(store, ["table3"], ["attn-hyena_x-interleaved50"]))
    stage2 = sbatch_text(store, next(u for u in result.units if u.kind == "stage2").job_ids[0])
    for line in ("#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8", "#SBATCH --partition=h100",
                 "#SBATCH --account=proj", "#SBATCH --time=2880", "#SBATCH --signal=USR2@180"):
        assert line in stage2, line
    stage1 = sbatch_text(store, next(u for u in result.units if u.kind == "stage1").job_ids[0])
    assert "#SBATCH --array=0-2%3" in stage1 and "#SBATCH --gpus-per-node=1" in stage1  # 14 layers, chunks of 3


def test_units_locally_group_a_row_after_a_shared_prep_job(tmp_path):
    store = Store(tmp_path, "tiny")
    plans = plan_targets(store, targets.expand(["table3"]))
    states = node_states(store, all_nodes(plans), ask_slurm=False)
    units = make_units(plans, states, "debug")
    assert units[0].kind == "prep" and {n.kind for n in units[0].nodes} == {"teacher", "capture"}
    assert len(units) == 1 + 30 and all(u.kind == "row" for u in units[1:])
    keys = [n.key for u in units for n in u.nodes]
    assert len(keys) == len(set(keys)) == len(all_nodes(plans))
    full = next(u for u in units if u.name.endswith("attn-hyena_x-full"))
    assert [n.kind for n in full.nodes] == ["stage1", "stage1", "stage2", "eval"]  # only layers 0 and 4 are new
    assert {units.index(u) for u in units if u.name.endswith("attn-hyena_x-interleaved50")} <= \
        {i for i in full.deps}


# ------------------------------------------------------------------------------------------------------ job pieces
def test_run_unit_is_checkpointable_with_the_same_arguments_and_step_runner():
    import pickle

    import submitit

    unit = RunUnit(FakeSteps(fail="stage1"))
    assert isinstance(unit, submitit.helpers.Checkpointable)
    delayed = unit.checkpoint("results", "tiny", ["stage2/abc"])
    assert delayed.function is unit and delayed.args == ("results", "tiny", ["stage2/abc"])
    assert pickle.loads(pickle.dumps(unit)).execute == FakeSteps(fail="stage1")  # travels with the job


def test_distributed_environment_from_the_job(monkeypatch):
    for var in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.setenv(var, "stale")  # recorded by monkeypatch, so that teardown removes what the test sets
        monkeypatch.delenv(var)
    setup_distributed({"world_size": 1, "rank": 0, "local_rank": 0, "job_id": "5", "hostnames": ["a"]})
    assert "WORLD_SIZE" not in os.environ
    monkeypatch.setenv("WORLD_SIZE", "4")  # e.g. a launcher started under torchrun: a 1-task job must not wait for 4
    setup_distributed({"world_size": 1, "rank": 0, "local_rank": 0, "job_id": "5", "hostnames": ["a"]})
    assert (os.environ["WORLD_SIZE"], os.environ["RANK"]) == ("1", "0")
    setup_distributed({"world_size": 8, "rank": 3, "local_rank": 3, "job_id": "1234_5", "hostnames": ["n1", "n2"]})
    assert (os.environ["MASTER_ADDR"], os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == \
        ("n1", "3", "8", "3")
    assert os.environ["MASTER_PORT"] == str(20000 + 1234)


def test_stale_lock_is_broken_and_a_live_one_waited_for(tmp_path, lock_waits):
    import threading

    store = Store(tmp_path, "tiny")
    run = store.run("eval", "abc")
    run.folder.mkdir(parents=True)
    env = {"job_id": "1", "cluster": "debug"}
    run.lock.write_text(json.dumps({"host": os.uname().nodename, "pid": 2 ** 22 + 7}))  # no such process
    with run_lock(run, env):
        assert json.loads(run.lock.read_text())["pid"] == os.getpid()
    assert not run.lock.exists()
    order = []
    with run_lock(run, env):
        t = threading.Thread(target=lambda: (run_lock(run, env, poll=0.05).__enter__(), order.append("second")))
        t.start()
        assert lock_waits.wait(10), "the second taker never waited for the held lock"
        order.append("first released")
    t.join(5)
    assert order == ["first released", "second"]


def test_slurm_rows_waiting_for_locality_are_submitted_by_a_replan_job(tmp_path, slurm):
    import pickle

    from submitit.slurm.slurm import SlurmJob

    store = Store(tmp_path, "tiny")
    launcher = make_launcher("slurm", store, profile=Profile.load("cpu"), target_names=["fig4b"],
                             log=lambda *a: None, execute=FakeSteps())
    result = launch(launcher, plans_of(store, ["fig4b"]))
    replan = [t for t in result.tasks if "gb-replan" in sbatch_text(store, t)]
    assert len(replan) == 1
    locality = next(u for u in result.units if u.kind == "locality").job_ids[0]
    assert f"--dependency=afterok:{locality}" in sbatch_text(store, replan[0])
    process(store, slurm, result.tasks)  # … the replan job submits the top/low-local rows
    job = SlurmJob(folder=store.submitit_dir / "%j", job_id=replan[0])
    outcome, value = pickle.loads(job.paths.result_pickle.read_bytes())
    assert outcome == "success" and value["tasks"]
    process(store, slurm, value["tasks"])
    rows = {r["row"]: r for r in summary(tmp_path, "tiny", "fig4b")["rows"]}
    assert rows["attn-hyena_x-top_local"]["status"] == "done"
    assert rows["attn-hyena_x-top_local"]["extra"]["layers"] == [1, 2, 4, 5]


def test_slurm_searched_rows_are_submitted_by_a_replan_job_after_their_searches(tmp_path, slurm):
    """The search target on Slurm: each search is one job after its stage-1 arrays; one replan job waits for every
    search (and fig2's locality run) and submits the searched rows' stage 2 and eval; then every row is done."""
    import pickle

    from submitit.slurm.slurm import SlurmJob

    store = Store(tmp_path, "tiny")
    launcher = make_launcher("slurm", store, profile=Profile.load("cpu"), target_names=["search"],
                             log=lambda *a: None, execute=FakeSteps())
    result = launch(launcher, plans_of(store, ["search"]))
    searches = [u.job_ids[0] for u in result.units if u.kind == "search"]
    assert len(searches) == 10  # 3 + 3 strategies × 2 budgets for MHA, 2 × 2 for the MLP
    (replan,) = [t for t in result.tasks if "gb-replan" in sbatch_text(store, t)]
    assert all(j in sbatch_text(store, replan) for j in searches)
    process(store, slurm, result.tasks)
    outcome, value = pickle.loads(SlurmJob(folder=store.submitit_dir / "%j", job_id=replan).paths.result_pickle
                                  .read_bytes())
    assert outcome == "success" and value["tasks"]
    process(store, slurm, value["tasks"])
    rows = {r["row"]: r for r in summary(tmp_path, "tiny", "search")["rows"]}
    assert all(r["status"] == "done" for r in rows.values()), {k: r["status"] for k, r in rows.items()}
    assert len(rows["attn-hyena_x-greedy75"]["extra"]["layers"]) == 6


def test_queued_local_runs_show_pending_and_return_to_missing_on_interrupt(tmp_path, monkeypatch):
    """A local launcher marks every run it will execute as pending (its own pid), so --status and a second launcher
    see them as taken; Ctrl-C puts the never-started ones back to missing, not "gone without DONE"."""
    store = Store(tmp_path, "tiny")
    plans = plan_targets(store, targets.expand(["table1"]))
    last = plans[0].row_plans[-1].final
    seen = {}
    original = ProcessLauncher.start

    def start(self, ex, u, i, total, parallel):
        if i == 2:
            seen["queued"] = node_states(store, all_nodes(plans), ask_slurm=False)[last.key].state
            raise KeyboardInterrupt
        return original(self, ex, u, i, total, parallel)

    monkeypatch.setattr(ProcessLauncher, "start", start)
    with pytest.raises(KeyboardInterrupt):
        launch(DebugLauncher(store, progress=False, log=lambda *a: None, execute=FakeSteps()), plans)
    assert seen["queued"] == "pending"
    states = node_states(store, all_nodes(plans), ask_slurm=False)
    assert states[last.key].state == "missing"
    assert sum(s.state == "done" for s in states.values()) >= 1  # the first unit finished before the interrupt


def test_eta_follows_the_cost_model_scaled_by_the_measured_ratio():
    """The local launcher's ETA: the cost model's seconds of the units left, times measured/estimated so far."""
    from benchmark.cost import node_cost
    from benchmark.executors import ETA
    from benchmark.launch import Unit, all_nodes, plan_targets

    store = Store("/nonexistent-results", "tiny")
    nodes = [n for n in all_nodes(plan_targets(store, targets.expand(["table6"]))) if n.kind in ("stage2", "eval")]
    units = [Unit(name=n.key, kind=n.kind, nodes=[n], index=i) for i, n in enumerate(nodes)]
    seconds = [node_cost(n, gpu=False)[0] * 60 for n in nodes]
    eta = ETA(units, parallel=1)
    assert eta.remaining() == pytest.approx(sum(seconds))
    line = eta.finished(units[0], 2 * seconds[0])  # this machine is 2× slower than the model
    assert eta.ratio() == pytest.approx(2.0) and eta.remaining() == pytest.approx(2 * sum(seconds[1:]))
    assert f"for the {len(units) - 1} units left" in line and "× 2.00" in line
    for u in units[1:]:
        last = eta.finished(u, 1.0)
    assert last is None  # nothing left: no ETA line


def test_a_killed_local_job_is_reported_as_killed_not_by_its_progress_bar():
    from benchmark.executors import failure_reason

    class Job:
        class paths:
            stderr = "/r/submitit/7/7_0_log.err"

    bar = "stage2:  69%|######8   | 412/600 [07:14<02:59,  1.05it/s, loss=0.0324]"
    killed = RuntimeError(f"Job (task=0) failed during processing with trace:\n----------------------\n{bar}")
    assert failure_reason(killed, Job) == ("its process ended without a result or an error (killed?); log: "
                                           "/r/submitit/7/7_0_log.err")
    raised = RuntimeError(f"{bar}\nTraceback (most recent call last):\n  File \"x.py\"\nValueError: bad shard 3")
    assert failure_reason(raised, Job) == "ValueError: bad shard 3"
