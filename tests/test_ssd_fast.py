"""The fast paths of the chunked SSD scan and the Mamba-2 module (issues 19, 18): single chunk (no entering state),
separable decays in blocks, the exact fallback's sliced intra-chunk step with its hand-written backward, clamped
decays (no float32 denormals), no-autograd paths."""
import pytest
import torch
import torch.nn.functional as F

from graft_core import operators
from graft_core.operators import ssd
from graft_core.operators.ssd import ssd_chunked, ssd_recurrent


def _inputs(bsz, length, heads, p, n, groups, *, dt_shift=-1.0, a_scale=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bsz, length, heads, p, generator=g)
    dt = F.softplus(torch.randn(bsz, length, heads, generator=g) + dt_shift)
    a = -torch.rand(heads, generator=g) * a_scale - 0.1
    b, c = (torch.randn(bsz, length, groups, n, generator=g) for _ in range(2))
    return x, dt, a, b, c


def _grads(fn, inputs, weight):
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return out, torch.autograd.grad((out * weight).sum(), leaves)


@pytest.mark.parametrize("groups", [1, 2])
def test_single_chunk_equals_recurrence_and_multi_chunk_with_gradients(groups):
    inputs = _inputs(3, 24, 4, 4, 5, groups)
    weight = torch.randn(3, 24, 4, 4, generator=torch.Generator().manual_seed(1))
    single, g_single = _grads(lambda *t: ssd_chunked(*t, chunk_size=64), inputs, weight)  # one chunk of 24
    multi, g_multi = _grads(lambda *t: ssd_chunked(*t, chunk_size=7), inputs, weight)  # 4 chunks, padded
    naive, g_naive = _grads(ssd_recurrent, inputs, weight)
    torch.testing.assert_close(single, naive, rtol=0, atol=1e-4)
    torch.testing.assert_close(multi, naive, rtol=0, atol=1e-4)
    for got1, got2, want in zip(g_single, g_multi, g_naive):
        torch.testing.assert_close(got1, want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got2, want, rtol=1e-4, atol=1e-4)


def test_sliced_intra_chunk_step_is_independent_of_the_slice_size(monkeypatch):
    inputs = _inputs(5, 16, 4, 4, 3, 1, seed=2)
    weight = torch.randn(5, 16, 4, 4, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(ssd, "_SEPARABLE_BOUND", -1.0)  # the exact path, whose intra-chunk step is sliced
    ref, g_ref = _grads(ssd_chunked, inputs, weight)
    monkeypatch.setattr(ssd, "_SLICE_ELEMENTS", 1)  # one row per slice
    got, g_got = _grads(ssd_chunked, inputs, weight)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk", [64, 16])
def test_underflowing_decays_stay_finite_and_exact(chunk):
    """dt·A summed over the sequence down to about −2000: exp of the raw decay arguments would be denormal or 0."""
    inputs = _inputs(2, 64, 4, 4, 8, 1, dt_shift=2.0, a_scale=12.0, seed=4)
    x, dt, a, b, c = inputs
    assert (dt * a).sum(1).min() < -500
    assert _block(inputs, chunk) is None  # no block of ≥ 8 tokens can be factored: the exact path
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    got, g_got = _grads(lambda *t: ssd_chunked(*t, chunk_size=chunk), inputs, weight)
    want, g_want = _grads(ssd_recurrent, inputs, weight)
    assert torch.isfinite(got).all() and all(torch.isfinite(g).all() for g in g_got)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    for a_, b_ in zip(g_got, g_want):
        torch.testing.assert_close(a_, b_, rtol=1e-4, atol=1e-3)


def test_no_autograd_path_and_bf16_under_autocast():
    inputs = _inputs(3, 20, 4, 4, 5, 1, seed=6)
    with torch.no_grad():
        ref = ssd_chunked(*inputs)
    torch.testing.assert_close(ssd_chunked(*inputs), ref, rtol=0, atol=0)  # autograd-free vs autograd forward
    leaves = [t.clone().requires_grad_() for t in inputs]
    torch.testing.assert_close(ssd_chunked(*leaves).detach(), ref, rtol=0, atol=1e-6)
    x16 = inputs[0].bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        y16 = ssd_chunked(x16, *inputs[1:])
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), ssd_recurrent(x16.float(), *inputs[1:]), rtol=1e-2, atol=1e-2)


def test_mamba2_sampling_pieces_and_no_grad_norm_equal_the_training_forward(monkeypatch):
    from graft_core.operators import mamba2

    torch.manual_seed(0)
    op = operators.build("mamba2", 32, num_heads=4, seq_len=16)
    u = torch.randn(7, 16, 32)
    train_out = op(u)  # autograd path, one piece
    monkeypatch.setattr(mamba2, "_PIECE_TOKENS", 32)  # 7 rows of 16 tokens → pieces of 2 rows
    with torch.no_grad():
        sample_out = op(u)
    torch.testing.assert_close(sample_out, train_out.detach(), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            a16 = op(u)
        b16 = op(u)
    assert torch.isfinite(a16).all() and a16.dtype == b16.dtype
    torch.testing.assert_close(a16.float(), b16.detach().float(), rtol=2e-2, atol=2e-2)


def _block(inputs, chunk):
    x, dt, a, *_ = inputs
    q = min(chunk, x.shape[1])
    pad = (-x.shape[1]) % q
    da = F.pad(dt * a, (0, 0, 0, pad)).view(x.shape[0], -1, q, 1, x.shape[2])
    return ssd._separable_block(da)


@pytest.mark.parametrize("dt_scale,length,want_block", [(0.05, 64, 64), (0.15, 64, 32), (0.3, 64, 16), (0.6, 64, 8),
                                                        (0.3, 200, 16)])
def test_separable_scan_in_blocks_equals_recurrence(dt_scale, length, want_block):
    """The decays are factored per block; wider decay ranges halve the block (down to 8 tokens), one or more chunks."""
    g = torch.Generator().manual_seed(7)
    heads = 6
    x = torch.randn(2, length, heads, 4, generator=g)
    dt = torch.rand(2, length, heads, generator=g) * dt_scale
    a = -torch.rand(heads, generator=g) * 15 - 1
    b, c = (torch.randn(2, length, 2, 8, generator=g) for _ in range(2))
    inputs = (x, dt, a, b, c)
    assert _block(inputs, 64) == want_block
    weight = torch.randn(x.shape, generator=g)
    got, g_got = _grads(lambda *t: ssd_chunked(*t, chunk_size=64), inputs, weight)
    want, g_want = _grads(ssd_recurrent, inputs, weight)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    for a_, b_ in zip(g_got, g_want):
        torch.testing.assert_close(a_, b_, rtol=1e-4, atol=1e-4)


def test_separable_and_exact_paths_agree(monkeypatch):
    inputs = _inputs(3, 40, 4, 4, 6, 2, seed=8)
    assert _block(inputs, 16) is not None  # these decays take the separable path
    weight = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(9))
    sep, g_sep = _grads(lambda *t: ssd_chunked(*t, chunk_size=16), inputs, weight)
    monkeypatch.setattr(ssd, "_SEPARABLE_BOUND", -1.0)  # no block fits: the exact path
    exact, g_exact = _grads(lambda *t: ssd_chunked(*t, chunk_size=16), inputs, weight)
    torch.testing.assert_close(sep, exact, rtol=1e-5, atol=1e-5)
    for a_, b_ in zip(g_sep, g_exact):
        torch.testing.assert_close(a_, b_, rtol=1e-4, atol=1e-4)
