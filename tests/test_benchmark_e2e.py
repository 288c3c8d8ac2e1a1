"""End to end on the micro preset with the real graft_core stages (debug executor, in this process).

baseline + four Table-3 rows (random init, one grafted row with stage 1 → stage 2 → eval, the teacher + stage-2
control) through ``python -m benchmark.run``'s ``main``; then a warm re-run that launches nothing and writes nothing.
About 6 s on an idle 2-core machine (not marked slow).
"""
import json

from benchmark.run import main

ROWS = "baseline,metric_floor,noise_control,attn-random_init-full,attn-hyena_x-interleaved50,control-teacher-stage2"


def test_micro_baseline_and_grafted_rows_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("benchmark.launch.build_tables", lambda *a, **k: None)
    args = ["baseline", "table3", "--preset", "micro", "--executor", "debug", "--rows", ROWS,
            "--results-dir", str(tmp_path), "--quiet"]
    assert main(args) == 0, capsys.readouterr().out
    rows = {r["row"]: r for r in json.loads((tmp_path / "micro" / "table3" / "summary.json").read_text())["rows"]}
    for rid in ROWS.split(",")[3:] + ["baseline"]:
        assert rows[rid]["status"] == "done", rows[rid]
        assert rows[rid]["metrics"]["fid"] is not None and 0 <= rows[rid]["metrics"]["class_acc"] <= 1
    grafted = rows["attn-hyena_x-interleaved50"]
    assert grafted["extra"]["layers"] == [1] and grafted["efficiency"]["d_flops_op"] < 0
    assert grafted["extra"]["stage1_val_mse"] is not None
    assert rows["attn-mamba2-full"]["status"] == "missing"  # not selected, still listed
    base = json.loads((tmp_path / "micro" / "baseline" / "summary.json").read_text())
    assert [r["status"] for r in base["rows"]] == ["done"] * 3
    runs = tmp_path / "micro" / "runs"
    stage2 = next((runs / "stage2").iterdir())
    for name in ("config.json", "status.json", "environment.json", "metrics.json", "DONE", "logs/step.log"):
        assert (stage2 / name).exists(), name
    assert list((stage2 / "out" / "checkpoints").glob("step_*.pt"))  # resumable stage 2
    env = json.loads((stage2 / "environment.json").read_text())
    assert env["packages"]["torch"] and "threads" in env and env["git_rev"]
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    assert main(args) == 0
    assert "nothing to launch" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    assert after == before  # the warm re-run wrote nothing into any run (its speed: benchmarks/grid.py)
