"""Table 1 (i)/(ii) as results: the ``activation_stats`` rows of ``table1``, from the driver to the LaTeX table.

Micro preset end to end with the real graft_core steps (teacher, all-pairs capture, statistics); the paper preset's
planning (one statistics node per site over the 28 per-pair stage-1 captures that table3's stage-1 runs share) with
the fake step runner.
"""
import json
import math

import pytest

from benchmark import targets
from benchmark.dag import Planner
from benchmark.launch import plan_targets
from benchmark.run import main
from benchmark.store import Store
from benchmark.fakes.steps import FakeSteps
from tables.build import main as build_main

STATS_ROWS = "attn-activation_stats,mlp-activation_stats"
STAT_KEYS = ("variance", "std", "max_abs", "p999_abs", "outlier_frac", "kurtosis", "input_variance")


def test_micro_activation_stats_rows_end_to_end(tmp_path, capsys):
    from graft_core.stages.activation_stats import activation_statistics
    from graft_core.presets import get_preset
    from tables.table1 import fmt_sig

    args = ["table1", "--preset", "micro", "--executor", "debug", "--rows", STATS_ROWS,
            "--results-dir", str(tmp_path), "--quiet"]
    assert main(args) == 0, capsys.readouterr().out
    num_layers = get_preset("micro").teacher.num_layers
    summary = json.loads((tmp_path / "micro" / "table1" / "summary.json").read_text())
    rows = {r["row"]: r for r in summary["rows"]}
    assert rows["attn-l2"]["status"] == "missing"  # not selected, still listed
    # the driver builds a table once all its rows are done; here only two are: build it as a user would
    assert build_main(["--results", str(tmp_path), "--preset", "micro", "--target", "table1"]) == 0
    tex = (tmp_path / "micro" / "tables" / "table1.tex").read_text()
    panel = tex[tex.index("% Table 1 (i)/(ii)"):]
    (capture,) = (tmp_path / "micro" / "runs" / "capture").iterdir()  # one all-pairs capture on micro
    folder = capture / json.loads((capture / "metrics.json").read_text())["folder"]
    for site in ("attn", "mlp"):
        r = rows[f"{site}-activation_stats"]
        assert r["status"] == "done" and r["site"] == site and r["operator"] is None, r
        stats = r["extra"]["activation_stats"]
        assert stats["site"] == site and stats["outlier_sigma"] == 6.0 and stats["num_samples"] > 0
        assert [s["layer"] for s in stats["layers"]] == list(range(num_layers))
        direct = activation_statistics(folder, num_layers, sites=(site,))[site]
        for s, d in zip(stats["layers"], direct):
            assert all(math.isfinite(s[k]) for k in STAT_KEYS), s
            assert s["variance"] > 0 and s["max_abs"] > 0 and 0 <= s["outlier_frac"] <= 1
            assert s["variance"] == pytest.approx(d["variance"]) and s["max_abs"] == pytest.approx(d["max_abs"])
            line = next(l for l in panel.splitlines() if l.startswith(f"{s['layer'] + 1} & "))
            cells = [c.strip(" \\") for c in line.split("&")]
            offset = 1 if site == "attn" else 4
            assert cells[offset:offset + 3] == [fmt_sig(s["variance"]), fmt_sig(s["max_abs"]),
                                                fmt_sig(100 * s["outlier_frac"])]
    assert r"\multicolumn{3}{c}{(i) MHA outputs}" in panel and "not published" in panel
    stats_runs = sorted((tmp_path / "micro" / "runs" / "activation_stats").iterdir())
    assert len(stats_runs) == 2 and all(len(list((d / "out").glob("layer*.json"))) == num_layers
                                        for d in stats_runs)  # per-layer results kept: a requeue resumes
    capsys.readouterr()
    assert main(args) == 0 and "nothing to launch" in capsys.readouterr().out


def test_paper_stats_rows_read_the_per_pair_stage1_captures_table3_shares(tmp_path):
    store = Store(tmp_path, "paper")
    t1, t3 = plan_targets(store, targets.expand(["table1", "table3"]))
    stats = {rp.row.id: rp for rp in t1.row_plans if rp.row.kind == "activation_stats"}
    assert set(stats) == {"attn-activation_stats", "mlp-activation_stats"}
    table3_captures = {n.key for rp in t3.row_plans for n in rp.nodes if n.kind == "capture"}
    for site in ("attn", "mlp"):
        rp = stats[f"{site}-activation_stats"]
        caps = [n for n in rp.nodes if n.kind == "capture"]
        assert len(caps) == 28 and set(rp.final.deps) == {n.key for n in caps}
        assert all(n.config["split"] == "stage1" and n.config["pairs"][0][1] == site for n in caps)
        assert sorted(n.config["pairs"][0][0] for n in caps) == list(range(28))
        assert {n.key for n in caps} <= table3_captures  # the full-graft rows capture every layer of both sites
    # planning is deterministic and adds only the new nodes
    again = Planner().expand("table1", stats["attn-activation_stats"].row)
    assert again.final.key == stats["attn-activation_stats"].final.key


def test_paper_stats_rows_through_the_driver_with_fake_steps(tmp_path, monkeypatch):
    monkeypatch.setattr("benchmark.launch.build_tables", lambda *a, **k: None)
    assert main(["table1", "--preset", "paper", "--executor", "debug", "--rows", STATS_ROWS,
                 "--results-dir", str(tmp_path), "--quiet"], execute=FakeSteps()) == 0
    rows = {r["row"]: r for r in json.loads((tmp_path / "paper" / "table1" / "summary.json").read_text())["rows"]}
    for site in ("attn", "mlp"):
        layers = rows[f"{site}-activation_stats"]["extra"]["activation_stats"]["layers"]
        assert [s["layer"] for s in layers] == list(range(28))
    assert len(list((tmp_path / "paper" / "runs" / "capture").iterdir())) == 56
