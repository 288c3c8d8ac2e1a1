"""Graft plans: the paper's layer lists, validation messages, identity and serialisation."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from graft_core.config import stable_hash
from graft_core.grafting.plan import GraftPlan, as_plans, make_plan, select_layers

LAYERS_CSV = Path(__file__).resolve().parents[1] / "tables" / "paper" / "layers.csv"


def paper_layers():
    with open(LAYERS_CSV) as f:
        return {r["strategy"]: tuple(int(i) for i in r["indices_0based"].split(";")) for r in csv.DictReader(f)
                if r["indices_0based"]}


@pytest.mark.parametrize("strategy", ["full", "interleaved50", "interleaved75", "deep"])
def test_paper_indices_for_28_layers(strategy):
    assert select_layers(strategy, 28) == paper_layers()[strategy]


def test_rules_scale_to_the_tiny_teacher():
    assert select_layers("interleaved50", 8) == (1, 3, 5, 7)
    assert select_layers("interleaved75", 8) == (1, 2, 3, 5, 6, 7)
    assert select_layers("deep", 8) == (4, 5, 6, 7)
    assert select_layers("full", 2) == (0, 1)


def test_locality_strategies_take_half_the_layers_by_score():
    scores = [0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.3, 0.6]
    assert select_layers("top_local", 8, locality=scores) == (0, 3, 5, 7)
    assert select_layers("low_local", 8, locality=scores) == (1, 2, 4, 6)
    with pytest.raises(ValueError, match="one locality score per layer"):
        select_layers("top_local", 8, locality=scores[:5])
    with pytest.raises(ValueError, match="one locality score per layer"):
        select_layers("low_local", 8)


def test_explicit_indices_and_their_errors():
    assert select_layers([5, 1, 3], 8) == (1, 3, 5)
    with pytest.raises(ValueError, match="out of range .* 8 layers"):
        select_layers([1, 8], 8)
    with pytest.raises(ValueError, match="duplicate layer indices \\[3\\]"):
        select_layers([3, 3], 8)
    with pytest.raises(ValueError, match="unknown layer-selection strategy 'interleaved'"):
        select_layers("interleaved", 8)


def test_bad_plans_raise_clear_errors():
    with pytest.raises(ValueError, match="replaces the 'attn' site, not 'mlp'"):
        GraftPlan("mlp", "hyena_x", (1,))
    with pytest.raises(ValueError, match="unknown operator 'hyena'"):
        GraftPlan("attn", "hyena", (1,))
    with pytest.raises(ValueError, match="unknown site"):
        GraftPlan("cross", "mha", (1,))
    with pytest.raises(ValueError, match="does not take option"):
        GraftPlan("mlp", "mlp", (1,), options={"rate": 3})
    with pytest.raises(ValueError, match="at least one layer"):
        GraftPlan("attn", "mha", ())
    with pytest.raises(ValueError, match="out of range"):
        make_plan("attn", "swa", [0, 30], num_layers=28)


def test_seq_len_bound_operator_on_another_token_count():
    plan = make_plan("mlp", "mlp_hyena_x", "interleaved50", num_layers=8, seq_len=256)
    plan.check_model(8, 256)
    with pytest.raises(ValueError, match="bound to the token count .*seq_len=256.* 64 tokens"):
        plan.check_model(8, 64)
    make_plan("attn", "hyena_x", "full", num_layers=8, seq_len=256).check_model(8, 64)  # not bound: fine


def test_plans_are_hashable_canonical_and_round_trip_json():
    a = make_plan("mlp", "mlp", [3, 1], num_layers=4, ratio=3)
    b = GraftPlan(site="mlp", operator="mlp", layers=(1, 3), options=(("ratio", 3),))
    assert a == b and hash(a) == hash(b) and stable_hash(a) == stable_hash(b)
    assert a.option_dict == {"ratio": 3} and a == make_plan("mlp", "mlp", [1, 3], num_layers=4, ratio=3.0)
    assert a.to_dict() == {"site": "mlp", "operator": "mlp", "layers": [1, 3], "options": {"ratio": 3},
                           "seq_len": None}  # whole floats as ints: the form every stored step config hashed
    assert stable_hash(a.to_dict()) == stable_hash(make_plan("mlp", "mlp", [1, 3], num_layers=4, ratio=3.0).to_dict())
    assert stable_hash(a) != stable_hash(make_plan("mlp", "mlp", [1, 3], num_layers=4, ratio=6))
    back = GraftPlan.from_dict(json.loads(json.dumps(a.to_dict())))
    assert back == a and stable_hash(back) == stable_hash(a)


def test_several_site_edits():
    plans = (make_plan("attn", "hyena_y", "interleaved50", num_layers=4),
             make_plan("mlp", "mlp", "interleaved50", num_layers=4, ratio=3))
    assert as_plans(plans) == plans
    with pytest.raises(ValueError, match="edited twice"):
        as_plans(plans + (make_plan("attn", "swa", [3], num_layers=4),))


def test_plans_are_built_and_hashed_without_torch():
    """The driver plans every run without loading torch: plans validate against the registry's declarations."""
    code = ("import sys; from graft_core.grafting.plan import make_plan; "
            "p = make_plan('mlp', 'mlp', 'full', num_layers=4, ratio=3); "
            "assert p.to_dict()['options'] == {'ratio': 3}; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
