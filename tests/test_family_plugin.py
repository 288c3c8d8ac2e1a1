"""A model family in one file: ``tests/plugins/latte_family.py`` registers Latte (a video DiT the suite does not use
otherwise) and its target; the operators' contract holds on its blocks (self-graft conformance), a site it does not
offer is refused in one line, and one micro row runs end to end through ``python -m benchmark.run``. Also: a plug-in
that cannot be imported is refused in one line naming the file and the line."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "plugins" / "latte_family.py"


@pytest.fixture(scope="module")
def latte():
    """The plug-in loaded in this process, and unloaded afterwards (its family and target leak into no other test)."""
    from benchmark import family, targets
    from graft_core.operators import registry

    registry.load_plugins([str(PLUGIN)])
    yield sys.modules["graftbench_plugin_latte_family"]
    family._FAMILIES.pop("latte", None)
    targets.TARGETS.pop("latte", None)
    registry._LOADED.remove(str(PLUGIN))
    sys.modules.pop("graftbench_plugin_latte_family", None)


def test_self_graft_reproduces_the_latte_teacher(latte):
    """``mha`` in every spatial self-attention and ``mlp`` in every spatial MLP, initialised from the teacher as a
    self-graft is, compute the teacher's output on two-frame clips (temporal attention mixing the frames)."""
    from graft_core.grafting import surgery
    from graft_core.grafting.plan import GraftPlan

    cfg = latte.LatteConfig(sizes=dataclasses.replace(latte.LatteConfig().sizes, num_layers=3), num_frames=2)
    teacher = latte.build_teacher(cfg)
    layers = tuple(range(cfg.sizes.num_layers))
    student = surgery.graft(copy.deepcopy(teacher), [GraftPlan(site="attn", operator="mha", layers=layers),
                                                     GraftPlan(site="mlp", operator="mlp", layers=layers)], seed=0)
    before = dict(surgery.grafted_modules(student))
    surgery.init_from_teacher(student, teacher)
    assert {type(m).__name__ for m in before.values()} == {"MHA", "MLP"}  # the suite's operators, not the originals

    t = cfg.diffusion()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, t.in_channels, t.sample_size, t.sample_size, generator=gen)
    args = dict(timestep=torch.tensor([10, 500, 900]), class_labels=torch.tensor([0, 3, cfg.sizes.num_classes]),
                return_dict=False)
    with torch.inference_mode():
        want, got = teacher(x, **args)[0], student(x, **args)[0]
        fresh = surgery.graft(copy.deepcopy(teacher), GraftPlan(site="attn", operator="mha", layers=(1,)), seed=0)
        unrelated = fresh(x, **args)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (unrelated - want).abs().max() > 1e-3  # a graft not initialised from the teacher does change the output


def test_a_site_the_family_lacks_is_refused_in_one_line(latte, monkeypatch):
    from benchmark.dag import Planner

    rows = latte.rows("micro")
    monkeypatch.setattr(latte.LatteFamily, "sites", ("mlp",))  # as a joint-attention family would declare
    with pytest.raises(ValueError) as err:
        Planner().expand("latte", rows[1])
    assert "offers the sites mlp, not 'attn'" in str(err.value) and "\n" not in str(err.value)
    assert Planner().expand("latte", rows[0]).final.kind == "eval"  # rows without a graft still plan


def test_latte_micro_rows_run_end_to_end_from_the_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf"), "GRAFTBENCH_PLUGINS": ""}
    base = [sys.executable, "-m", "benchmark.run", "latte", "--preset", "micro", "--plugin", str(PLUGIN),
            "--results-dir", str(tmp_path / "res")]
    run = subprocess.run([*base, "--executor", "debug", "--quiet"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = {r["row"]: r for r in json.loads((tmp_path / "res" / "micro" / "latte" / "summary.json").read_text())["rows"]}
    assert {r["status"] for r in rows.values()} == {"done"}
    assert rows["baseline"]["extra"]["other_metrics"]["teacher_mse"] == 0.0  # the teacher agrees with itself
    grafted = rows["attn-hyena_x-interleaved50"]["extra"]["other_metrics"]["teacher_mse"]
    assert 0.0 < grafted < 1.0  # Hyena-X in one layer: close to the teacher after stage 1 and 2, not equal
    status = subprocess.run([*base, "--status"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0 and "2 done" in status.stdout, status.stdout + status.stderr


@pytest.mark.parametrize("source, line, error", [
    ("x = 1\ndef f(:\n    pass\n", 2, "SyntaxError"),
    ('"""A plug-in."""\nimport os\nimport no_such_module_for_graftbench\n', 3, "ModuleNotFoundError"),
    ("from graft_core.operators import GraftOperator, register_operator\n\n\n@register_operator('mha', site='attn')\n"
     "class Clash(GraftOperator):\n    pass\n", 4, "registered twice"),
    # a family missing required hooks is refused when it registers, not when a job first calls the hook
    ("from benchmark.family import Family, register_family\n\n\nclass Half(Family):\n    name = 'half'\n\n"
     "    def teacher(self, ctx, *, train_if_missing=False):\n        return None\n\n\nregister_family(Half)\n",
     11, "build_student, capture_bytes, cost, evaluate, model_dims, sizes, teacher_record"),
    ("from benchmark.families.dit import DitFamily\nfrom benchmark.family import register_family\n\n\n"
     "class Rows(DitFamily):\n    name, marker, row_kind = 'rows', 'rows', 'rows'\n\n\nregister_family(Rows)\n",
     9, "does not implement Family.expand"),
])
def test_a_plugin_that_cannot_be_imported_is_refused_in_one_line(tmp_path, source, line, error):
    from graft_core.operators.registry import PluginError, load_plugins

    path = tmp_path / "broken_plugin.py"
    path.write_text(source)
    with pytest.raises(PluginError) as err:
        load_plugins([str(path)])
    message = str(err.value)
    assert f"{path}:{line}: " in message and error in message and "\n" not in message
