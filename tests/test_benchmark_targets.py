"""Targets, rows and run identity: every paper item registered, ids stable and path-free, shared steps shared."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import targets
from benchmark.cost import teacher_present
from benchmark.dag import Planner, make_node
from benchmark.launch import all_nodes, plan_targets
from benchmark.status import node_states
from benchmark.store import Store
from benchmark.summary import write_summary
from graft_core.grafting.plan import GraftPlan
from graft_core.presets import get_preset
from graft_core.table_rows import FIG4A_OPERATORS, declared_rows
from tables import paper as paper_module
from tables import registry
from tables.common import latex_escape
from tables.loader import load_summary_with_meta

REPO = Path(__file__).resolve().parents[1]
PAPER_TABLE4 = 29


def plan(tmp_path, preset, *names):
    return plan_targets(Store(tmp_path, preset), targets.expand(list(names)))


def rows_by_id(tp):
    return {rp.row.id: rp for rp in tp.row_plans}


def test_registry_lists_every_paper_item():
    assert targets.names() == ["baseline", "table1", "table2", "table3", "table4", "table5", "table6", "fig2",
                               "fig4a", "fig4b", "search", "all"]
    # ``all`` is the paper's items; the layer search (beyond the paper) is asked for by name
    assert [m.NAME for m in targets.expand(["all"])] == ["baseline", "table1", "table2", "table3", "table5", "table6",
                                                         "fig2", "fig4a", "fig4b"]
    with pytest.raises(targets.UnknownTarget, match="choose from: baseline"):
        targets.get_target("table9")


@pytest.mark.parametrize("preset", ["micro", "tiny", "paper"])
def test_every_target_plans_on_every_preset(tmp_path, preset):
    plans = plan(tmp_path, preset, "all", "table4")
    counts = {tp.name: len(tp.row_plans) for tp in plans}
    small = 2 if preset == "paper" else 4  # + the stage-1-only row and the control on the small presets
    assert counts == {"baseline": 3, "table1": 9, "table2": 8, "table3": 30, "table5": small, "table6": small, "fig2": 1,
                      "fig4a": 10, "fig4b": 4, "table4": 30}
    for tp in plans:
        for rp in tp.row_plans:
            assert len({rp.row.id for rp in tp.row_plans}) == len(tp.row_plans)
            assert rp.final is not None or rp.blocked


def test_table3_is_the_paper_grid_plus_one_control(tmp_path):
    (tp,) = plan(tmp_path, "paper", "table3")
    ids = [rp.row.id for rp in tp.row_plans]
    assert len(ids) == PAPER_TABLE4 + 1 and "control-teacher-stage2" in ids
    grafted = [rp for rp in tp.row_plans if rp.row.ratio and rp.row.operator not in ("random_init", "self_graft")]
    assert len(grafted) == 24
    by = rows_by_id(tp)
    assert by["attn-swa-interleaved50"].layers == tuple(range(1, 28, 2))
    assert by["mlp-mlp_r6-interleaved75"].layers == tuple(i for i in range(28) if i % 4)
    assert by["attn-mamba2-full"].layers == tuple(range(28))
    assert by["attn-random_init-full"].row.init == "random" and not by["attn-random_init-full"].row.finetune
    # random init: teacher + eval only, no training of any kind
    # paper eval = a sampling array of eval.sample_tasks tasks + one ADM metrics job
    tasks = by["attn-random_init-full"].row.preset.eval.sample_tasks
    assert [n.kind for n in by["attn-random_init-full"].nodes] == ["teacher"] + ["sample"] * tasks + ["eval"]
    # stage-1 settings per site: L1 for MHA, L2 for MLP (Table 1), paper lr 1e-4
    s1 = [n for n in by["attn-hyena_x-full"].nodes if n.kind == "stage1"][0].config["stage1"]
    assert (s1["objective"], s1["lr"], s1["epochs"]) == ("l1", 1e-4, 200)
    s1 = [n for n in by["mlp-mlp_r3-full"].nodes if n.kind == "stage1"][0].config["stage1"]
    assert s1["objective"] == "l2"


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_driver_summaries_read_into_the_tables_declared_rows(tmp_path, preset):
    """The summaries the driver writes (before any run: every row pending) load into the tables with every row
    matched to its declaration (none unmatched, no problem reported), labelled and grouped as the paper prints it,
    and every declared row the preset plans is there — Table 6's depth-named ids on tiny included."""
    store = Store(tmp_path, preset)
    for tp in plan(tmp_path, preset, "all", "table4", "search"):
        if tp.name not in registry.TARGETS and tp.name not in registry.ALIASES:
            continue
        states = node_states(store, [n for rp in tp.row_plans for n in rp.nodes], ask_slurm=False)
        write_summary(store, tp.name, tp.row_plans, states, log=lambda _: None)
        loaded = load_summary_with_meta(tmp_path, preset, tp.name)
        assert loaded.found and not loaded.problems, loaded.problems
        on_disk = {r["disk_row"]: r for r in loaded.rows if r["origin"] == "results"}
        assert set(on_disk) == {rp.row.id for rp in tp.row_plans}
        declared = {d.id: d for d in declared_rows(tp.name, preset)}
        for rp in tp.row_plans:
            d, r = declared[rp.row.id], on_disk[rp.row.id]
            assert (rp.row.label, rp.row.group) == (d.label, d.group)
            assert r["group"] == d.group
            assert r["label"] == (d.latex if d.latex is not None else latex_escape(d.label))
            # what the driver computes agrees with the declaration (a row without a graft has no strategy of its own:
            # the tables fill it from the declaration)
            for ours, theirs in zip((rp.row.site, rp.row.operator, rp.row.ratio, rp.row.strategy),
                                    (d.site, d.operator, d.ratio, d.strategy)):
                assert ours in (None, theirs), (rp.row.id, ours, theirs)
        # the rows a table leaves out are exactly the diagnostic ones this preset does not plan
        missing = {r["row"] for r in loaded.rows if r["origin"] == "registry"}
        assert all(r["extra"].get("diagnostic") for r in loaded.rows if r["row"] in missing), missing


