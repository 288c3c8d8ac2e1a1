"""Smoke tests of the performance benchmarks (``benchmarks/``): every script's ``--quick`` mode runs and writes a
valid JSON record (machine, settings, results, summary) into a temporary folder, never into benchmarks/results/."""
import json
import math

import pytest

COMMON_KEYS = {"benchmark", "timestamp", "quick", "machine", "contention", "settings", "summary", "results", "table"}


def _record(tmp_path, name):
    path = tmp_path / f"{name}-quick.json"
    assert path.exists(), sorted(p.name for p in tmp_path.iterdir())
    record = json.loads(path.read_text())  # allow_nan=False on write: strict JSON
    assert COMMON_KEYS <= set(record)
    assert record["benchmark"] == name and record["quick"] is True
    machine = record["machine"]
    for key in ("cpu_model", "usable_cpus", "torch_threads", "torch", "device"):
        assert machine[key] not in (None, ""), key
    assert record["contention"]["wall_s"] >= 0
    return record


def _finite_positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_common_helpers():
    from benchmarks import common

    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1

    t = common.measure({"a": a, "b": b}, None, warmup=1, min_repeats=2, max_repeats=3, budget_s=0.0)
    assert len(t["a"].times) == 2 and calls["a"] == 3 and calls["b"] == 3
    assert common.target(0.9, 0.8)["met"] and not common.target(2e-4, 1e-4, "<=")["met"]
    table = common.format_table(["x", "y"], [[1, "abc"], [22, "d"]])
    assert table.splitlines()[0].startswith("| x ") and len(table.splitlines()) == 4
    assert common.fmt_time(0.0123) == "12.3 ms" and common.fmt_time(2.5) == "2.50 s"


def test_operators_quick(tmp_path):
    from benchmarks import operators

    assert operators.main(["--quick", "--out", str(tmp_path)]) == 0
    record = _record(tmp_path, "operators")
    rows = record["results"]["rows"]
    assert {r["operator"] for r in rows} == set(operators.OPERATORS)
    assert {r["n"] for r in rows} == {64, 256}
    for r in rows:
        assert _finite_positive(r["median_s"]) and _finite_positive(r["flop_ratio"])
        assert r["fraction_of_flop_ratio"] == pytest.approx(r["speedup_vs_mha"] / r["flop_ratio"])
    assert all(r["speedup_vs_mha"] == 1.0 for r in rows if r["operator"] == "mha")
    for variant in ("swa_blocked", "hyena_x_cm"):  # the benchmark-only variants compute graft_core's function
        assert record["summary"][f"{variant}_max_abs_err"] < 1e-4
    assert set(record["summary"]["targets"]) == {"hyena_x_fraction_at_N256", "hyena_y_fraction_at_N256"}


def test_blocked_swa_matches_swa_on_odd_lengths():
    import torch

    from benchmarks.operators import BlockedSWA
    from graft_core import operators

    torch.manual_seed(0)
    swa = operators.build("swa", 32, num_heads=4, seq_len=100, window=4).eval()
    for n in (1, 5, 64, 100, 131):
        x = torch.randn(2, n, 32)
        with torch.inference_mode():
            assert torch.allclose(BlockedSWA(swa, block=16)(x), swa(x), atol=1e-5), n


def test_channel_major_hyena_matches_graft_core():
    import torch

    from benchmarks.operators import ChannelMajorHyena
    from graft_core import operators

    torch.manual_seed(0)
    for name in ("hyena_x", "hyena_y", "hyena_se"):
        op = operators.build(name, 24, num_heads=4, seq_len=16).eval()
        with torch.no_grad():
            for p in op.parameters():
                p.normal_()  # non-identity inner filter too
        for n in (1, 3, 4, 17):
            x = torch.randn(2, n, 24)
            with torch.inference_mode():
                got, ref = ChannelMajorHyena(op)(x), op(x)
            assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-5, (name, n)


