"""Which paired comparisons each target's summary carries (benchmark.comparisons), how an unpaired or old eval run
reads, and how the tables print them (tables.paired)."""
import numpy as np

from benchmark.comparisons import compare, fig4a_pairs, fig4b_pairs, grid_pairs, table1_pairs
from tables.paired import paired_frame, render_paired


def _row(rid, site=None, operator=None, ratio=None, fid=5.0, status="done", **extra):
    return {"row": rid, "label": rid, "site": site, "operator": operator, "ratio": ratio, "strategy": None,
            "status": status, "metrics": {"fid": fid}, "extra": {"other_metrics": {"fid_std": 1.4}, **extra}}


def test_table1_compares_each_objective_with_the_best_of_its_site():
    rows = [_row("baseline", fid=5.4), _row("attn-l2", "attn", fid=5.29, objective="l2"),
            _row("attn-l1", "attn", fid=5.67, objective="l1"), _row("attn-huber", "attn", fid=5.08, objective="huber"),
            _row("mlp-l2", "mlp", fid=6.06, objective="l2"), _row("mlp-l1", "mlp", fid=5.65, objective="l1")]
    assert table1_pairs(rows) == [("attn-l2", "attn-huber", "attn: objective vs the best of the site"),
                                  ("attn-l1", "attn-huber", "attn: objective vs the best of the site"),
                                  ("mlp-l2", "mlp-l1", "mlp: objective vs the best of the site")]


def test_grid_pairs_control_neighbours_and_r3_r6():
    rows = [_row("baseline"), _row("control-teacher-stage2")]
    for op in ("mlp_r3", "mlp_r6", "mlp_hyena_x"):
        for ratio, name in ((50, "interleaved50"), (75, "interleaved75"), (100, "full")):
            rows.append(_row(f"mlp-{op}-{name}", "mlp", op, ratio))
    rows.append(_row("mlp-self_graft-full", "mlp", "self_graft", 100))
    pairs = grid_pairs(rows)
    assert ("control-teacher-stage2", "baseline", "control vs baseline") in pairs
    assert ("mlp-self_graft-full", "control-teacher-stage2", "vs control (teacher + the same stage 2)") in pairs
    r3r6 = [(a, b) for a, b, k in pairs if k == "r=3 vs r=6"]
    assert r3r6 == [("mlp-mlp_r3-interleaved50", "mlp-mlp_r6-interleaved50"),
                    ("mlp-mlp_r3-interleaved75", "mlp-mlp_r6-interleaved75"), ("mlp-mlp_r3-full", "mlp-mlp_r6-full")]
    assert ("mlp-mlp_r3-interleaved75", "mlp-mlp_r3-interleaved50", "grid neighbours: next ratio") in pairs
    assert ("mlp-mlp_r6-full", "mlp-mlp_r6-interleaved50", "100 % vs 50 %") in pairs
    assert ("mlp-mlp_r6-interleaved50", "mlp-mlp_hyena_x-interleaved50", "grid neighbours: next operator") in pairs
    assert not any("self_graft" in a and "next" in k for a, b, k in pairs)  # controls are not grid neighbours
    assert len(pairs) == len(set(pairs))


def test_fig4_pairs():
    rows = [dict(_row("x10", "attn", "hyena_x", 50, stage2_data=10.0)),
            dict(_row("x20", "attn", "hyena_x", 50, stage2_data=20.0))]
    assert fig4a_pairs(rows) == [("x10", "x20", "10 % vs 20 % data")]
    b = [dict(_row(s, "attn", "hyena_x", 50), strategy=s) for s in ("interleaved50", "top_local", "deep")]
    assert fig4b_pairs(b) == [("top_local", "interleaved50", "strategy vs interleaved"),
                              ("deep", "interleaved50", "strategy vs interleaved")]


class _Evals:
    def __init__(self, data):
        self.data = data

    def get(self, rid):
        return self.data[rid]


PAIRING = {"path": "in_process", "seed": 0, "batch_size": 100, "num_samples": 4}


def test_compare_paired_unpaired_and_old_runs():
    rows = {r: _row(r) for r in ("a", "b", "c", "old")}
    v = np.array([5.0, 5.2, 4.9, 5.1])
    evals = _Evals({"a": ({"pairing": PAIRING, "metrics": {"fid": 5.5}}, v + 0.5),
                    "b": ({"pairing": PAIRING, "metrics": {"fid": 5.0}}, v),
                    "c": ({"pairing": {**PAIRING, "batch_size": 50}, "metrics": {"fid": 5.0}}, v),
                    "old": ({"metrics": {"fid": 5.0}}, None)})
    e = compare(evals, rows, "a", "b", "k")
    assert e["diff"] == 0.5 and e["std"] == 0 and e["excludes_zero"] and e["unpaired_std"] == [1.4, 1.4]
    refused = compare(evals, rows, "a", "c", "k")
    assert "diff" not in refused and "batch_size differs" in refused["error"] and "\n" not in refused["error"]
    assert "rerun its eval" in compare(evals, rows, "old", "b", "k")["error"]


def test_tables_mark_differences_that_exclude_zero():
    rows = [_row("a"), _row("b"), _row("c")]
    comparisons = {"pairs": [
        {"a": "a", "b": "b", "kind": "k", "diff": 0.4, "lo": 0.1, "hi": 0.7, "std": 0.15, "excludes_zero": True,
         "unpaired_std": [1.4, 1.3]},
        {"a": "c", "b": "b", "kind": "k", "diff": 0.1, "lo": -0.2, "hi": 0.4, "std": 0.15, "excludes_zero": False,
         "unpaired_std": [1.4, 1.3]},
        {"a": "a", "b": "c", "kind": "k2", "error": "a vs c are not paired: seed differs (0 vs 1)"}]}
    tex = render_paired(comparisons, rows, preset="tiny", target="table1")
    assert r"\textbf{+0.40$^\ast$} & \textbf{[0.10, 0.70]}" in tex
    assert "+0.10 & [$-$0.20, 0.40]" in tex
    assert "not paired: seed differs" in tex and "training-seed variance" in tex
    frame = paired_frame(comparisons, rows)
    assert list(frame["excludes_zero"]) == [True, False, False]
    assert render_paired({"pairs": []}, rows, preset="tiny", target="table1") == ""
