"""Feasibility before submission: every paper step's GPU memory, hours and disk against the profile, in --dry-run
(text and JSON), and a real launch that refuses a plan with a step that does not fit."""
import json

import pytest

from benchmark import resources
from benchmark.memory_model import SOURCES
from benchmark.launch import plan_targets
from benchmark.profiles import Profile, ProfileError
from benchmark.run import main
from benchmark.store import Store
from benchmark.fakes.steps import FakeSteps
from benchmark import targets

KEYS = {"kind", "run", "gpus", "est_gpu_mem_gb", "gpu_mem_gb", "est_hours", "timeout_hours", "resumable",
        "est_disk_gb", "fits", "why", "source"}


def dry_run_json(capsys, tmp_path, *args) -> dict:
    assert main(["table3", "--preset", "paper", "--dry-run", "--json", "--results-dir", str(tmp_path), *args]) == 0
    return json.loads(capsys.readouterr().out)


def stage2_nodes(tmp_path, rows):
    (tp,) = plan_targets(Store(tmp_path, "paper"), targets.expand(["table3"]))
    return {rp.row.id: next(n for n in rp.nodes if n.kind == "stage2") for rp in tp.row_plans if rp.row.id in rows}


def test_dry_run_json_lists_every_step_with_its_estimates_and_sources(capsys, tmp_path):
    doc = dry_run_json(capsys, tmp_path)
    steps = doc["steps"]
    assert steps and all(KEYS <= set(s) for s in steps)
    assert all(set(s["source"].values()) <= set(SOURCES) for s in steps)
    stage2 = [s for s in steps if s["kind"] == "stage2"]
    assert stage2 and all(s["gpus"] == 8 and s["gpu_mem_gb"] == 80 and s["resumable"] for s in stage2)
    assert not (tmp_path / "paper").exists()  # a dry run writes nothing


def test_a_smaller_gpu_makes_stage2_not_fit_and_names_the_setting(capsys, tmp_path):
    doc = dry_run_json(capsys, tmp_path, "--slurm", "stage2.gpu_mem_gb=24")
    stage2 = [s for s in doc["steps"] if s["kind"] == "stage2"]
    bad = [s for s in stage2 if not s["fits"]]
    assert bad and all(any(k in fix for fix in s["fix"] for k in ("activation_checkpointing", "no profile setting"))
                       for s in bad)
    # the others fit only through an accumulation the memory model chose (32 per GPU does not fit 24 GB)
    assert all(s["settings"]["grad_accumulation"] > 1 for s in stage2 if s["fits"])
    assert all(s["fits"] for s in doc["steps"] if s["kind"] in ("sample", "latency"))  # other kinds keep theirs


def test_accumulation_and_checkpointing_lower_the_stage2_estimate(tmp_path):
    c = stage2_nodes(tmp_path, {"attn-hyena_x-interleaved50"})["attn-hyena_x-interleaved50"].config
    one = resources._stage2(c, 8, {"grad_accumulation": 1})[0]
    two = resources._stage2(c, 8, {"grad_accumulation": 2})[0]
    ckpt = resources._stage2(c, 8, {"grad_accumulation": 1, "activation_checkpointing": True})[0]
    assert ckpt < two < one
    # the saved activations halve with the micro-batch; the training state does not change
    state = resources._stage2(c, 8, {"grad_accumulation": 32})[0]
    assert one - two == pytest.approx(two - state, rel=0.1) or two - state < one - two


def test_mamba2_rows_need_more_stage2_memory_than_hyena_x_rows(tmp_path):
    """The chunked SSD keeps more per token than attention, Hyena-X less (measured probes): at equal layers the
    Mamba-2 row's estimate is the larger one."""
    (tp,) = plan_targets(Store(tmp_path, "paper"), targets.expand(["table3"]))
    mem = {}
    for rp in tp.row_plans:
        for n in rp.nodes:
            if n.kind == "stage2":
                mem[rp.row.id] = resources._stage2(n.config, 8, {})[0]
    hx = [v for k, v in mem.items() if k.startswith("attn-hyena_x-interleaved50")]
    m2 = [v for k, v in mem.items() if k.startswith("attn-mamba2-interleaved50")]
    assert hx and m2 and min(m2) > max(hx)


