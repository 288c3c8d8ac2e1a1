"""Data splits, records as JSON, teacher caching and the sampler: the foundation every experiment stands on."""
import numpy as np
import pytest
import torch

from graft_core.data import load_digits, stratified_subset
from graft_core.data.digits import subset_hash
from graft_core.presets import get_preset
from graft_core.evaluation.sampler import make_labels, sample
from graft_core.data.decoder import to_uint8
from graft_core.models.teacher import load_teacher_dir, teacher_key, train_teacher


def test_digit_splits_are_deterministic_and_disjoint(micro_preset):
    a = load_digits(micro_preset.data)
    assert a.train_images.shape[1:] == (1, 8, 8)
    assert len(a.train_images) + len(a.heldout_images) == 5000
    assert torch.bincount(a.heldout_labels).tolist() == [20] * 10
    assert a.train_images.min() >= -1 and a.train_images.max() <= 1
    load_digits.cache_clear()
    b = load_digits(micro_preset.data)
    assert torch.equal(a.train_images, b.train_images)
    # no held-out image appears in train (pixel-exact match)
    train = {t.numpy().tobytes() for t in a.train_images}
    assert not any(t.numpy().tobytes() in train for t in a.heldout_images[:50])


def test_tiny_subsets_mirror_the_paper_fractions():
    """The tiny preset takes the paper preset's stage-1 images per class and stage-2 data fraction, and the
    class-stratified subsets have exactly those counts."""
    tiny, paper = get_preset("tiny"), get_preset("paper")
    per_class, fraction, seed = tiny.data.stage1_per_class, tiny.stage2.data_fraction, tiny.data.split_seed
    assert (per_class, fraction) == (paper.data.stage1_per_class, paper.stage2.data_fraction)
    data = load_digits(tiny.data)
    train_per_class = np.bincount(data.train_labels.numpy())
    s1 = stratified_subset(data.train_labels, per_class=per_class, seed=seed)
    s2 = stratified_subset(data.train_labels, fraction=fraction, seed=seed)
    assert np.bincount(data.train_labels[s1].numpy()).tolist() == [per_class] * 10
    assert np.bincount(data.train_labels[s2].numpy()).tolist() == np.round(fraction * train_per_class).tolist()
    assert subset_hash(s1) == subset_hash(stratified_subset(data.train_labels, per_class=per_class, seed=seed))
    assert subset_hash(s1) != subset_hash(stratified_subset(data.train_labels, per_class=per_class, seed=seed + 1))
    with pytest.raises(ValueError):
        stratified_subset(data.train_labels, per_class=per_class, fraction=fraction)


def test_records_are_plain_json():
    """``config.plain``: what every record writer hands to ``json`` (numbers from numpy / torch, arrays as lists)."""
    import json
    from pathlib import Path

    from graft_core.config import plain, to_jsonable
    from graft_core.grafting.plan import make_plan

    plan = make_plan("mlp", "mlp", [1], num_layers=4, ratio=3)
    record = {"b": np.float32(0.5), "a": torch.tensor(2), 3: np.arange(3), "t": torch.ones(1, 2), "p": plan,
              "s": get_preset("micro").stage1, "path": Path("x/y"), "pair": (1, np.int64(2)), "nan": float("nan")}
    out = plain(record)
    assert list(out) == ["b", "a", "3", "t", "p", "s", "path", "pair", "nan"]  # order kept (records are not hashed)
    assert out["b"] == 0.5 and type(out["b"]) is float and out["a"] == 2 and type(out["a"]) is int
    assert out["3"] == [0, 1, 2] and out["t"] == [[1.0, 1.0]] and out["pair"] == [1, 2] and out["path"] == "x/y"
    assert out["p"] == plan.to_dict() and out["s"] == to_jsonable(get_preset("micro").stage1)
    assert out["nan"] != out["nan"] and plain(record, finite=True)["nan"] is None
    json.dumps(plain(record, finite=True), allow_nan=False)


def test_teacher_key_depends_on_config(micro_preset):
    import dataclasses

    k = teacher_key(micro_preset.teacher, micro_preset.data)
    other = dataclasses.replace(micro_preset.teacher, seed=1)
    assert k != teacher_key(other, micro_preset.data)
    assert k == teacher_key(get_preset("micro").teacher, get_preset("micro").data)


def test_cached_teacher_reloads_bit_identically(micro_preset, micro_teacher, tmp_path):
    folder = tmp_path / "t"
    train_teacher(micro_preset, folder, progress=False)
    again = load_teacher_dir(folder)
    for (n1, p1), (n2, p2) in zip(micro_teacher.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1  # training is deterministic given the seed


def test_corrupt_teacher_weights_are_detected(micro_preset, tmp_path):
    folder = tmp_path / "t"
    train_teacher(micro_preset, folder, progress=False)
    weights = folder / "diffusion_pytorch_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupt"):
        load_teacher_dir(folder)


