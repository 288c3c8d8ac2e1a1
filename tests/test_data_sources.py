"""The data interface: digits subsets match the stratified draws the stages used before; ImageNet subsets come from
the prepared latent files (fake ImageFolder → ``benchmark.prepare``'s encoder with an SD-VAE-structured VAE)."""
import numpy as np
import pytest
import torch

from benchmark.fakes.prerequisites import encode_latents, make_vae
from graft_core.data import imagenet as inet
from graft_core.data import load_digits, stratified_subset
from graft_core.data.digits import subset_hash
from graft_core.data.sources import ImageNetLatentSource, source_of, stage2_subset_name
from graft_core.presets import get_preset


def test_digits_subsets_are_the_stratified_draws(micro_preset):
    src = source_of(micro_preset)
    data = load_digits(micro_preset.data)
    s1 = src.subset(micro_preset, "stage1")
    idx = stratified_subset(data.train_labels, per_class=micro_preset.data.stage1_per_class,
                            seed=micro_preset.data.split_seed)
    assert np.array_equal(s1.indices, idx) and s1.identity == subset_hash(idx)
    assert torch.equal(s1.x0, data.train_images[torch.as_tensor(idx)])
    held = src.subset(micro_preset, "heldout")
    assert len(held.indices) == len(idx) and not torch.equal(held.x0, s1.x0)  # the twin comes from held-out images
    frac = micro_preset.stage2.data_fraction
    s2 = src.subset(micro_preset, stage2_subset_name(frac))
    per_class = np.bincount(s2.labels.numpy())
    assert per_class.min() == per_class.max() == round(frac * len(data.train_labels) / 10)
    assert src.decoder(micro_preset) is None and src.pixel_space
    images, labels = src.real_images(micro_preset, "heldout")
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1) and len(images) == len(labels)


def test_unknown_subset_and_data_are_one_line_errors(micro_preset):
    with pytest.raises(ValueError, match="stage1, heldout or stage2"):
        source_of(micro_preset).subset(micro_preset, "nosuch")
    bad = micro_preset.replace(data=micro_preset.data.__class__(name="nosuch"))
    with pytest.raises(ValueError, match="unknown data 'nosuch'"):
        source_of(bad)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A 3-class ImageFolder (train + val) of JPEGs, encoded with an SD-VAE-structured VAE at 64 px, plus subsets."""
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("inet")
    vae = AutoencoderKL.from_pretrained(make_vae(root / "hf", width=8)).eval()
    out = encode_latents(root, root / "hf", classes=3, per_class={"train": 6, "val": 3}, resolution=64,
                         subsets={"stage1": 2, "heldout": 2, "pct10": 4})
    return out, vae


def test_imagenet_subsets_come_from_the_prepared_files(prepared, monkeypatch):
    out, vae = prepared
    paper = get_preset("paper")
    src = ImageNetLatentSource(root=lambda: out)
    s1 = src.subset(paper, "stage1")
    assert s1.x0.shape == (6, 4, 8, 8) and s1.x0.dtype == torch.float32
    assert np.bincount(s1.labels.numpy()).tolist() == [2, 2, 2]
    assert s1.identity == inet.load_subset(out, "stage1")[1]["sha256"]
    s2 = src.subset(paper, stage2_subset_name(0.10))  # the 10 % subset is the prepared pct10 list
    assert len(s2.indices) == 12 and set(s1.indices) <= set(s2.indices)  # nested, as paper §2
    held = src.subset(paper, "heldout")
    assert len(held.indices) == 6
    monkeypatch.setattr(inet, "load_vae", lambda device="cpu": vae)
    images, labels = src.real_images(paper, "heldout")
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    with pytest.raises(ValueError, match="no ImageNet subset"):
        src.subset(paper, stage2_subset_name(0.37))
