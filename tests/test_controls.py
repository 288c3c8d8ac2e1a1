"""Controls (random init, self-graft) as the driver builds them — ``distill.assemble`` of the teacher's own operator
without stage-1 weights — and activation statistics."""
import pytest
import torch

from graft_core.stages import activation_stats, capture as cap, distill
from graft_core.operators import MHA, MLP
from graft_core.operators.registry import TEACHER_OPERATOR
from graft_core.grafting.plan import make_plan


def self_graft_plan(site, num_layers):
    operator, options = TEACHER_OPERATOR[site]
    return make_plan(site, operator, "full", num_layers=num_layers, **options)


def random_init(teacher, site, preset):
    return distill.assemble(teacher, self_graft_plan(site, preset.teacher.num_layers), None, seed=preset.stage1.seed)


def _out(model, preset, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = preset.teacher
    x = torch.randn(4, c.in_channels, c.sample_size, c.sample_size, generator=g)
    with torch.no_grad():
        return model.eval()(x, timestep=torch.tensor([10, 200, 500, 900]), class_labels=torch.tensor([0, 3, 5, 9]),
                            return_dict=False)[0]


def test_random_init_attention_differs_from_teacher(micro_teacher, micro_preset):
    before = {k: v.clone() for k, v in micro_teacher.state_dict().items()}
    model = random_init(micro_teacher, "attn", micro_preset)
    assert all(isinstance(b.attn1, MHA) for b in model.transformer_blocks)
    ref, out = _out(micro_teacher, micro_preset), _out(model, micro_preset)
    assert (out - ref).abs().mean() > 1e-2 * ref.abs().mean()
    assert all(torch.equal(v, micro_teacher.state_dict()[k]) for k, v in before.items())  # teacher untouched
    again = random_init(micro_teacher, "attn", micro_preset)  # seeded: reproducible
    assert torch.equal(_out(again, micro_preset), out)


def test_random_init_mlp_uses_ratio_4(micro_teacher, micro_preset):
    model = random_init(micro_teacher, "mlp", micro_preset)
    d = micro_preset.teacher.hidden_size
    assert all(isinstance(b.ff, MLP) and b.ff.hidden == 4 * d for b in model.transformer_blocks)
    assert not torch.allclose(_out(model, micro_preset), _out(micro_teacher, micro_preset))


def test_self_graft_stage1_then_assemble_runs(micro_teacher, micro_preset, tmp_path):
    train = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path)
    held = cap.capture_activations(micro_teacher, micro_preset, split="heldout", root=tmp_path)
    t = micro_preset.teacher
    plan = self_graft_plan("attn", t.num_layers)
    dirs = distill.distill_plan(train, held, plan, stage1=micro_preset.stage1, dim=t.hidden_size,
                                num_heads=t.num_attention_heads, seq_len=t.num_tokens, out_root=tmp_path / "s1")
    student = distill.assemble(micro_teacher, plan, dirs)
    out = _out(student, micro_preset)
    assert out.shape == (4, t.out_channels, t.sample_size, t.sample_size) and torch.isfinite(out).all()
    # stage 1 starts from exactly the random-init operators (same seeds), and moves them
    rand = random_init(micro_teacher, "attn", micro_preset)
    for layer in plan.layers:
        first = distill.read_metrics(dirs[layer])["initial_train_mse"]
        x, y = cap.load_capture(train, layer, "attn")
        assert distill.mse_over(rand.transformer_blocks[layer].attn1, x, y,
                                device=torch.device("cpu")) == pytest.approx(first, rel=1e-6)
        assert distill.read_metrics(dirs[layer])["train_mse"] < first


def test_tensor_statistics_outliers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 50, 20, generator=g)
    x.view(-1)[:10] = 100.0
    s = activation_stats.tensor_statistics(x)
    assert s["outlier_frac"] == pytest.approx(10 / x.numel())
    assert s["max_abs"] == 100.0 and s["kurtosis"] > 10
    assert s["variance"] == pytest.approx(x.double().var(unbiased=False).item(), rel=1e-9)
    clean = activation_stats.tensor_statistics(torch.randn(200, 100, generator=g))
    assert clean["outlier_frac"] == 0 and abs(clean["kurtosis"]) < 0.1


def test_activation_statistics_from_capture(micro_teacher, micro_preset, tmp_path):
    folder = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path)
    stats = activation_stats.activation_statistics(folder, micro_preset.teacher.num_layers)
    for site in ("attn", "mlp"):
        rows = stats[site]
        assert [r["layer"] for r in rows] == list(range(micro_preset.teacher.num_layers))
        for r in rows:
            assert r["variance"] > 0 and r["max_abs"] >= r["p999_abs"] > 0 and 0 <= r["outlier_frac"] < 1
            assert r["input_variance"] > 0
    _, y = cap.load_capture(folder, 1, "mlp")
    assert stats["mlp"][1]["variance"] == pytest.approx(y.double().var(unbiased=False).item(), rel=1e-6)
