"""Activation capture: what is stored, that it is stored once, and that it is what the operator sees."""
import json

import numpy as np
import pytest
import torch

from graft_core import capture as cap


@pytest.fixture(scope="module")
def capture_root(tmp_path_factory):
    return tmp_path_factory.mktemp("captures")


class ForwardCounter:
    """Counts calls of ``teacher.forward`` without changing what it returns."""

    def __init__(self, model):
        self.calls = 0
        self._inner = model.forward

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._inner(*args, **kwargs)


def test_capture_is_computed_once_and_reused(micro_teacher, micro_preset, capture_root, monkeypatch):
    counter = ForwardCounter(micro_teacher)
    monkeypatch.setattr(micro_teacher, "forward", counter)
    folder = cap.capture_activations(micro_teacher, micro_preset, root=capture_root, batch_size=7)
    assert counter.calls == 3  # 20 samples (2 per class) in batches of 7
    assert (folder / "DONE").exists()
    again = cap.capture_activations(micro_teacher, micro_preset, root=capture_root, batch_size=7)
    assert again == folder
    assert counter.calls == 3  # second call: DONE marker only, no teacher forward
    meta = json.loads((folder / "meta.json").read_text())
    cfg = micro_preset.teacher
    assert meta["num_samples"] == 10 * micro_preset.data.stage1_per_class
    assert meta["num_layers"] == cfg.num_layers and meta["dtype"] == "float16"
    assert not list(folder.parent.glob(".*partial*")) and not list(folder.parent.glob(".*.tmp-*"))  # no temp left


def test_capture_shapes_and_conditioning(micro_teacher, micro_preset, capture_root):
    folder = cap.capture_activations(micro_teacher, micro_preset, root=capture_root)
    cfg = micro_preset.teacher
    s = 10 * micro_preset.data.stage1_per_class
    for layer in range(cfg.num_layers):
        for site in cap.SITES:
            x, y = cap.load_capture(folder, layer, site)
            assert x.shape == y.shape == (s, cfg.num_tokens, cfg.hidden_size)
            assert x.dtype == torch.float32 and torch.isfinite(y).all()
    cond = cap.load_conditioning(folder)
    assert cond["timesteps"].min() >= 0 and cond["timesteps"].max() < cfg.num_train_timesteps
    assert torch.equal(torch.bincount(cond["labels"], minlength=10),
                       torch.full((10,), micro_preset.data.stage1_per_class))


def test_heldout_capture_is_a_different_folder(micro_teacher, micro_preset, capture_root):
    train = cap.capture_activations(micro_teacher, micro_preset, root=capture_root)
    held = cap.capture_activations(micro_teacher, micro_preset, split="heldout", root=capture_root)
    assert train != held
    x_train, _ = cap.load_capture(train, 0, "attn")
    x_held, _ = cap.load_capture(held, 0, "attn")
    assert not torch.allclose(x_train, x_held)
    with pytest.raises(ValueError, match="unknown split"):
        cap.capture_activations(micro_teacher, micro_preset, split="val", root=capture_root)


def test_captured_pairs_are_the_operator_input_and_ungated_output(micro_teacher, micro_preset, tmp_path):
    """fp32 capture: feeding the stored input to the teacher's own attn1 / ff gives the stored target, and the
    stored attention input is norm1's modulated output (not the raw residual stream)."""
    folder = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, dtype="float32")
    cond = cap.load_conditioning(folder)
    blocks = micro_teacher.transformer_blocks
    with torch.no_grad():
        for layer in range(len(blocks)):
            x, y = cap.load_capture(folder, layer, "attn")
            torch.testing.assert_close(blocks[layer].attn1(x), y, rtol=1e-5, atol=1e-5)
            x, y = cap.load_capture(folder, layer, "mlp")
            torch.testing.assert_close(blocks[layer].ff(x), y, rtol=1e-5, atol=1e-5)
        # recompute layer 0's attention input from the patch embedding and norm1
        from graft_core.diffusion import make_train_scheduler
        images, labels, _ = cap.capture_subset(micro_preset, "stage1")
        gen = torch.Generator().manual_seed(micro_preset.stage1.seed)
        t = torch.randint(0, 1000, (len(labels),), generator=gen)
        noise = torch.randn(images.shape, generator=gen)
        assert torch.equal(t, cond["timesteps"])
        x_t = make_train_scheduler(micro_preset.teacher).add_noise(images, noise, t)
        h = micro_teacher.pos_embed(x_t)
        normed = blocks[0].norm1(h, t, labels, hidden_dtype=h.dtype)[0]
        torch.testing.assert_close(cap.load_capture(folder, 0, "attn")[0], normed, rtol=1e-5, atol=1e-5)


def test_record_sites_on_pixart_leaves_outputs_unchanged():
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    m = PixArtTransformer2DModel(num_layers=2, num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=8, sample_size=8, patch_size=2, cross_attention_dim=16,
                                 caption_channels=8, num_embeds_ada_norm=1000, norm_type="ada_norm_single",
                                 use_additional_conditions=False).eval()
    kwargs = dict(encoder_hidden_states=torch.randn(2, 3, 8), timestep=torch.tensor([3, 700]),
                  added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        ref = m(x, **kwargs)[0]
        with cap.record_sites(m) as record:
            out = m(x, **kwargs)[0]
        assert torch.equal(ref, out)
        assert sorted(record) == [(0, "attn"), (0, "mlp"), (1, "attn"), (1, "mlp")]
        for (layer, site), (inp, tgt) in record.items():
            assert inp.shape == tgt.shape == (2, 16, 16)
            module = getattr(m.transformer_blocks[layer], cap.SITE_MODULES[site])
            torch.testing.assert_close(module(inp), tgt)
    assert not m.transformer_blocks[0].attn1._forward_hooks  # hooks removed


def test_load_capture_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="DONE"):
        cap.load_capture(tmp_path, 0, "attn")
    with pytest.raises(ValueError, match="unknown site"):
        cap.load_capture(tmp_path, 0, "ffn")


def test_capture_stored_as_float16_by_default(micro_teacher, micro_preset, capture_root):
    folder = cap.capture_activations(micro_teacher, micro_preset, root=capture_root)
    assert np.load(cap.array_path(folder, 0, "attn", "targets"), mmap_mode="r").dtype == np.float16
    x, _ = cap.load_capture(folder, 0, "attn", mmap=True)
    assert x.dtype == torch.float16