def test_a_launch_with_a_step_that_does_not_fit_submits_nothing(tmp_path, capsys):
    results = tmp_path / "r"
    rc = main(["table3", "--preset", "paper", "--rows", "attn-mamba2-interleaved50", "--executor", "local",
               "--slurm", "stage2.gpu_mem_gb=24", "--results-dir", str(results), "--quiet"], execute=FakeSteps())
    assert rc == 2
    lines = capsys.readouterr().err.strip().splitlines()
    refused = [line for line in lines if line.startswith("error: stage2/")]
    assert len(refused) == 1 and "gpu_mem_gb 24" in refused[0]
    assert "→ stage2.activation_checkpointing=true" in refused[0]
    assert lines[-1].startswith("error: ") and "nothing submitted" in lines[-1]
    assert not (results / "paper" / "runs").exists()


def test_profile_declared_keys_are_validated_and_never_passed_to_submitit():
    prof = Profile.load("paper", ["stage2.gpu_mem_gb=40", "disk_gb=100"])
    init, params = prof.executor_parameters("stage2")
    assert "gpu_mem_gb" not in params and "disk_gb" not in params
    assert prof.resources("stage2")["gpu_mem_gb"] == 40 and prof.resources("stage1")["disk_gb"] == 100
    with pytest.raises(ProfileError, match="positive number"):
        Profile.load("paper", ["gpu_mem_gb=lots"])


def test_only_profiles_that_declare_gpu_memory_are_checked():
    """paper-smoke declares none: its rehearsal reads the (fake, reduced) model sizes from the checkpoints at run
    time, while the configs carry the paper's, so the estimates would refuse a rehearsal that fits."""
    assert not resources.applies(Profile.load("cpu")) and not resources.applies(Profile.load("paper-smoke"))
    assert resources.applies(Profile.load("paper"))


def test_json_without_dry_run_is_refused(tmp_path, capsys):
    assert main(["table3", "--preset", "paper", "--json", "--results-dir", str(tmp_path)]) == 2
    assert "--json goes with --dry-run" in capsys.readouterr().err


def test_the_model_sizes_and_family_specific_steps_come_from_the_family(tmp_path):
    """``benchmark.resources`` asks the family (``Family.model_dims``/``step_resources``/``params_key``), never its
    name: PixArt-Σ's T5 encode steps and GenEval batch come from its module, and a family that reports twice the
    width gets a larger inference estimate from the same generic arithmetic."""
    from benchmark.family import family_of

    (tp,) = plan_targets(Store(tmp_path, "paper"), targets.expand(["table5"]))
    nodes = {n.kind: n for rp in tp.row_plans for n in rp.nodes}
    pix = family_of(nodes["teacher"].config)
    assert pix.name == "pixart" and pix.model_dims(nodes["stage2"].config) == resources._dims(nodes["stage2"].config)
    t5 = pix.step_resources("encode", nodes["encode"].config, 1, 8)
    assert t5["gpu_mem"] > 2 * pix.resource_constants["t5_params"] / 1e9  # bf16 weights + activations + context
    cpu = pix.step_resources("encode", nodes["encode"].config, 0, 8)
    assert cpu["gpu_mem"] == 0.0 and cpu["hours"] > t5["hours"] * 10  # a GPU encodes far faster than 8 cores
    assert pix.step_resources("teacher", nodes["teacher"].config, 0, 4) == {}  # loads; T5 is the encode steps' job
    assert pix.step_resources("stage2", nodes["stage2"].config, 8, 8) == {}
    c = nodes["eval"].config
    w, n, layers = pix.model_dims(c)
    base = resources.inference_gb(c, 2)

    class Wide(type(pix)):
        def model_dims(self, config):
            return 2 * w, n, layers

    original = type(pix).model_dims
    try:
        type(pix).model_dims = Wide.model_dims
        assert resources.inference_gb(c, 2) > base
    finally:
        type(pix).model_dims = original
    assert resources.inference_gb(c, 2) == base
    doc_keys = {**resources.ASSUMED, **pix.resource_constants}
    assert {"t5_params", "t2i_eval_batch"} <= set(doc_keys) and "t5_params" not in resources.ASSUMED


