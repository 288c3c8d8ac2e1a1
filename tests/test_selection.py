"""Layer selection (``graft_core.grafting.selection``) and the ``search`` target: the strategies' contracts on constructed
losses and on a real micro teacher with one deliberately broken layer, the search's identity (a search that picks
table3's layers shares table3's runs), evaluations reused by id across budgets, and the target end to end."""
import dataclasses
import json

import pytest

from benchmark import targets
from benchmark.dag import Planner
from benchmark.launch import plan_targets
from benchmark.run import main
from benchmark.store import Store
from benchmark.targets import search as search_target
from benchmark.fakes.steps import FakeSteps
from graft_core.grafting.plan import select_layers
from graft_core.grafting.selection import STRATEGIES, Candidate, SelectionProblem, select


def additive(penalty: dict[int, float], op_factor: dict[str, float] | None = None):
    """A probe whose loss is 1 + Σ penalty[layer] · factor[op] over the swaps (counting its calls)."""
    calls = []

    def probe(swaps):
        calls.append(tuple(swaps))
        return 1.0 + sum(penalty[layer] * (op_factor or {}).get(op, 1.0) for layer, op in swaps)

    probe.calls = calls
    return probe


def problem(num_layers=8, k=4, probe=None, ops=(("x", 10.0),), errors=None, flops=0.0):
    cands = tuple(Candidate(layer, op, saved, (errors or {}).get(layer, 0.1 * ((3 * layer) % num_layers)))
                  for op, saved in ops for layer in range(num_layers))
    return SelectionProblem(num_layers=num_layers, candidates=cands, primary=ops[0][0], layers=k, flops=flops,
                            probe=probe)


# --------------------------------------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_count_strategies_return_k_distinct_valid_layers(k):
    probe = additive({i: 0.1 + 0.01 * ((5 * i) % 8) for i in range(8)})
    for name in ("stage1_error", "greedy"):
        sel = select(name, problem(k=k, probe=probe))
        assert len(sel.layers) == k and len(set(sel.layers)) == k
        assert all(0 <= layer < 8 for layer in sel.layers) and list(sel.layers) == sorted(sel.layers)
    sel = select("cost_aware", problem(k=k, probe=probe, flops=10.0 * k))
    assert len(sel.layers) == k  # one operator saving 10 per layer: exactly k layers reach the budget


def test_stage1_error_ranks_by_the_recorded_held_out_error():
    errors = {0: 0.5, 1: 0.05, 2: 0.3, 3: 0.01, 4: 0.9, 5: 0.2, 6: 0.05, 7: 0.6}
    assert select("stage1_error", problem(k=3, errors=errors)).layers == (1, 3, 6)  # tie 1/6 at 0.05: both kept
    assert select("stage1_error", problem(k=2, errors=errors)).layers == (1, 3)  # tie → lower index


@pytest.mark.parametrize("broken", [0, 3, 7])
def test_greedy_never_takes_a_broken_layer_below_full_depth(broken):
    penalty = {i: 0.01 * (1 + (7 * i) % 5) for i in range(8)}
    penalty[broken] = 100.0
    for k in range(1, 8):
        assert broken not in select("greedy", problem(k=k, probe=additive(penalty))).layers


def test_greedy_grows_by_least_loss_increase_and_is_prefix_consistent():
    penalty = {0: 0.5, 1: 0.1, 2: 0.4, 3: 0.2, 4: 0.3, 5: 0.6, 6: 0.7, 7: 0.8}
    picks = [select("greedy", problem(k=k, probe=additive(penalty))).layers for k in range(1, 8)]
    assert picks[3] == (1, 2, 3, 4)  # the four smallest penalties
    for small, big in zip(picks, picks[1:]):
        assert set(small) < set(big)  # the 75 % set extends the 50 % set: its evaluations are the same ones


