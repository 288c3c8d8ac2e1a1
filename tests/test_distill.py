"""Stage 1: objectives, one layer's distillation on a micro capture, reuse, and assembly of the student."""
import dataclasses
import json

import pytest
import torch

from graft_core.stages import capture as cap
from graft_core.stages import distill
from graft_core.grafting.plan import make_plan


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

    from graft_core.stages.distill import train_operator
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


def test_early_stopping_ends_a_plateaued_run_and_keeps_the_best_weights():
    """A target the operator already fits exactly: the monitored MSE stops improving, so training ends at the first
    check a whole window after the start; without the option every epoch runs."""
    import torch
    from torch import nn

    from graft_core.stages.distill import plateaued, train_operator
    from graft_core.presets import get_preset

    torch.manual_seed(0)
    op = nn.Linear(4, 4)
    x = torch.randn(16, 3, 4)
    with torch.no_grad():
        y = op(x)  # zero loss from the start: nothing to improve
    base = dataclasses.replace(get_preset("micro").stage1, epochs=40, eval_every=5, lr=1e-3)
    _, full = train_operator(copy_of(op), x, y, stage1=base, site="attn", seed=0)
    assert full["stopped_at_epoch"] is None and full["history"][-1]["epoch"] == 40
    early = dataclasses.replace(base, early_stop_window=10, early_stop_min_rel=0.05)
    state, m = train_operator(copy_of(op), x, y, stage1=early, site="attn", seed=0)
    assert m["stopped_at_epoch"] == 10 and m["history"][-1]["epoch"] == 10
    assert m["train_mse"] <= full["history"][0]["train_mse"] + 1e-12
    # the rule itself: an improvement of 10 % over the window continues at min_rel 5 %, one of 1 % stops
    hist = [{"epoch": 0, "val_mse": 1.0, "train_mse": 1.0}, {"epoch": 10, "val_mse": 0.9, "train_mse": 0.9}]
    assert not plateaued(hist, early, has_val=True)
    hist[-1]["val_mse"] = 0.99
    assert plateaued(hist, early, has_val=True)
    assert not plateaued(hist, base, has_val=True)  # no window: never stops early


def copy_of(module):
    import copy

    return copy.deepcopy(module)


# --------------------------------------------------------------------------------------------------------------------
# Paper-scale data path: one pair, memory-mapped
# --------------------------------------------------------------------------------------------------------------------


def test_stage1_reads_one_pair_through_mmap(micro_teacher, micro_preset, tmp_path, monkeypatch):
    """A capture holding only (1, attn) is enough for that layer; above ``IN_MEMORY_BYTES`` every array is opened
    as a memory map (never ``np.load`` into RAM) and training gives exactly the in-memory result."""
    root = tmp_path / "captures"
    pairs = [(1, "attn")]
    train = cap.capture_activations(micro_teacher, micro_preset, root=root, pairs=pairs)
    held = cap.capture_activations(micro_teacher, micro_preset, split="heldout", root=root, pairs=pairs)
    kwargs = dict(layer=1, site="attn", operator="hyena_x", options={}, stage1=micro_preset.stage1,
                  **_dims(micro_preset))
    in_memory = distill.distill_layer(train, held, out_dir=tmp_path / "ram", **kwargs)

    loads, seen = [], []
    real_load, real_train = cap.np.load, distill.train_operator

    def spy_load(path, *args, **kw):
        loads.append((str(path), kw.get("mmap_mode")))
        return real_load(path, *args, **kw)

    def spy_train(op, inputs, targets, **kw):
        seen.append((inputs.dtype, kw["val_targets"].dtype))
        return real_train(op, inputs, targets, **kw)

    monkeypatch.setattr(distill, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(cap.np, "load", spy_load)
    monkeypatch.setattr(distill, "train_operator", spy_train)
    mapped = distill.distill_layer(train, held, out_dir=tmp_path / "mmap", **kwargs)
    assert loads and all(mode is not None for _, mode in loads)  # memory maps only
    assert all("layer001.attn" in path for path, _ in loads)  # no other pair opened
    assert seen == [(torch.float16, torch.float16)]  # the stored dtype: rows are converted batch by batch
    assert mapped["train_mse"] == in_memory["train_mse"] and mapped["val_mse"] == in_memory["val_mse"]
    a, b = distill.load_operator_state(tmp_path / "ram"), distill.load_operator_state(tmp_path / "mmap")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError, match="layer 0 / attn"):
        distill.distill_layer(train, held, out_dir=tmp_path / "l0", **{**kwargs, "layer": 0})


