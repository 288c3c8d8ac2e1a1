"""Replacement operators: registry contract, paper parameter counts, and each operator's defining property."""
import inspect

import pytest
import torch
import torch.nn.functional as F

from graft_core import operators
from graft_core.operators.ssd import ssd_chunked, ssd_recurrent

ALL = operators.available()
# (dim, heads, tokens): micro DiT, tiny teacher
SIZES = [(16, 2, 16), (128, 4, 64)]
PAPER_PARAMS = {  # paper.md §4 [D], D=1152, N=256, 16 heads
    ("mha", ()): 5_313_024, ("swa", ()): 5_313_024, ("hyena_x", ()): 5_330_304, ("hyena_y", ()): 5_318_784,
    ("hyena_se", ()): 5_336_064, ("mamba2", ()): 8_290_864, ("mlp", (("ratio", 3),)): 7_967_232,
    ("mlp", (("ratio", 4),)): 10_622_592, ("mlp", (("ratio", 6),)): 15_933_312, ("mlp_hyena_x", ()): 10_626_176,
}
CAUSAL = ["hyena_x", "hyena_y", "hyena_se", "mamba2"]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_every_operator_with_its_site():
    assert set(ALL) == {"mha", "swa", "hyena_x", "hyena_y", "hyena_se", "mamba2", "mlp", "mlp_hyena_x"}
    assert operators.available("mlp") == ("mlp", "mlp_hyena_x")
    assert [n for n in ALL if operators.operator_info(n).seq_len_bound] == ["mlp_hyena_x"]


def test_catalogue_rows_are_the_table3_grid_in_paper_order():
    rows = operators.catalogue_rows()
    assert [(r.site, r.stem, r.operator, r.option_dict) for r in rows] == [
        ("attn", "hyena_se", "hyena_se", {}), ("attn", "hyena_x", "hyena_x", {}), ("attn", "hyena_y", "hyena_y", {}),
        ("attn", "swa", "swa", {"window": 4}), ("attn", "mamba2", "mamba2", {}),
        ("mlp", "mlp_r3", "mlp", {"ratio": 3}), ("mlp", "mlp_r6", "mlp", {"ratio": 6}),
        ("mlp", "mlp_hyena_x", "mlp_hyena_x", {})]
    assert [r.paper for r in rows] == ["Hyena-SE", "Hyena-X", "Hyena-Y", "SWA", "Mamba-2", "MLP r=3", "MLP r=6",
                                       "Hyena-X"]  # the operator column of tables/paper/table4.csv, exactly
    assert all(r.latex and r.label and r.short for r in rows)
    assert operators.TEACHER_OPERATOR == {"attn": ("mha", {}), "mlp": ("mlp", {"ratio": 4})}


@pytest.mark.parametrize("name", ALL)
def test_declared_options_are_the_constructor_defaults(name):
    """The declaration (what plans and accounting read, without torch) and the class agree; resolving the class
    checks it, so a drifted default fails at the first build."""
    info = operators.operator_info(name)
    assert info.cls.__module__ == f"graft_core.operators.{name}" and info.builtin and info.cost is not None
    params = inspect.signature(info.cls.__init__).parameters
    assert {k: params[k].default for k in info.options()} == dict(info.defaults)


def test_a_registration_that_disagrees_with_its_class_is_refused():
    class Bad(operators.GraftOperator):
        def __init__(self, dim, *, kernel_size: int = 5):
            super().__init__()

    with pytest.raises(ValueError, match="declares"):
        operators.register_operator("bad_op", site="attn", options={"kernel_size": 4})(Bad)
    with pytest.raises(ValueError, match="site must be one of"):
        operators.register_operator("bad_op", site="cross")
    with pytest.raises(ValueError, match="not registered"):
        operators.register_row("bad_row", operator="no_such_op", label="x")
    with pytest.raises(ValueError, match="does not take option"):
        operators.register_row("bad_row", operator="mlp", options={"rate": 3}, label="x")
    assert "bad_op" not in operators.available() and "bad_row" not in {r.stem for r in operators.catalogue_rows()}


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="known operators: .*hyena_x"):
        operators.build("hyena", 16, num_heads=2, seq_len=16)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        operators.register_operator("mha", site="attn")(operators.MHA)


def test_unknown_option_is_refused():
    with pytest.raises(ValueError, match="accepted: \\['window'\\]"):
        operators.build("swa", 16, num_heads=2, seq_len=16, widow=2)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dim,heads,tokens", SIZES)
def test_shape_grad_and_diffusers_kwargs(name, dim, heads, tokens):
    op = operators.build(name, dim, num_heads=heads, seq_len=tokens)
    x = torch.randn(2, tokens, dim, requires_grad=True)
    y = op(x, encoder_hidden_states=None, attention_mask=None, step_frac=0.3)  # the kwargs diffusers forwards
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in op.parameters())


@pytest.mark.parametrize("name", ALL)
def test_refuses_cross_attention_states(name):
    op = operators.build(name, 16, num_heads=2, seq_len=16)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        op(torch.randn(1, 16, 16), encoder_hidden_states=torch.randn(1, 3, 16))