def test_cost_aware_with_one_operator_is_greedy():
    penalty = {i: 0.05 * ((3 * i) % 8) + 0.01 for i in range(8)}
    for k in range(1, 8):
        assert select("cost_aware", problem(k=k, probe=additive(penalty), flops=10.0 * k)).layers == \
            select("greedy", problem(k=k, probe=additive(penalty))).layers


def test_cost_aware_trades_loss_per_flop_and_skips_operators_that_save_nothing():
    # "s" saves half the FLOPs of "x" for a third of its loss: per FLOP saved it is the better choice everywhere
    penalty = {i: 0.3 for i in range(4)}
    probe = additive(penalty, {"x": 1.0, "s": 1 / 3, "m": 0.0})
    sel = select("cost_aware", problem(num_layers=4, probe=probe, ops=(("x", 10.0), ("s", 5.0), ("m", -3.0)),
                                       flops=20.0))
    assert [op for _, op in sel.swaps] == ["s", "s", "s", "s"]  # 4 × 5 = the 20 FLOPs budget
    assert all(op != "m" for calls in probe.calls for _, op in calls)  # a swap that costs FLOPs is never tried


def test_strategies_are_a_registry_and_bad_requests_say_what_to_do():
    assert {"stage1_error", "greedy", "cost_aware"} <= set(STRATEGIES)
    with pytest.raises(ValueError, match="unknown selection strategy 'best'; choose one of"):
        select("best", problem())
    with pytest.raises(ValueError, match="needs a held-out loss probe"):
        select("greedy", problem())
    with pytest.raises(ValueError, match="budget of 9 layers"):
        select("stage1_error", problem(k=9))


# --------------------------------------------------------------------------------------------- a real broken layer
@pytest.mark.parametrize("broken", [2, 5])
def test_greedy_on_the_tiny_teacher_avoids_the_broken_layer(tmp_path, broken):
    """The shipped 8-layer tiny teacher; each layer's "stage-1 operator" is its own MHA copied from the teacher with
    a small perturbation (so the layers differ and greedy must rank them), except one whose weights are random
    (deliberately broken). The real probe (held-out diffusion loss on fixed noise) keeps greedy away from that layer
    at every budget below 8."""
    import torch

    from graft_core.stages.distill import assemble, save_result
    from graft_core.grafting.plan import GraftPlan
    from graft_core.presets import get_preset
    from graft_core.grafting.probe import ProbeConfig, probe_batch, probe_loss
    from graft_core.models.teacher import load_teacher

    p = get_preset("tiny")
    teacher = load_teacher(p)
    gen = torch.Generator().manual_seed(broken)
    dirs = {}
    for layer in range(8):
        state = teacher.transformer_blocks[layer].attn1.state_dict()
        noise = {k: torch.randn(v.shape, generator=gen) for k, v in state.items()}
        state = {k: noise[k] * 3.0 if layer == broken else v * (1 + 0.05 * noise[k]) for k, v in state.items()}
        dirs[layer] = tmp_path / f"layer{layer}"
        save_result(dirs[layer], state, {"val_mse": 0.0}, {"layer": layer})
    cfg = ProbeConfig(num_samples=10, timesteps=2, batch_size=20)
    batch = probe_batch(p, cfg)
    memo = {}

    def probe(swaps):
        if swaps not in memo:
            model = teacher if not swaps else assemble(
                teacher, GraftPlan(site="attn", operator="mha", layers=tuple(layer for layer, _ in swaps)), dirs)
            memo[swaps] = probe_loss(model, p, batch, batch_size=cfg.batch_size)
        return memo[swaps]

    assert probe(((broken, "mha"),)) > 10 * probe(())  # the broken operator really is broken
    cands = tuple(Candidate(layer, "mha", 1.0, 0.0) for layer in range(8))
    picks = []
    for k in range(1, 8):
        sel = select("greedy", SelectionProblem(num_layers=8, candidates=cands, primary="mha", layers=k, probe=probe))
        assert len(sel.layers) == k and broken not in sel.layers
        picks.append(sel.layers)
    assert picks[0] != (0,) or picks[1] != (0, 1)  # the ranking is the losses', not the layers' order


