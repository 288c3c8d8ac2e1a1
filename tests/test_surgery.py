"""Surgery on micro diffusers DiT / PixArt models: only planned modules change, forwards run."""
import copy
import dataclasses

import pytest
import torch
from diffusers import PixArtTransformer2DModel

from graft_core import operators
from graft_core.grafting.plan import make_plan
from graft_core.grafting.surgery import grafted_modules, graft, init_from_teacher, model_dims
from graft_core.models.teacher import build_dit

ATTN_OPS = operators.available("attn")
MLP_OPS = operators.available("mlp")


@pytest.fixture
def dit(micro_preset):
    """4-layer micro DiT (D=16, 2 heads, 16 tokens) in eval mode."""
    return build_dit(dataclasses.replace(micro_preset.teacher, num_layers=4)).eval()


@pytest.fixture
def pixart():
    model = PixArtTransformer2DModel(num_layers=4, num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                     out_channels=8, sample_size=8, patch_size=2, cross_attention_dim=16,
                                     caption_channels=32, num_embeds_ada_norm=1000, norm_type="ada_norm_single",
                                     use_additional_conditions=False)
    return model.eval()


def dit_forward(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8, 8, generator=g)
    with torch.no_grad():
        return model(x, timestep=torch.tensor([3, 700]), class_labels=torch.tensor([1, 7]), return_dict=False)[0]


def pixart_forward(model):
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        return model(x, encoder_hidden_states=text, encoder_attention_mask=mask, timestep=torch.tensor([3, 700]),
                     added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]


def assert_only_planned_modules_changed(before, model, prefixes):
    after = model.state_dict()
    untouched = {k for k in before if not k.startswith(prefixes)}
    assert untouched == {k for k in after if not k.startswith(prefixes)}
    assert all(torch.equal(before[k], after[k]) for k in untouched)
    assert any(k.startswith(prefixes) for k in after)


@pytest.mark.parametrize("site,name", [("attn", n) for n in ATTN_OPS] + [("mlp", n) for n in MLP_OPS])
def test_graft_dit_changes_only_planned_modules(dit, site, name):
    before = copy.deepcopy(dit.state_dict())
    plan = make_plan(site, name, "interleaved50", num_layers=4)
    graft(dit, plan)
    attr = "attn1" if site == "attn" else "ff"
    assert_only_planned_modules_changed(before, dit, (f"transformer_blocks.1.{attr}.", f"transformer_blocks.3.{attr}."))
    assert isinstance(dit.transformer_blocks[3].get_submodule(attr), operators.operator_info(name).cls)
    assert dit.graft_plans == (plan,)
    out = dit_forward(dit)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("site,name", [("attn", "hyena_y"), ("attn", "mamba2"), ("mlp", "mlp_hyena_x")])
def test_graft_pixart_leaves_cross_attention(pixart, site, name):
    before = copy.deepcopy(pixart.state_dict())
    graft(pixart, make_plan(site, name, [0, 2], num_layers=4))
    attr = "attn1" if site == "attn" else "ff"
    assert_only_planned_modules_changed(before, pixart, (f"transformer_blocks.0.{attr}.",
                                                         f"transformer_blocks.2.{attr}."))
    assert type(pixart.transformer_blocks[0].attn2).__name__ == "Attention"
    out = pixart_forward(pixart)
    assert out.shape == (2, 8, 8, 8) and torch.isfinite(out).all()


def test_graft_from_pretrained_teacher_and_self_graft_is_exact(micro_teacher):
    """micro_teacher comes from ``from_pretrained``; an MHA+MLP self-graft with its weights reproduces it exactly."""
    reference = dit_forward(micro_teacher)
    grafted = copy.deepcopy(micro_teacher)
    graft(grafted, [make_plan("attn", "mha", "full", num_layers=2), make_plan("mlp", "mlp", "full", num_layers=2)])
    assert not torch.equal(dit_forward(grafted), reference)
    init_from_teacher(grafted, micro_teacher)
    assert torch.equal(dit_forward(grafted), reference)


def test_seeded_graft_is_reproducible(dit):
    plan = make_plan("attn", "hyena_x", "full", num_layers=4)
    a, b = graft(copy.deepcopy(dit), plan, seed=5), graft(copy.deepcopy(dit), plan, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    mods = grafted_modules(a)
    assert not torch.equal(mods["transformer_blocks.0.attn1"].in_proj.weight,
                           mods["transformer_blocks.1.attn1"].in_proj.weight)


def test_unseeded_graft_initialises_each_layer_independently(dit):
    graft(dit, make_plan("attn", "hyena_x", [0, 1], num_layers=4))
    mods = grafted_modules(dit)
    assert not torch.equal(mods["transformer_blocks.0.attn1"].in_proj.weight,
                           mods["transformer_blocks.1.attn1"].in_proj.weight)


def test_failed_graft_leaves_the_model_untouched(dit):
    before = copy.deepcopy(dit.state_dict())
    plan = make_plan("attn", "mamba2", [0, 1], num_layers=4, headdim=3)  # 32 channels: 3 does not divide
    with pytest.raises(ValueError, match="headdim=3 must divide"):
        graft(dit, plan)
    assert dit.state_dict().keys() == before.keys() and not hasattr(dit, "graft_plans")


def test_graft_refuses_plans_that_do_not_fit(dit):
    assert model_dims(dit) == {"dim": 16, "num_heads": 2, "seq_len": 16, "num_layers": 4}
    with pytest.raises(ValueError, match="out of range"):
        graft(dit, make_plan("attn", "swa", [4], num_layers=8))
    with pytest.raises(ValueError, match="bound to the token count"):
        graft(dit, make_plan("mlp", "mlp_hyena_x", [1], num_layers=4, seq_len=256))
    graft(dit, make_plan("attn", "swa", [1], num_layers=4))
    with pytest.raises(ValueError, match="edited twice"):
        graft(dit, make_plan("attn", "hyena_x", [1, 2], num_layers=4))