@pytest.mark.parametrize("key,expected", sorted(PAPER_PARAMS.items()))
def test_paper_parameter_counts(key, expected):
    name, options = key
    assert n_params(operators.build(name, 1152, num_heads=16, seq_len=256, **dict(options))) == expected


def test_bad_constructor_arguments_raise_value_error():
    with pytest.raises(ValueError, match="must divide"):
        operators.build("mha", 18, num_heads=4, seq_len=16)
    with pytest.raises(ValueError, match="headdim=16 must divide"):
        operators.build("mamba2", 12, num_heads=2, seq_len=16)
    with pytest.raises(ValueError, match="window"):
        operators.build("swa", 16, num_heads=2, seq_len=16, window=-1)


def test_swa_with_full_window_equals_mha():
    torch.manual_seed(0)
    swa = operators.build("swa", 32, num_heads=4, seq_len=20, window=19)
    mha = operators.build("mha", 32, num_heads=4, seq_len=20)
    mha.load_state_dict(swa.state_dict())
    x = torch.randn(2, 20, 32)
    torch.testing.assert_close(swa(x), mha(x), rtol=1e-5, atol=1e-6)


def test_swa_only_sees_its_window():
    swa = operators.build("swa", 16, num_heads=2, seq_len=16, window=2)
    x = torch.randn(1, 16, 16)
    x2 = x.clone()
    x2[:, 10] += 5.0
    changed = (swa(x) - swa(x2)).abs().amax(-1)[0] > 0
    assert changed.nonzero().flatten().tolist() == [8, 9, 10, 11, 12]


def test_hyena_y_at_init_is_the_gated_product():
    op = operators.build("hyena_y", 32, num_heads=4, seq_len=16)
    w = op.inner_filter.weight
    assert (w[:, 0, -1] == 1).all() and (w[:, 0, :-1] == 0).all() and (op.inner_filter.bias == 0).all()
    x = torch.randn(2, 16, 32)
    q, k, v = op.in_proj(x).chunk(3, dim=-1)
    torch.testing.assert_close(op(x), op.out_proj(q * k * v))


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_operators_do_not_look_ahead(name):
    op = operators.build(name, 32, num_heads=4, seq_len=24)
    with torch.no_grad():  # make the conv filters non-trivial so the test would catch a look-ahead
        for m in op.modules():
            if isinstance(m, operators.CausalDepthwiseConv1d):
                m.weight.normal_()
    x = torch.randn(2, 24, 32)
    x2 = x.clone()
    x2[:, 13] += 3.0
    y, y2 = op(x), op(x2)
    assert torch.equal(y[:, :13], y2[:, :13])
    assert not torch.allclose(y[:, 13:], y2[:, 13:])


def test_mlp_hyena_x_mixes_channels_not_tokens():
    op = operators.build("mlp_hyena_x", 16, num_heads=2, seq_len=8)
    x = torch.randn(1, 8, 16)
    x2 = x.clone()
    x2[:, 5] += 1.0
    diff = (op(x) - op(x2)).abs().amax(-1)[0]
    assert (diff > 0).nonzero().flatten().tolist() == [5]
    with pytest.raises(ValueError, match="built for 8 tokens"):
        op(torch.randn(1, 9, 16))


@pytest.mark.parametrize("length,chunk,groups", [(37, 8, 1), (16, 16, 2), (16, 64, 1), (50, 7, 3)])
def test_chunked_ssd_scan_equals_naive_recurrence(length, chunk, groups):
    g = torch.Generator().manual_seed(length)
    heads, p, n = 6, 4, 5
    x = torch.randn(2, length, heads, p, generator=g)
    dt = F.softplus(torch.randn(2, length, heads, generator=g) - 1)
    a = -torch.rand(heads, generator=g) * 4
    b, c = (torch.randn(2, length, groups, n, generator=g) for _ in range(2))
    leaves = [t.requires_grad_() for t in (x, dt, a, b, c)]
    chunked, naive = ssd_chunked(x, dt, a, b, c, chunk), ssd_recurrent(x, dt, a, b, c)
    torch.testing.assert_close(chunked, naive, rtol=0, atol=1e-4)
    weight = torch.randn(naive.shape, generator=g)
    grads = [torch.autograd.grad((out * weight).sum(), leaves) for out in (chunked, naive)]
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_mamba2_module_matches_its_recurrent_form():
    op = operators.build("mamba2", 32, num_heads=4, seq_len=20, chunk_size=8)
    x = torch.randn(2, 20, 32)
    out_chunked = op(x)
    op.scan = lambda *args: ssd_recurrent(*args)  # same module, naive scan
    torch.testing.assert_close(op(x), out_chunked, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["mha", "mlp"])