def test_a_probe_that_returns_nan_is_never_picked():
    probe = additive({i: 0.1 for i in range(4)})
    nan = lambda swaps: float("nan") if any(layer == 0 for layer, _ in swaps) else probe(swaps)  # noqa: E731
    for k in range(1, 4):
        assert 0 not in select("greedy", problem(num_layers=4, k=k, probe=nan)).layers


def test_probe_batch_is_fixed_and_stratified(micro_preset):
    from graft_core.grafting.probe import ProbeConfig, probe_batch

    cfg = ProbeConfig(num_samples=10, timesteps=4, seed=3)
    a, b = probe_batch(micro_preset, cfg), probe_batch(micro_preset, cfg)
    assert all(bool((a[k] == b[k]).all()) for k in a)
    assert len(a["x0"]) == 40
    buckets = (a["t"] * 4 // micro_preset.teacher.num_train_timesteps).view(10, 4)
    assert bool((buckets == buckets.new_tensor([0, 1, 2, 3])).all())  # each image at one t per quarter


# --------------------------------------------------------------------------------------------- planning and identity
def by_id(plans, target):
    return {rp.row.id: rp for tp in plans if tp.name == target for rp in tp.row_plans}


def test_search_rows_share_the_paper_rows_runs(tmp_path):
    plans = plan_targets(Store(tmp_path, "tiny"), targets.expand(["search", "table3", "fig4b"]))
    search, table3, fig4b = by_id(plans, "search"), by_id(plans, "table3"), by_id(plans, "fig4b")
    for rid in ("attn-hyena_x-interleaved50", "attn-hyena_x-interleaved75", "mlp-mlp_r3-interleaved50"):
        assert [n.key for n in search[rid].nodes] == [n.key for n in table3[rid].nodes]
    assert [n.key for n in search["attn-hyena_x-top_local"].nodes] == \
        [n.key for n in fig4b["attn-hyena_x-top_local"].nodes]
    # every search reads the stage-1 runs of table3's 100 % rows (one per layer), nothing of its own
    full = {n.key for n in table3["attn-hyena_x-full"].nodes if n.kind == "stage1"}
    greedy = search["attn-hyena_x-greedy50"]
    assert greedy.blocked and greedy.waiting_for.kind == "search"
    assert {n.key for n in greedy.nodes if n.kind == "stage1"} == full
    cost = search["attn-hyena_x-cost_aware50"]
    assert {n.key for n in cost.nodes if n.kind == "stage1"} >= full | \
        {n.key for n in table3["attn-swa-full"].nodes if n.kind == "stage1"}
    # Mamba-2 saves no FLOPs on the tiny teacher: it is not among the choices (no stage-1 run planned for it)
    assert [o for o, _ in cost.row.search.operators] == ["hyena_x", "swa"]
    # strategy and budget enter the search's identity
    keys = {search[f"attn-hyena_x-{s}{r}"].waiting_for.key for s in ("greedy", "stage1_error", "cost_aware")
            for r in (50, 75)}
    assert len(keys) == 6


def test_dry_run_counts_the_runs_of_rows_still_waiting(tmp_path, capsys):
    assert main(["search", "--preset", "tiny", "--dry-run", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "search    " in out  # the step kind's resources
    assert "plus, once the 11 row(s) waiting for a locality or search result are planned" in out


def test_a_search_that_picks_interleaved_layers_is_table3s_row(tmp_path):
    p_rows = {r.id: r for r in search_target.rows("tiny")}
    t3 = {r.id: r for r in targets.get_target("table3").rows("tiny")}
    odd = select_layers("interleaved50", 8)
    planner = Planner(search_reader=lambda node: [[layer, "hyena_x", {}] for layer in odd])
    searched = planner.expand("search", p_rows["attn-hyena_x-greedy50"])
    fixed = Planner().expand("table3", t3["attn-hyena_x-interleaved50"])
    tail = lambda rp: [n.key for n in rp.nodes if n.kind in ("stage2", "eval")]  # noqa: E731
    assert tail(searched) == tail(fixed) and searched.final.key == fixed.final.key
    assert searched.layers == odd


def test_a_per_layer_choice_of_operators_is_one_plan_per_operator(tmp_path):
    from benchmark.families.dit import efficiency
    from graft_core.presets import get_preset

    row = {r.id: r for r in search_target.rows("tiny")}["attn-hyena_x-cost_aware50"]
    chosen = [[1, "hyena_x", {}], [3, "swa", {"window": 4}], [5, "hyena_x", {}], [6, "swa", {"window": 4}]]
    rp = Planner(search_reader=lambda node: chosen).expand("search", row)
    s2 = next(n for n in rp.nodes if n.kind == "stage2")
    plan = s2.config["plan"]
    assert [(q["operator"], q["layers"]) for q in plan] == [("hyena_x", [1, 5]), ("swa", [3, 6])]
    assert set(s2.config["init"]["stage1"]) == {"1", "3", "5", "6"}
    assert rp.layers == (1, 3, 5, 6) and rp.row.extra["operators"] == {"1": "hyena_x", "3": "swa", "5": "hyena_x",
                                                                        "6": "swa"}
    from benchmark.run import _table4_columns

    p = get_preset("tiny")
    both, x, s = efficiency(p, plan), efficiency(p, plan[0]), efficiency(p, plan[1])
    assert f"ΔFLOPs op {both['d_flops_op']:+.2f}" in _table4_columns(rp)
    for k in ("d_flops_op", "d_flops_ft", "d_param"):
        assert both[k] == pytest.approx(x[k] + s[k])


# --------------------------------------------------------------------------------------------- end to end (fakes)
def cli(tmp_path, *args):
    return main([*args, "--results-dir", str(tmp_path), "--quiet", "--executor", "debug"], execute=FakeSteps())


def search_record(tmp_path, preset, row_id):
    rp = by_id(plan_targets(Store(tmp_path, preset), [search_target]), "search")[row_id]
    s = next(n for n in rp.nodes if n.kind == "search")
    return json.loads((Store(tmp_path, preset).run("search", s.run_id).folder / "metrics.json").read_text())


def test_search_target_on_micro_then_nothing_to_launch(tmp_path, capsys):
    assert cli(tmp_path, "search", "--preset", "micro") == 0
    summary = json.loads((tmp_path / "micro" / "search" / "summary.json").read_text())
    k = search_target.budget_layers(2, 50)
    for r in summary["rows"]:
        assert r["status"] == "done", r
        assert len(r["extra"]["layers"]) == search_target.budget_layers(2, r["ratio"]) == k
    assert (tmp_path / "micro" / "tables" / "search.tex").exists()
    assert (tmp_path / "micro" / "figures" / "search_fid_vs_flops.png").exists()
    capsys.readouterr()
    assert cli(tmp_path, "search", "--preset", "micro") == 0
    assert "launched 0 runs" in capsys.readouterr().out


def test_a_new_budget_reuses_the_evaluations_by_id(tmp_path):
    """Greedy at 50 % on the 8-layer tiny teacher: 1 + 8 + 7 + 6 + 5 evaluations; at 75 % the same first four steps
    and two more (4 + 3): only those are evaluated, the 27 others are read back by id."""
    assert cli(tmp_path, "search", "--preset", "tiny", "--rows", "attn-hyena_x-greedy50") == 0
    first = search_record(tmp_path, "tiny", "attn-hyena_x-greedy50")
    assert first["probes"] == {"evaluated": 27, "reused": 0}
    assert cli(tmp_path, "search", "--preset", "tiny", "--rows", "attn-hyena_x-greedy75") == 0
    second = search_record(tmp_path, "tiny", "attn-hyena_x-greedy75")
    assert second["probes"] == {"evaluated": 7, "reused": 27}
    assert set(first["layers"]) < set(second["layers"]) and len(second["layers"]) == 6