def test_mamba2_scan_quick(tmp_path):
    from benchmarks import mamba2_scan

    assert mamba2_scan.main(["--quick", "--out", str(tmp_path)]) == 0
    record = _record(tmp_path, "mamba2_scan")
    rows = record["results"]["rows"]
    assert [r["setting"] for r in rows] == list(mamba2_scan.QUICK_SETTINGS)
    for r in rows:
        assert _finite_positive(r["speedup"]) and r["max_abs_err"] < 1e-4
    diag = record["results"]["diagnostics"]
    assert diag["clamped_max_abs_err"] < 1e-4 and set(diag["exp_ns_per_element"]) == {"exp(-10)", "exp(-100)",
                                                                                     "exp(-inf)"}


def test_pixart_speedup_quick(tmp_path):
    from benchmarks import pixart_speedup

    assert pixart_speedup.main(["--quick", "--out", str(tmp_path)]) == 0
    record = _record(tmp_path, "pixart_speedup")
    res = record["results"]
    assert _finite_positive(res["compose"]["speedup"]) and _finite_positive(res["full"]["speedup"])
    flops = res["analytic_flops"]
    assert flops["grafted"] < flops["ungrafted"] and flops["speedup"] > 1
    assert record["settings"]["graft_layers"] == list(pixart_speedup.PAPER_LAYERS)


def test_pixart_analytic_flops_at_paper_size():
    from benchmarks.pixart_speedup import PAPER_LAYERS, SIGMA_2K, TEXT_TOKENS, analytic_flops

    f = analytic_flops(SIGMA_2K, TEXT_TOKENS, PAPER_LAYERS)
    assert f["tokens"] == 16384
    assert f["attn1_mha"] == 4 * 16384**2 * 1152 + 8 * 16384 * 1152**2  # paper §4.8 at N=16384
    assert 1.3 < f["speedup"] < 1.7 and f["mha_share_of_flops"] > 0.6


def test_sampling_quick(tmp_path):
    from benchmarks import sampling

    assert sampling.main(["--quick", "--out", str(tmp_path)]) == 0
    record = _record(tmp_path, "sampling")
    rows = {r["precision"]: r for r in record["results"]}
    assert set(rows) == {"fp32", "bf16"}
    assert rows["fp32"]["max_abs_output_diff"] < 1e-5  # same noise, same model, same scheduler: same samples
    for r in rows.values():
        assert _finite_positive(r["suite_samples_per_s"]) and _finite_positive(r["pipeline_samples_per_s"])


def test_grid_quick_with_fake_steps(tmp_path):
    """The grid script end to end against the driver's fake step executors (no torch work, seconds)."""
    from benchmarks import grid

    out, work = tmp_path / "out", tmp_path / "work"
    fake = ["--steps", "benchmark.fakes.steps:fake_execute"]
    assert grid.main(["--quick", *fake, "--out", str(out), "--workdir", str(work)]) == 0
    record = _record(out, "grid")
    s = record["summary"]
    assert s["capture_runs"] == 2 and s["capture_executions"] == 2  # stage-1 train + held-out, once each
    assert s["warm_launched_nothing"] and s["target_one_capture"]["met"]
    assert s["cold_wall_s"] > 0 and s["warm_wall_s"] > 0 and s["stage1_runs"] >= 1
    # --results on the existing store: warm re-run only
    assert grid.main(["--quick", *fake, "--out", str(out), "--results", str(work / "results")]) == 0
    again = json.loads((out / "grid-quick.json").read_text())
    assert again["summary"]["cold_wall_s"] is None and again["summary"]["capture_executions"] == 2
    assert again["results"]["capture_executions_during_warm"] == 0
    # per-row costs from the store: each quick row's eval + stage 2 + its stage-1 runs
    costs = record["results"]["row_costs"]
    assert {(r["operator"], r["layers"]) for r in costs} == {("hyena_x", 1), ("hyena_y", 1)}
    for r in costs:
        assert r["stage1_runs"] == r["layers"] and r["eval_s"] >= 0 and r["stage2_s"] >= 0
        assert r["total_s"] == pytest.approx(r["stage1_s"] + r["stage2_s"] + r["eval_s"], abs=0.02)
    assert record["results"]["row_comparison"] is None  # no Mamba-2 row in the quick grid