def test_self_graft_loaded_with_teacher_weights_is_exact(micro_teacher, name):
    block = micro_teacher.transformer_blocks[1]
    original = block.attn1 if name == "mha" else block.ff
    cfg = micro_teacher.config
    op = operators.build(name, cfg.num_attention_heads * cfg.attention_head_dim, num_heads=cfg.num_attention_heads,
                         seq_len=(cfg.sample_size // cfg.patch_size) ** 2)
    operators.init_from_teacher(op, original)
    x = torch.randn(3, 16, op.dim)
    with torch.no_grad():
        assert torch.equal(op(x), original(x))


def test_classic_attention_kernel_computes_the_same_function_and_follows_the_teacher(micro_teacher):
    """``kernel = "classic"`` (diffusers' AttnProcessor math, chosen on CPU at short sequences) equals the SDPA
    kernel for MHA and masked SWA, with gradients; a self-graft of a teacher whose attention was switched to the
    classic processor (``use_fast_attention``) copies that choice and stays bit-identical."""
    import copy

    from graft_core.models.teacher import use_fast_attention, use_fast_operator_attention

    torch.manual_seed(0)
    x = torch.randn(2, 20, 32, requires_grad=True)
    for name, opts in (("mha", {}), ("swa", {"window": 3})):
        op = operators.build(name, 32, num_heads=4, seq_len=20, **opts)
        ref = op(x)
        (gx_ref,) = torch.autograd.grad(ref.sum(), x)
        assert use_fast_operator_attention(op, 20, "cpu").kernel == "classic"
        out = op(x)
        (gx,) = torch.autograd.grad(out.sum(), x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5)
    assert use_fast_operator_attention(operators.build("mha", 32, num_heads=4, seq_len=1024), 1024,
                                       "cpu").kernel == "sdpa"  # long sequences keep the fused kernel
    teacher = use_fast_attention(copy.deepcopy(micro_teacher), "cpu")
    original = teacher.transformer_blocks[1].attn1
    assert type(original.processor).__name__ == "AttnProcessor"
    cfg = teacher.config
    op = operators.build("mha", cfg.num_attention_heads * cfg.attention_head_dim, num_heads=cfg.num_attention_heads,
                         seq_len=16)
    operators.init_from_teacher(op, original)
    assert op.kernel == "classic"
    h = torch.randn(3, 16, op.dim)
    with torch.no_grad():
        assert torch.equal(op(h), original(h))


def test_init_from_teacher_refuses_new_architectures():
    op = operators.build("hyena_x", 16, num_heads=2, seq_len=16)
    with pytest.raises(ValueError, match="no mapping"):
        operators.init_from_teacher(op, operators.build("mha", 16, num_heads=2, seq_len=16))


@pytest.mark.parametrize("taps,length,bias", [(4, 16, True), (4, 2, True), (1, 5, True), (7, 7, True), (4, 9, False)])
def test_token_major_conv_equals_the_channel_major_conv_with_its_gradients(taps, length, bias):
    """``forward_tokens`` (the CPU fast path of Hyena/Mamba-2, with its hand-written backward) is the same map,
    values and gradients, as ``F.conv1d`` on the transposed input — also when the sequence is shorter than the filter,
    without a bias, and without autograd."""
    torch.manual_seed(0)
    conv = operators.CausalDepthwiseConv1d(6, taps, bias=bias)
    with torch.no_grad():
        conv.weight.normal_()
        if bias:
            conv.bias.normal_()
    z = torch.randn(3, length, 6, requires_grad=True)
    ref = conv(z.transpose(1, 2)).transpose(1, 2)
    got = conv.forward_tokens(z)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(conv.forward_tokens(z), ref, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(ref)
    params = (z, conv.weight) + ((conv.bias,) if bias else ())
    ref_grads = torch.autograd.grad(ref, params, g)
    got_grads = torch.autograd.grad(got, params, g)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_token_major_conv_gradients_under_bf16_autocast():
    """With bf16 activations (what stage 2's bf16 autocast feeds the conv) the weight gradient still reaches the
    float32 parameters, close to the float32 computation."""
    torch.manual_seed(0)
    conv = operators.CausalDepthwiseConv1d(8, 4)
    z = torch.randn(4, 12, 8)
    g = torch.randn(4, 12, 8)
    ref = torch.autograd.grad(conv.forward_tokens(z), conv.weight, g)[0]
    got = torch.autograd.grad(conv.forward_tokens(z.bfloat16()), conv.weight, g.bfloat16())[0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0.05, atol=0.05)


def test_hyena_se_mix_is_the_channel_major_reference():
    """The token-major Hyena mix computes exactly the paper's operator written with transposes and F.conv1d."""
    torch.manual_seed(0)
    op = operators.build("hyena_se", 16, num_heads=2, seq_len=12)
    with torch.no_grad():
        op.inner_filter.weight.normal_()
    x = torch.randn(2, 12, 16)
    z = op.short_filter(op.in_proj(x).transpose(1, 2))
    q, k, v = z.split(16, dim=1)
    ref = op.out_proj((q * op.inner_filter(k * v)).transpose(1, 2))
    torch.testing.assert_close(op(x), ref, rtol=1e-5, atol=1e-6)
