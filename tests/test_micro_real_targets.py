"""Table 1's objective rows, Table 2 and Figure 4a on the micro preset with the real graft_core steps, through the CLI.

The launcher tests drive these targets with fake steps (``benchmark.fakes.steps``); this runs them for real (debug
executor, in this process) so that a target whose rows the real steps cannot build, or whose summary cannot read what
the real steps wrote, fails here. Micro is too weak for FID orderings (its teacher trains 20 steps,
its eval draws 40 samples; those live in ``test_tiny_quantitative``). Checked: every row is done with a finite FID
(or its per-layer activation statistics); Table 1's objectives reach the stage-1 runs and its summary's
``stage1_val_mse`` is their recorded mean; stage 2 trains on the data share Table 2 and Figure 4a name; stage 1 lowers
every layer's held-out MSE below its value at initialisation. About 40 s on one core (21 s CPU; two runs gave
identical numbers); a stage 1 that never steps its optimizer fails the last test.
"""
from __future__ import annotations

import json
import math

import pytest

from benchmark.run import main

pytestmark = pytest.mark.slow

TARGETS = ("table1", "table2", "fig4a")


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro-real")
    assert main([*TARGETS, "--preset", "micro", "--executor", "debug", "--results-dir", str(root), "--quiet"]) == 0
    store = root / "micro"
    summaries = {t: json.loads((store / t / "summary.json").read_text()) for t in TARGETS}
    stage1 = [json.loads(p.read_text()) for p in (store / "runs" / "stage1").glob("*/metrics.json")]
    return store, summaries, stage1


def test_every_row_is_done_with_real_metrics(micro_run):
    _, summaries, _ = micro_run
    for target, summary in summaries.items():
        for row in summary["rows"]:
            assert row["status"] == "done", (target, row)
            if row["row"].endswith("activation_stats"):  # Table 1's statistics rows: one entry per micro layer
                layers = row["extra"]["activation_stats"]["layers"]
                assert [entry["layer"] for entry in layers] == [0, 1], row
                assert all(entry["variance"] > 0 for entry in layers), row
            else:
                assert math.isfinite(row["metrics"]["fid"]) and row["metrics"]["fid"] > 0, (target, row)


def test_table1_objectives_reach_stage1_and_its_summary_reads_their_mse(micro_run):
    """Each objective row's ``stage1_val_mse`` is the mean of the held-out MSEs its own stage-1 runs recorded."""
    _, summaries, stage1 = micro_run
    recorded = {}
    for m in stage1:
        if m["num_samples"] == max(x["num_samples"] for x in stage1):  # Table 1 uses the full stage-1 data
            recorded.setdefault((m["operator"], m["objective"]), {})[m["layer"]] = m["val_mse"]
    rows = {r["row"]: r for r in summaries["table1"]["rows"]}
    for site, operator in (("attn", "mha"), ("mlp", "mlp")):  # Table 1 distils the teacher's own operators
        for objective in ("l2", "l1", "huber"):
            row = rows[f"{site}-{objective}"]
            assert row["extra"]["objective"] == objective
            mses = recorded[(operator, objective)]
            assert sorted(mses) == row["extra"]["layers"] == [0, 1]
            assert row["extra"]["stage1_val_mse"] == pytest.approx(sum(mses.values()) / len(mses), rel=1e-12)


def test_stage2_trains_on_the_data_fraction_its_rows_name(micro_run):
    """Table 2 (0.63 %, 5 %, 10 % of the data) and Figure 4a (10 %, 20 %): the real stage-2 runs train on that
    share of the images, so more data means proportionally more images."""
    store, _, _ = micro_run
    shares = {}
    for run in (store / "runs" / "stage2").iterdir():
        fraction = json.loads((run / "config.json").read_text())["config"]["stage2"]["data_fraction"]
        shares.setdefault(fraction, set()).add(json.loads((run / "metrics.json").read_text())["num_train_images"])
    print(shares)
    assert {0.0063, 0.05, 0.1, 0.2} <= set(shares)
    assert all(len(images) == 1 for images in shares.values()), shares
    images = {fraction: next(iter(n)) for fraction, n in shares.items()}
    assert images[0.2] == 2 * images[0.1] == 4 * images[0.05]
    assert images[0.0063] < images[0.05]


def test_stage1_lowers_every_layers_held_out_mse(micro_run):
    _, _, stage1 = micro_run
    assert stage1
    for m in stage1:
        assert m["val_mse"] < m["initial_val_mse"], m