def test_row_comparison_ratio_and_flop_floor():
    """The operator/baseline row ratio and its floor: the baseline's stage 1 scaled by the analytic FLOP ratio."""
    import dataclasses

    from benchmarks import row_costs
    from graft_core.grafting.accounting import operator_cost
    from graft_core.presets import get_preset

    teacher = dataclasses.asdict(get_preset("tiny").teacher)
    dim, heads = teacher["num_attention_heads"] * teacher["attention_head_dim"], teacher["num_attention_heads"]
    tokens = (teacher["sample_size"] // teacher["patch_size"]) ** 2
    m2, hx = (operator_cost(n, dim, num_heads=heads, seq_len=tokens) for n in ("mamba2", "hyena_x"))
    flops = (m2.flops_op + m2.flops_ft) / (hx.flops_op + hx.flops_ft)
    assert row_costs.flop_ratio("mamba2", "hyena_x", teacher) == pytest.approx(flops) and flops > 2
    row = lambda op, layers, s1, s2, ev: {"site": "attn", "operator": op, "layers": layers, "stage1_s": s1,  # noqa
                                          "stage2_s": s2, "eval_s": ev, "total_s": s1 + s2 + ev, "teacher": teacher}
    rows = [row("hyena_x", 4, 30.0, 40.0, 30.0), row("mamba2", 4, 80.0, 50.0, 40.0), row("hyena_x", 8, 60.0, 40.0, 30.0),
            row("mamba2", 8, 150.0, 60.0, 40.0), row("mamba2", 6, 1.0, 1.0, 1.0)]  # 6 layers: no baseline row
    c = row_costs.compare(rows, "mamba2", "hyena_x", target=1.5)
    assert [p["layers"] for p in c["rows"]] == [4, 8]
    assert [p["ratio"] for p in c["rows"]] == pytest.approx([170 / 100, 250 / 130])
    assert c["rows"][0]["floor_ratio"] == pytest.approx((30 * flops + 70) / 100)
    assert c["rows"][0]["ratio_by_kind"]["stage1"] == pytest.approx(80 / 30)
    assert not c["met"] and c["floor_above_target"]  # 8 layers: (60·2.37 + 70) / 130 > 1.5
    assert row_costs.compare(rows, "mamba2", "hyena_y", target=1.5) is None


@pytest.mark.slow
def test_grid_quick_real_steps(tmp_path):
    from benchmarks import grid

    out = tmp_path / "out"
    assert grid.main(["--quick", "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    s = _record(out, "grid")["summary"]
    assert s["capture_runs"] == 2 and s["target_one_capture"]["met"]
    assert s["teacher_forward_passes_in_capture"] >= 2


def test_report_renders_from_records(tmp_path):
    from benchmarks import mamba2_scan, report

    assert mamba2_scan.main(["--quick", "--no-diagnostics", "--out", str(tmp_path)]) == 0
    text = report.render(tmp_path)
    assert "## Latest figures" in text and "Mamba-2" in text and "--quick` record only" in text
    assert "no record yet" in text  # the benchmarks not run here are listed, not dropped


def test_levers_stage1_batch_quick(tmp_path):
    """The stage-1 batch lever runs the engine's distill_layer at each batch size on the shipped tiny teacher."""
    from benchmarks import levers

    assert levers.main(["stage1-batch", "--quick", "--out", str(tmp_path), "--workdir", str(tmp_path / "work"),
                        "--stage1-batches", "8", "80"]) == 0
    record = _record(tmp_path, "levers-stage1-batch")
    rows = record["results"]
    assert [r["batch_size"] for r in rows] == [8, 80] and {r["operator"] for r in rows} == {"hyena_x"}
    assert all(r["epochs_run"] == 2 and _finite_positive(r["best_val_mse"]) for r in rows)


def test_store_readers_of_the_scripts_raise_what_the_store_raises(tmp_path):
    """grid / row_costs / gpu_smoke read runs through ``benchmark.store``: a finished run's step time is read from its
    metrics, an unfinished one has none, and a record that does not parse raises the store's ``CorruptRecord``
    (it was read as "no record", which dropped the row from the costs without a word)."""
    from benchmark.store import CorruptRecord, Store
    from benchmarks import grid, row_costs

    store = Store(tmp_path, "tiny")
    s1 = store.ensure_config("stage1", "a", {"inputs": {"capture_train": "c"}})
    s2 = store.ensure_config("stage2", "b", {"plan": {"site": "attn", "operator": "hyena_x", "layers": [3]},
                                             "teacher": {}}, deps=("stage1/a",))
    ev = store.ensure_config("eval", "e", {"model": {"source": "stage2", "run": "b"}})
    for run, seconds in ((s1, 1.5), (s2, 2.0), (ev, 0.25)):
        store.finish(run, {"seconds_step": seconds})
    assert Store.at(store.root).root == store.root and store.kinds() == ["eval", "stage1", "stage2"]
    [row] = row_costs.row_costs(store.root)
    assert (row["stage1_s"], row["stage2_s"], row["eval_s"], row["total_s"]) == (1.5, 2.0, 0.25, 3.75)
    report = grid.store_report(store.root)
    assert report["kinds"]["stage2"] == {"runs": 1, "done": 1, "attempts": 0, "step_seconds": 2.0}
    assert report["stage1_capture_readers"] == {"capture_train:c": 1}
    assert grid.resolve_results(tmp_path, "tiny") == grid.resolve_results(store.root, "tiny") == (tmp_path, "tiny")
    store.invalidate(s1, "test")
    assert row_costs.row_costs(store.root) == []  # stage 1 no longer done: the row's chain is unfinished
    s2.metrics.write_text("{not json")
    with pytest.raises(CorruptRecord, match="metrics.json"):
        row_costs.row_costs(store.root)
    with pytest.raises(CorruptRecord, match="metrics.json"):
        grid.store_report(store.root)


def test_gpu_smoke_step_lines_from_the_store(tmp_path):
    from benchmark.store import Store
    from benchmarks.gpu_smoke import step_lines

    store = Store(tmp_path, "paper-smoke")
    store.update_status(store.ensure_config("stage1", "a", {}), state="failed", error="boom")
    store.finish(store.ensure_config("eval", "b", {}), {"seconds_step": 3.0})
    store.ensure_config("eval", "c", {})  # planned, never started: no status, no line
    assert step_lines(tmp_path) == [
        {"step": "eval/b", "kind": "eval", "ok": True, "device": "cpu", "peak_gpu_gb": 0.0, "given_gpu": False,
         "phases": {}, "sampling_precision": None, "seconds": 3.0, "error": None},
        {"step": "stage1/a", "kind": "stage1", "ok": False, "device": "cpu", "peak_gpu_gb": 0.0, "given_gpu": False,
         "phases": {}, "sampling_precision": None, "seconds": None, "error": "boom"}]


def test_metrics_speed_quick(tmp_path):
    """The speed targets moved out of tests/test_metrics.py run and are recorded (no threshold asserted here)."""
    from benchmarks import metrics_speed

    assert metrics_speed.main(["--quick", "--out", str(tmp_path)]) == 0
    record = _record(tmp_path, "metrics_speed")
    assert set(record["results"]) == {"bootstrap", "inception_missing"}
    assert all(r["median_s"] > 0 and r["target"] == "<= 5" for r in record["results"].values())


def test_paper_scale_quick(tmp_path):
    """The real-width probe script at width 64: every probe runs, the fitted memory model predicts each check point
    (batch 2 at 4× the largest fit's tokens) within the tolerance, and the JSON carries the per-token figures."""
    from benchmarks import paper_scale

    assert paper_scale.main(["--quick", "--out", str(tmp_path)]) == 0
    record = _record(tmp_path, "paper_scale")
    probes = record["summary"]["probes"]
    assert set(probes) == {"dit_block", "pixart_block", *paper_scale.OPERATOR_CASES}
    assert record["summary"]["all_checks_within"] is True
    for name, entry in probes.items():
        assert _finite_positive(entry["bytes_per_token"]), name
        if name != "dit_block":
            assert entry["check"]["relative_error"] <= paper_scale.TOLERANCE
    # orderings the science relies on: Mamba-2's chunked scan keeps the most per token, wider MLPs keep more
    assert max(probes, key=lambda n: probes[n]["bytes_per_token"] if probes[n].get("check") else 0) in (
        "mamba2", "pixart_block")
    assert probes["mlp_r3"]["bytes_per_token"] < probes["mlp"]["bytes_per_token"] < probes["mlp_r6"]["bytes_per_token"]