def test_every_published_number_lands_on_a_declared_row_bound_to_its_csv():
    """The paper binding: each row declared as published by a CSV gets that CSV's numbers, and no CSV row is
    dropped for want of a declared row."""
    for target in registry.TARGETS:
        published = {rid for rid, _ in paper_module._published(target)}
        bound = {d.id for d in declared_rows(target) if d.paper is not None}
        assert published == bound, (target, published ^ bound)
    # Fig. 4a's declared operator order is the published figure's
    fig4a = [registry.paper_stem("attn", rec["operator"]) for rec in paper_module.read_csv("fig4a")]
    assert FIG4A_OPERATORS == tuple(dict.fromkeys(fig4a))


# ------------------------------------------------------------------------------------------------------ run identity
def test_run_ids_are_stable_and_path_free(tmp_path):
    a = {n.key for n in all_nodes(plan(tmp_path / "one", "tiny", "all"))}
    b = {n.key for n in all_nodes(plan(tmp_path / "two" / "elsewhere", "tiny", "all"))}
    assert a == b  # the results folder is not part of any id
    for n in all_nodes(plan(tmp_path, "tiny", "all")):
        text = json.dumps(n.config)
        assert str(tmp_path) not in text and "/work" not in text and "results" not in text
        assert n.run_id == make_node(n.kind, {k: v for k, v in n.config.items() if k not in ("kind", "version")}).run_id
    # the hashing scheme itself is pinned: changing it silently would orphan every stored run
    assert make_node("eval", {"preset": "x", "model": {"source": "teacher"}}).run_id == "0456f78495d8db0a"