def test_table5_encode_and_geneval_steps_fit_the_paper_profile(capsys, tmp_path):
    """Table 5's T5 encoding (a 1-GPU array, resumable), GenEval's sampling array and its scoring step fit
    slurm/profiles/paper.json; the teacher step no longer encodes on its 0-GPU job."""
    assert main(["table5", "--preset", "paper", "--dry-run", "--json", "--results-dir", str(tmp_path)]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    mine = [s for s in steps if s["kind"] in ("encode", "sample", "eval", "teacher")]
    assert {s["kind"] for s in mine} == {"encode", "sample", "eval", "teacher"}
    assert all(s["fits"] for s in mine), [(s["kind"], s["why"]) for s in mine if not s["fits"]]
    encode = [s for s in steps if s["kind"] == "encode"]
    assert len(encode) == 2 and all(s["gpus"] == 1 and s["resumable"] for s in encode)  # training and GenEval sets
    sample = [s for s in steps if s["kind"] == "sample"]
    assert sample and all(s["gpus"] == 1 and s["resumable"] and s["est_hours"] < s["timeout_hours"] for s in sample)


def test_the_memory_model_chooses_the_smallest_accumulation_that_fits_and_the_job_gets_it(tmp_path, monkeypatch):
    """Mamba-2 at 100 % does not fit 80 GB at the profile's accumulation 1: the model picks the smallest power of 2
    that fits (same effective batch: the run id is the one planned), the dry run reports it with ``fits: true``,
    and the launch hands it to that run's job only (``RunUnit`` settings by node key override the kind's)."""
    from benchmark.executors import make_launcher
    from benchmark.jobs import RunUnit
    from benchmark.status import node_states

    paper = Profile.load("paper")
    (tp,) = plan_targets(Store(tmp_path, "paper"), targets.expand(["table3"]))
    stage2 = {rp.row.id: n for rp in tp.row_plans for n in rp.nodes if n.kind == "stage2"}
    chosen = {row: resources.model_settings(n, paper) for row, n in stage2.items()}
    mamba = [row for row, s in chosen.items() if s]
    assert mamba and all("mamba2" in row for row in mamba)
    assert not chosen["attn-hyena_x-interleaved50"]
    for row in mamba:
        n, k = stage2[row], chosen[row]["grad_accumulation"]
        assert k > 1 and k & (k - 1) == 0 and 32 % k == 0
        assert resources._stage2(n.config, 8, {"grad_accumulation": k})[0] <= 80
        assert resources._stage2(n.config, 8, {"grad_accumulation": k // 2})[0] > 80
        f = resources.step_fit(n, paper, lambda node: 0)
        assert f.fits and f.to_dict()["settings"] == {"grad_accumulation": k} and f.run == n.run_id
    launcher = make_launcher("debug", Store(tmp_path, "paper"), profile=paper)
    launcher.prepare([tp], node_states(launcher.store, [n for rp in tp.row_plans for n in rp.nodes], ask_slurm=False))
    settings = launcher.unit_job().settings
    assert settings["stage2"] == {"grad_accumulation": 1}
    assert {k for k in settings if "/" in k} == {stage2[row].key for row in mamba}

    seen = {}
    monkeypatch.setattr(RunUnit, "run_one", lambda self, store, run, env, execute, progress, settings, **kw:
                        seen.setdefault(run.run_id, settings) is not None)
    row = mamba[0]
    hyena = stage2["attn-hyena_x-interleaved50"]
    RunUnit(lambda ctx: {}, settings=settings)(str(tmp_path), "paper", [stage2[row].key, hyena.key])
    assert seen[stage2[row].run_id] == chosen[row]
    assert seen[stage2["attn-hyena_x-interleaved50"].run_id] == {"grad_accumulation": 1}