# --------------------------------------------------------------------------------------------------------------------
# Paper vs official code: schedule and MLP weight decay
# --------------------------------------------------------------------------------------------------------------------


def _fit(stage1, site="attn", epochs=53):
    torch.manual_seed(0)
    op = torch.nn.Linear(4, 4)
    x, y = torch.randn(16, 3, 4), torch.randn(16, 3, 4)
    s1 = dataclasses.replace(stage1, epochs=epochs, eval_every=1, batch_size=8, lr=1e-3)
    return distill.train_operator(op, x, y, val_inputs=x[:8] + 0.1, val_targets=y[:8], stage1=s1, site=site,
                                  seed=0)[1]


def test_official_schedule_steps_the_lr_as_multisteplr(micro_preset):
    """``schedule="official"``: the lr of epoch e is MultiStepLR's ([50, 100, 150], γ 0.5) as train_stage1.py
    steps it (after each epoch, ``step(epoch)``); the plateau scheduler's cuts do not survive that closed-form
    step there, nor here. The paper's constant lr stays the default."""
    from graft_core.presets import Stage1Config

    official = _fit(dataclasses.replace(micro_preset.stage1, schedule="official"))
    lrs = {h["epoch"]: h["lr"] for h in official["history"] if h["epoch"] > 0}
    assert all(lrs[e] == 1e-3 for e in range(1, 52)) and lrs[52] == lrs[53] == 5e-4
    assert all(lrs[e] == distill.official_lr(1e-3, e) for e in lrs)
    assert [distill.official_lr(1.0, e) for e in (1, 51, 52, 101, 102, 151, 152, 200)] == \
        [1, 1, .5, .5, .25, .25, .125, .125]
    # the same numbers from torch's MultiStepLR stepped once per epoch, the chainable way
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[51, 101, 151], gamma=0.5)  # 1-based: lr of epoch e
    expected = {}
    for e in range(1, 54):
        expected[e] = opt.param_groups[0]["lr"]
        opt.step()
        ref.step()
    assert lrs == pytest.approx(expected, rel=0, abs=0)
    assert official["schedule"] == "official" and official["final_lr"] == 5e-4
    constant = _fit(micro_preset.stage1)
    assert {h["lr"] for h in constant["history"]} == {1e-3} and constant["schedule"] == "constant"
    with pytest.raises(ValueError, match="schedule"):
        _fit(dataclasses.replace(micro_preset.stage1, schedule="cosine"), epochs=1)
    # added fields at their defaults stay out of the spec and run-id hashes
    from graft_core.config import to_jsonable
    assert "schedule" not in to_jsonable(Stage1Config()) and "mlp_weight_decay" not in to_jsonable(Stage1Config())
    assert to_jsonable(Stage1Config(schedule="official"))["schedule"] == "official"


def test_mlp_weight_decay_is_the_mlp_sites_only(micro_preset):
    s1 = dataclasses.replace(micro_preset.stage1, mlp_weight_decay=1e-5)
    assert _fit(s1, site="mlp", epochs=1)["weight_decay"] == 1e-5
    assert _fit(s1, site="attn", epochs=1)["weight_decay"] == 0.0
    assert _fit(micro_preset.stage1, site="mlp", epochs=1)["weight_decay"] == 0.0  # default: weight_decay


def test_capture_input_is_a_stage1_option_left_out_of_ids_at_its_default():
    from graft_core.config import to_jsonable
    from graft_core.presets import Stage1Config, get_preset

    assert "capture_input" not in to_jsonable(get_preset("paper").stage1)
    assert to_jsonable(Stage1Config(capture_input="clean"))["capture_input"] == "clean"
    assert cap.CAPTURE_INPUTS == ("noised", "clean") and Stage1Config().capture_input == cap.CAPTURE_INPUTS[0]
