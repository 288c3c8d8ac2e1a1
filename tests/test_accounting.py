"""Efficiency accounting: every Table-4 Δ value, analytic = measured parameter counts."""
import copy
import csv
import dataclasses
from pathlib import Path

import pytest

from graft_core import operators
from graft_core.grafting.accounting import (PAPER_MAMBA2_DFLOPS, efficiency, measured_param_delta, operator_cost, site_params,
                                   table4_plans)
from graft_core.grafting.plan import make_plan
from graft_core.grafting.surgery import graft
from graft_core.models.teacher import build_dit

TABLE4 = Path(__file__).resolve().parents[1] / "tables" / "paper" / "table4.csv"
XL2 = dict(num_layers=28, dim=1152, num_heads=16, seq_len=256)
COLUMNS = {"d_flops_op": "dflops_op_pct", "d_flops_ft": "dflops_ft_pct", "d_param": "dparam_pct"}


def table4_rows():
    with open(TABLE4) as f:
        rows = {(r["group"], r["operator"], int(r["ratio_pct"])): r for r in csv.DictReader(f) if r["dparam_pct"]}
    assert len(rows) == 24
    return rows


CASES = [pytest.param(plan, (group, label, ratio), id=f"{group}-{label}-{ratio}")
         for group, label, ratio, plan in table4_plans()]


@pytest.mark.parametrize("plan,row_key", CASES)
def test_table4_deltas_reproduced(plan, row_key):
    row = table4_rows()[row_key]
    eff = efficiency(plan, **XL2)
    if plan.operator == "mamba2":  # formula UNKNOWN: ours is separate, the published value is exposed beside it
        assert eff["flops_source"].startswith("ours")
        assert (eff["paper_d_flops_op"], eff["paper_d_flops_ft"]) == (float(row["dflops_op_pct"]),
                                                                      float(row["dflops_ft_pct"]))
        columns = {"d_param": "dparam_pct"}
    else:
        assert eff["paper_d_flops_op"] is None
        columns = COLUMNS
    for ours, paper in columns.items():
        assert abs(eff[ours] - float(row[paper])) <= 0.01 + 1e-9, (ours, eff[ours], row[paper])


def test_mamba2_published_values_come_only_from_the_table():
    rows = table4_rows()
    for ratio, replaced in ((50, 14), (75, 21), (100, 28)):
        row = rows[("MHA", "Mamba-2", ratio)]
        assert PAPER_MAMBA2_DFLOPS[replaced] == (float(row["dflops_op_pct"]), float(row["dflops_ft_pct"]))
    tiny = efficiency(make_plan("attn", "mamba2", "interleaved50", num_layers=8), num_layers=8, dim=128,
                      num_heads=4, seq_len=64)
    assert tiny["paper_d_flops_op"] is None  # no published value outside the paper's configuration


def test_mlp_hyena_x_conv_count_is_the_alternative():
    plan = make_plan("mlp", "mlp_hyena_x", "full", num_layers=28)
    paper, conv = (efficiency(plan, **XL2, mlp_hyena_x_count=c)["d_flops_op"] for c in ("paper", "conv"))
    assert round(paper, 2) == 0.02 and round(conv, 2) == 0.28  # paper.md §15.2
    with pytest.raises(ValueError, match="mlp_hyena_x_count"):
        efficiency(plan, **XL2, mlp_hyena_x_count="both")


@pytest.mark.parametrize("name", operators.available())
@pytest.mark.parametrize("dim,heads,tokens", [(16, 2, 16), (128, 4, 64), (1152, 16, 256)])
def test_analytic_params_equal_built_modules(name, dim, heads, tokens):
    op = operators.build(name, dim, num_heads=heads, seq_len=tokens)
    assert operator_cost(name, dim, num_heads=heads, seq_len=tokens).params == sum(p.numel() for p in op.parameters())


@pytest.mark.parametrize("site,name,options", [("attn", "hyena_se", {}), ("attn", "mamba2", {}),
                                               ("mlp", "mlp", {"ratio": 3}), ("mlp", "mlp_hyena_x", {})])
def test_measured_param_delta_matches_analytic(micro_preset, site, name, options):
    cfg = dataclasses.replace(micro_preset.teacher, num_layers=4)
    original = build_dit(cfg)
    plan = make_plan(site, name, "interleaved75", num_layers=4, **options)
    grafted = graft(copy.deepcopy(original), plan)
    measured = measured_param_delta(original, grafted, site)
    analytic = efficiency(plan, num_layers=4, dim=cfg.hidden_size, num_heads=cfg.num_attention_heads,
                          seq_len=cfg.num_tokens)["d_param"]
    assert measured == pytest.approx(analytic, rel=1e-12, abs=1e-12)
    assert site_params(original, site) > 0