def test_run_ids_do_not_depend_on_the_process(tmp_path):
    code = ("from benchmark.launch import all_nodes, plan_targets; from benchmark.store import Store; "
            "from benchmark import targets; "
            "print(sorted(n.key for n in all_nodes(plan_targets(Store('r', 'tiny'), targets.expand(['table3'])))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert eval(out) == sorted(n.key for n in all_nodes(plan(tmp_path, "tiny", "table3")))  # noqa: S307


def test_objective_spelled_or_defaulted_is_one_run():
    import dataclasses

    p = get_preset("tiny")
    explicit = p.replace(stage1=dataclasses.replace(p.stage1, objective="l1", lr=p.stage1.lr_for("attn")))
    a = Planner().stage1(p, "attn", "mha", {}, 3)
    b = Planner().stage1(explicit, "attn", "mha", {}, 3)
    assert a.key == b.key
    assert Planner().stage1(p, "attn", "mha", {}, 4).key != a.key


# ------------------------------------------------------------------------------------------------------ sharing
def stage1_keys(rp):
    return {n.key for n in rp.nodes if n.kind == "stage1"}


def test_shared_steps_resolve_to_one_run(tmp_path):
    plans = {tp.name: tp for tp in plan(tmp_path, "tiny", "table1", "table2", "table3", "fig4a", "fig4b")}
    t3 = rows_by_id(plans["table3"])
    for op in ("attn-hyena_x", "attn-swa", "mlp-mlp_r3", "mlp-mlp_hyena_x"):
        full = stage1_keys(t3[f"{op}-full"])
        assert len(full) == 8
        assert stage1_keys(t3[f"{op}-interleaved50"]) < full
        assert stage1_keys(t3[f"{op}-interleaved75"]) < full
        assert t3[f"{op}-interleaved50"].final.key != t3[f"{op}-full"].final.key
    # one teacher and one pair of captures for the whole grid
    nodes = all_nodes([plans["table3"]])
    assert sum(n.kind == "teacher" for n in nodes) == 1 and sum(n.kind == "capture" for n in nodes) == 2
    assert sum(n.kind == "stage1" for n in nodes) == 2 * 8 + 5 * 8 + 3 * 8  # self-grafts + 5 MHA + 3 MLP ops
    # fig4a's 10 % rows and fig4b's interleaved row *are* table3's 50 % rows; 20 % rows reuse their stage 1
    fa, fb = rows_by_id(plans["fig4a"]), rows_by_id(plans["fig4b"])
    assert fa["attn-hyena_x-interleaved50-data10"].final.key == t3["attn-hyena_x-interleaved50"].final.key
    assert fb["attn-hyena_x-interleaved50"].final.key == t3["attn-hyena_x-interleaved50"].final.key
    d20 = fa["attn-hyena_x-interleaved50-data20"]
    assert d20.final.key != t3["attn-hyena_x-interleaved50"].final.key
    assert stage1_keys(d20) == stage1_keys(t3["attn-hyena_x-interleaved50"])
    # Table 2's 10 % self-grafting rows are Table 3's self-grafting rows (paper §12.6); table1's L1 MHA layers too
    t2, t1 = rows_by_id(plans["table2"]), rows_by_id(plans["table1"])
    assert t2["attn-self_graft-full-s1_0.63-s2_10"].final.key == t3["attn-self_graft-full"].final.key
    assert stage1_keys(t1["attn-l1"]) <= stage1_keys(t3["attn-self_graft-full"])
    assert not stage1_keys(t1["attn-l2"]) & stage1_keys(t3["attn-self_graft-full"])
    # the stage-1-only row and the finetuned rows share their stage 1, not their model
    s1only = t2["attn-self_graft-full-s1_0.63"]
    assert stage1_keys(s1only) == stage1_keys(t3["attn-self_graft-full"])
    assert [n.kind for n in s1only.nodes].count("stage2") == 0


def test_control_row_shares_only_the_teacher(tmp_path):
    (tp,) = plan(tmp_path, "tiny", "table3")
    by = rows_by_id(tp)
    control = by["control-teacher-stage2"]
    assert [n.kind for n in control.nodes] == ["teacher", "stage2", "eval"]
    s2 = next(n for n in control.nodes if n.kind == "stage2")
    assert s2.config["plan"] is None and s2.config["init"] is None
    grafted_s2 = next(n for n in by["attn-hyena_x-interleaved50"].nodes if n.kind == "stage2")
    assert s2.config["stage2"] == grafted_s2.config["stage2"]  # the *same* stage 2 …
    others = {n.key for rp in tp.row_plans if rp is not control for n in rp.nodes}
    assert {n.key for n in control.nodes} & others == {control.nodes[0].key}  # … but only the teacher is shared


def test_table_extras(tmp_path):
    plans = {tp.name: rows_by_id(tp) for tp in plan(tmp_path, "tiny", "table1", "table2", "fig4a", "fig4b")}
    assert plans["table1"]["mlp-huber"].row.extra["objective"] == "huber"
    assert plans["table1"]["attn-l2"].layers == (0, 2, 4, 6, 7)
    t2 = plans["table2"]
    assert [t2[r].row.extra["stage2_data"] for r in ("attn-self_graft-full-s1_0.63",
                                                     "attn-self_graft-full-s1_0.63-s2_0.63",
                                                     "attn-self_graft-full-s1_0.63-s2_5",
                                                     "attn-self_graft-full-s1_0.63-s2_10")] == [None, 0.63, 5.0, 10.0]
    s2 = next(n for n in t2["attn-self_graft-full-s1_0.63-s2_5"].nodes if n.kind == "stage2").config["stage2"]
    tiny_steps = get_preset("tiny").stage2.steps
    assert s2["data_fraction"] == 0.05 and s2["steps"] == round(tiny_steps * 3 / 5)  # paper: 30k vs Table 4's 50K
    assert plans["fig4a"]["attn-swa-interleaved50-data20"].row.extra["stage2_data"] == 20.0
    assert plans["fig4b"]["attn-hyena_x-deep"].row.extra["strategy"] == "deep"
    assert plans["fig4b"]["attn-hyena_x-top_local"].blocked  # waits for the locality run


# ------------------------------------------------------------------------------------------------------ plans
def test_plan_dicts_round_trip_through_graft_plan(tmp_path):
    for tp in plan(tmp_path, "tiny", "table3"):
        for rp in tp.row_plans:
            for n in rp.nodes:
                d = n.config.get("plan") or n.config.get("model", {}).get("plan")
                if d:
                    assert GraftPlan.from_dict(d).to_dict() == d


def test_dry_run_finds_the_shipped_teacher_from_the_planned_config(tmp_path, monkeypatch):
    """``--dry-run`` rebuilds the teacher's configs from its node to look up the shipped weights."""
    import dataclasses

    monkeypatch.setenv("GRAFTBENCH_CACHE", str(tmp_path))  # only the shipped assets count
    p = get_preset("tiny")
    assert teacher_present(Planner.teacher(p).config)
    other = p.replace(teacher=dataclasses.replace(p.teacher, train_steps=p.teacher.train_steps + 1))
    assert not teacher_present(Planner.teacher(other).config)
    assert teacher_present(Planner.teacher(get_preset("paper")).config)  # pretrained: assumed downloaded


def test_table5_settings_are_part_of_the_run_identity(tmp_path, monkeypatch):
    """table5's experiment settings (T2IConfig) and the PixArt teacher's config are hashed into its runs: changing the
    sampler changes the synthetic pairs and every run after them, not the teacher."""
    from benchmark.targets import table5

    def keys():
        (tp,) = plan(tmp_path, "tiny", "table5")
        return {n.key for rp in tp.row_plans for n in rp.nodes}

    before = keys()
    monkeypatch.setitem(table5.T2I_PRESETS, "tiny", dataclasses.replace(table5.T2I_PRESETS["tiny"], steps=11))
    after = keys()
    changed = {k.split("/")[0] for k in before - after}
    assert {k for k in before & after} == {k for k in before if k.startswith("teacher/")}
    assert changed == {"synthetic", "stage1_online", "stage2", "eval", "latency"}


def test_table5_is_ordinary_steps(tmp_path):
    """PixArt grafting expands into the teacher, a synthetic-pair array, one online stage 1 of every grafted layer
    (no capture, on every preset), LoRA stage 2, eval and latency; the diagnostic rows share the runs."""
    from graft_core.grafting.plan import pixart_layers

    (tp,) = plan(tmp_path, "tiny", "table5")
    rps = {rp.row.id: rp for rp in tp.row_plans}
    grafted = rps["attn-hyena_x-pixart"]
    kinds = [n.kind for n in grafted.nodes]
    assert kinds.count("stage1_online") == 1 and kinds.count("synthetic") == 1
    assert not {"capture", "stage1"} & set(kinds)
    assert [n.kind for n in grafted.extras] == ["latency"] and grafted.layers == (2, 4, 6, 7)
    s2 = next(n for n in grafted.nodes if n.kind == "stage2")
    assert s2.config["stage2"]["lora_rank"] == 8 and s2.config["plan"]["layers"] == [2, 4, 6, 7]
    assert all("pixart" in n.config for n in grafted.nodes)
    stage1 = {n.key for n in grafted.nodes if n.kind == "stage1_online"}
    assert stage1 == {n.key for n in rps["attn-hyena_x-pixart-stage1"].nodes if n.kind == "stage1_online"}
    assert s2.config["init"] == {"stage1_online": stage1.pop().split("/")[1], "layers": [2, 4, 6, 7]}
    control = next(n for n in rps["control-teacher-lora"].nodes if n.kind == "stage2")
    assert control.config["plan"] is None and control.config["synthetic"] == s2.config["synthetic"]
    (paper,) = plan(tmp_path, "paper", "table5")
    paper_nodes = [n for rp in paper.row_plans for n in rp.nodes]
    assert not {"capture", "stage1"} & {n.kind for n in paper_nodes}
    (online,) = {n.key: n for n in paper_nodes if n.kind == "stage1_online"}.values()
    assert online.config["plan"]["layers"] == list(pixart_layers(28))
    assert online.config["ranges"] == {"stage1": [0, 8000], "heldout": [8000, 12000]}
    syn = [n for rp in paper.row_plans for n in rp.nodes if n.kind == "synthetic"]
    assert len({n.key for n in syn}) == 16 and syn[0].config["synthetic"]["num_pairs"] == 12_000
    from graft_core.text_to_image.pixart import PIXART_PRESETS
    from benchmark.targets.table5 import PIXART_DEPTH

    assert {k: v.num_layers for k, v in PIXART_PRESETS.items()} == PIXART_DEPTH


def test_table6_is_ordinary_steps_sharing_stage1_between_its_rows(tmp_path):
    """Depth→width expands into captures, one stage-1 run per block pair, stage 2 with the lr halvings, eval and
    latency; the stage-1-only row reuses the pairs' runs; the paper preset captures per pair of blocks."""
    (tp,) = plan(tmp_path, "tiny", "table6")
    rps = {rp.row.id: rp for rp in tp.row_plans}
    par, s1only = rps["parallel-depth4"], rps["parallel-depth4-stage1"]
    kinds = [n.kind for n in par.nodes]
    assert kinds.count("stage1") == 4 and kinds.count("capture") == 2 and [n.kind for n in par.extras] == ["latency"]
    s2 = next(n for n in par.nodes if n.kind == "stage2")
    assert s2.config["plan"] == {"restructure": "parallel_pairs"}
    assert s2.config["stage2"]["lr_milestones"] == [300, 450] and s2.config["stage2"]["data_fraction"] == 0.25
    assert {n.key for n in par.nodes if n.kind == "stage1"} == {n.key for n in s1only.nodes if n.kind == "stage1"}
    pair = next(n for n in par.nodes if n.kind == "stage1")
    assert pair.config["site"] == "block_pair" and pair.config["stage1"]["objective"] == "l1"
    assert pair.config["stage1"]["lr"] == 1e-4
    (paper,) = plan(tmp_path, "paper", "table6")
    caps = [n for rp in paper.row_plans for n in rp.nodes if n.kind == "capture"]
    assert len({n.key for n in caps}) == 28 and caps[0].config["pairs"] == [[0, "block"], [1, "block"]]
    s2 = next(n for rp in paper.row_plans for n in rp.nodes if n.kind == "stage2")
    assert s2.config["stage2"]["steps"] == 200_000 and s2.config["stage2"]["lr_milestones"] == [75_000, 150_000]


