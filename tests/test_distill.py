"""Stage 1: objectives, one layer's distillation on a micro capture, reuse, and assembly of the student."""
import dataclasses
import json

import pytest
import torch

from graft_core import capture as cap
from graft_core import distill
from graft_core.plan import make_plan


@pytest.fixture(scope="module")
def captures(micro_teacher, micro_preset, tmp_path_factory):
    root = tmp_path_factory.mktemp("captures")
    return (cap.capture_activations(micro_teacher, micro_preset, root=root),
            cap.capture_activations(micro_teacher, micro_preset, split="heldout", root=root))


def _dims(preset):
    t = preset.teacher
    return dict(dim=t.hidden_size, num_heads=t.num_attention_heads, seq_len=t.num_tokens)


def test_regression_objectives():
    pred, target = torch.tensor([0.0, 0.5, 3.0]), torch.zeros(3)
    assert distill.regression_loss("l1", pred, target).item() == pytest.approx(3.5 / 3)
    assert distill.regression_loss("l2", pred, target).item() == pytest.approx(9.25 / 3)
    assert distill.regression_loss("huber", pred, target, 1.0).item() == pytest.approx((0.125 + 2.5) / 3)
    with pytest.raises(ValueError, match="unknown stage-1 objective"):
        distill.regression_loss("l3", pred, target)


@pytest.mark.parametrize("site,operator", [("attn", "hyena_x"), ("mlp", "mlp")])
def test_distill_layer_lowers_the_loss(captures, micro_preset, tmp_path, site, operator):
    train, held = captures
    stage1 = dataclasses.replace(micro_preset.stage1, epochs=6, eval_every=2, lr_source="code")
    m = distill.distill_layer(train, held, layer=1, site=site, operator=operator, options={}, stage1=stage1,
                              out_dir=tmp_path, **_dims(micro_preset))
    assert m["train_mse"] < m["initial_train_mse"]
    assert m["val_mse"] is not None and m["val_mse"] < m["initial_val_mse"]
    assert m["objective"] == {"attn": "l1", "mlp": "l2"}[site]
    assert m["lr_source"] == "code" and m["lr"] == {"attn": 5e-4, "mlp": 1e-3}[site]
    assert m["seed"] == stage1.seed + 1
    assert [h["epoch"] for h in m["history"]] == [0, 2, 4, 6]  # 0: the untrained operator, the fallback
    assert m["train_mse"] == min(h["train_mse"] for h in m["history"])  # best-train checkpoint kept
    assert m["best_epoch"] in (2, 4, 6)
    assert json.loads((tmp_path / "metrics.json").read_text())["train_mse"] == m["train_mse"]
    # the saved operator is the best one: its MSE on the captures is the reported one (validation always MSE)
    from graft_core import operators
    op = operators.build(operator, **_dims(micro_preset))
    op.load_state_dict(distill.load_operator_state(tmp_path))
    x, y = cap.load_capture(held, 1, site)
    assert distill.mse_over(op, x, y, device=torch.device("cpu")) == pytest.approx(m["val_mse"], rel=1e-6)


def test_distill_layer_is_deterministic_and_reused(captures, micro_preset, tmp_path, monkeypatch):
    train, held = captures
    kwargs = dict(layer=0, site="attn", operator="mha", options={}, stage1=micro_preset.stage1, **_dims(micro_preset))
    a = distill.distill_layer(train, held, out_dir=tmp_path / "a", **kwargs)
    b = distill.distill_layer(train, held, out_dir=tmp_path / "b", **kwargs)
    assert a["train_mse"] == b["train_mse"]
    sa, sb = distill.load_operator_state(tmp_path / "a"), distill.load_operator_state(tmp_path / "b")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["lr_source"] == "paper" and a["lr"] == 1e-4  # micro keeps the paper's stage-1 lr
    monkeypatch.setattr(distill, "train_operator", lambda *a, **k: pytest.fail("retrained a finished layer"))
    assert distill.distill_layer(train, held, out_dir=tmp_path / "a", **kwargs)["train_mse"] == a["train_mse"]
    # a changed spec is not mistaken for the finished one
    with pytest.raises(pytest.fail.Exception):
        distill.distill_layer(train, held, out_dir=tmp_path / "a", **{**kwargs, "stage1": dataclasses.replace(
            micro_preset.stage1, objective="huber")})


def test_huber_and_no_validation_capture(captures, micro_preset, tmp_path):
    train, _ = captures
    stage1 = dataclasses.replace(micro_preset.stage1, objective="huber", lr=1e-3)
    m = distill.distill_layer(train, None, layer=0, site="mlp", operator="mlp", options={"ratio": 2},
                              stage1=stage1, out_dir=tmp_path, **_dims(micro_preset))
    assert m["objective"] == "huber" and m["huber_delta"] == 1.0
    assert m["lr_source"] == "override" and m["lr"] == 1e-3
    assert m["val_mse"] is None


def test_assemble_loads_stage1_operators(micro_teacher, micro_preset, captures, tmp_path):
    train, held = captures
    plan = make_plan("attn", "hyena_x", "interleaved50", num_layers=micro_preset.teacher.num_layers)  # layer 1
    dirs = distill.distill_plan(train, held, plan, stage1=micro_preset.stage1, out_root=tmp_path,
                                **_dims(micro_preset))
    assert set(dirs) == {1}
    student = distill.assemble(micro_teacher, plan, dirs)
    op = student.transformer_blocks[1].attn1
    state = distill.load_operator_state(dirs[1])
    assert all(torch.equal(op.state_dict()[k], state[k]) for k in state)
    assert student.transformer_blocks[0].attn1 is not micro_teacher.transformer_blocks[0].attn1  # a copy
    teacher_state = micro_teacher.state_dict()
    for key, value in student.state_dict().items():
        if not key.startswith("transformer_blocks.1.attn1."):
            assert torch.equal(value, teacher_state[key]), key
    assert type(micro_teacher.transformer_blocks[1].attn1).__name__ == "Attention"  # teacher untouched
    with pytest.raises(ValueError, match="lacks layers"):
        distill.assemble(micro_teacher, plan, {})


def test_a_diverging_stage1_keeps_the_best_finite_state_never_nan():
    """Seen with Mamba-2 at 400 epochs: the loss went NaN before the first check and the NaN operator was saved with
    the initial MSE as its metrics. Now training stops at a non-finite loss and the best finite state is kept."""
    import dataclasses

    import torch
    from torch import nn

    from graft_core.distill import train_operator
    from graft_core.presets import get_preset

    torch.manual_seed(0)
    op = nn.Linear(4, 4)
    x = torch.randn(16, 3, 4)
    y = torch.full((16, 3, 4), float("nan"))  # any step's loss is NaN
    stage1 = dataclasses.replace(get_preset("micro").stage1, epochs=5, eval_every=1)
    before = {k: v.clone() for k, v in op.state_dict().items()}
    state, metrics = train_operator(op, x, y, stage1=stage1, site="attn", seed=0)
    assert metrics["diverged_at_epoch"] == 1 and metrics["best_epoch"] == 0
    assert all(torch.equal(state[k], before[k]) for k in before)