def test_sampler_is_deterministic_and_uses_the_model_null_class(micro_preset, micro_teacher):
    labels = make_labels(12, 10, "balanced", 0)
    kw = dict(teacher=micro_preset.teacher, steps=3, guidance_scale=1.5, seed=7, batch_size=6)
    a, b = sample(micro_teacher, labels, **kw), sample(micro_teacher, labels, **kw)
    assert a.shape == (12, 1, 8, 8) and torch.equal(a, b)
    # no autograd graph across the sampling loop: without inference mode a tiny 500-sample eval grew to 22 GB
    assert torch.is_inference(a) and not a.requires_grad
    c = sample(micro_teacher, labels, **{**kw, "seed": 8})
    assert not torch.equal(a, c)
    img = to_uint8(a)
    assert img.dtype == np.uint8 and img.shape == (12, 8, 8, 1)


def test_ddpm_sampler_handles_learned_sigma():
    import dataclasses

    from graft_core.models.teacher import build_dit

    cfg = dataclasses.replace(get_preset("micro").teacher, out_channels=2)
    model = build_dit(cfg).eval()
    out = sample(model, torch.tensor([0, 1]), teacher=cfg, scheduler="ddpm", steps=3, guidance_scale=2.0)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def test_dpm_solver_reaches_the_ddim_endpoint_in_fewer_model_calls(micro_preset, micro_teacher):
    """DPM-Solver++(2M) integrates the same probability-flow ODE as DDIM: from the same noise, 6 of its steps land
    closer to a 50-step DDIM reference than 6 DDIM steps do (the reason the tiny preset samples with it)."""
    labels = make_labels(8, 10, "balanced", 0)
    kw = dict(teacher=micro_preset.teacher, guidance_scale=1.5, seed=3, batch_size=8)
    ref = sample(micro_teacher, labels, scheduler="ddim", steps=50, **kw)
    ddim = sample(micro_teacher, labels, scheduler="ddim", steps=6, **kw)
    dpm = sample(micro_teacher, labels, scheduler="dpm", steps=6, **kw)
    assert torch.isfinite(dpm).all() and dpm.shape == ref.shape
    assert (dpm - ref).pow(2).mean() < (ddim - ref).pow(2).mean()


def test_labels_and_unknown_options():
    assert make_labels(25, 10, "balanced", 0).bincount().tolist() == [3] * 5 + [2] * 5
    assert torch.equal(make_labels(25, 10, "uniform", 3), make_labels(25, 10, "uniform", 3))
    with pytest.raises(ValueError, match="label mode"):
        make_labels(5, 10, "weird", 0)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")


def test_learned_sigma_loss_adds_vb_term():
    import dataclasses

    from graft_core.models.diffusion import diffusion_loss, make_train_scheduler
    from graft_core.models.teacher import build_dit

    cfg = dataclasses.replace(get_preset("micro").teacher, out_channels=2)
    model = build_dit(cfg).eval()
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    loss = diffusion_loss(model, make_train_scheduler(cfg), x0, torch.arange(4), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.proj_out_2.weight.grad is not None


def test_paper_teacher_missing_weights_is_a_clear_error():
    from graft_core.errors import MissingWeightsError
    from graft_core.models.teacher import load_teacher

    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        load_teacher(get_preset("paper"))


def test_ddpm_uses_adm_respacing():
    from graft_core.evaluation.sampler import adm_timesteps

    ts = adm_timesteps(250, 1000)
    assert len(ts) == 250 and ts[:3] == [999, 995, 991] and ts[-1] == 0
    assert adm_timesteps(1000, 1000) == list(range(999, -1, -1))


def test_guidance_channels_limits_cfg_to_the_first_channels():
    from graft_core.evaluation.sampler import guided_output

    class Fake(torch.nn.Module):
        def forward(self, x, timestep=None, class_labels=None, return_dict=False):
            # cond rows (label 0) output 1, uncond rows (null 10) output 0
            return ((class_labels != 10).float().view(-1, 1, 1, 1).expand_as(x).clone(),)

    x = torch.zeros(2, 4, 2, 2)
    out = guided_output(Fake(), x, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 10, 1.5, 3)
    assert torch.allclose(out[:, :3], torch.full_like(out[:, :3], 1.5)) and torch.allclose(out[:, 3], torch.ones(2, 2, 2))
