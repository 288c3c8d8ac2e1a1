"""Activation capture: what is stored, that it is stored once, and that it is what the operator sees; only the
requested (layer, site) pairs, each its own cache entry; resumable; clean vs noised input; the disk estimate."""
import json

import numpy as np
import pytest
import torch

from graft_core.stages import capture as cap


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
    assert counter.calls == 3  # 20 samples (2 per class) in batches of 7: one pass for all four pairs
    cfg = micro_preset.teacher
    assert cap.captured_pairs(folder) == [(layer, site) for layer in range(cfg.num_layers) for site in cap.SITES]
    assert all((cap.pair_folder(folder, *p) / "DONE").exists() for p in cap.captured_pairs(folder))
    again = cap.capture_activations(micro_teacher, micro_preset, root=capture_root, batch_size=7)
    assert again == folder
    assert counter.calls == 3  # second call: DONE markers only, no teacher forward
    meta = json.loads((cap.pair_folder(folder, 0, "attn") / "meta.json").read_text())
    assert meta["num_samples"] == 10 * micro_preset.data.stage1_per_class
    assert meta["num_layers"] == cfg.num_layers and meta["dtype"] == "float16"
    assert meta["capture_input"] == "noised" and meta["forward_dtype"] == "float32" and meta["device"] == "cpu"
    assert meta["nonfinite"] == {"inputs": 0, "targets": 0}  # fp16 overflow would be counted here
    assert not list(folder.glob(".*.tmp-*")) and not list(folder.glob("*.resume"))  # no temp or resume left


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
        from graft_core.models.diffusion import make_train_scheduler
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


# --------------------------------------------------------------------------------------------------------------------
# Only the requested pairs, one cache entry each
# --------------------------------------------------------------------------------------------------------------------


def test_default_capture_key_is_the_one_before_pairs_existed(micro_teacher, micro_preset, capture_root):
    """The key formula of the all-pairs capture (git show HEAD~5:graft_core/stages/capture.py): tiny/micro captures keep
    their folders, and the stage-1 spec hashes that name them keep theirs."""
    from graft_core.config import stable_hash
    from graft_core.data.digits import subset_hash
    from graft_core.models.teacher import teacher_key

    _, _, idx = cap.capture_subset(micro_preset, "stage1")
    old = stable_hash({"teacher": teacher_key(micro_preset.teacher, micro_preset.data), "split": "stage1",
                       "subset": subset_hash(idx), "seed": micro_preset.stage1.seed, "dtype": "float16",
                       "version": 1})
    folder = cap.capture_activations(micro_teacher, micro_preset, root=capture_root)
    assert folder.name == old
    assert cap.capture_key(micro_preset, "stage1", idx, micro_preset.stage1.seed, "float16") == old
    # the pair set is not part of the key: a one-pair capture names the same folder
    one = cap.capture_activations(micro_teacher, micro_preset, root=capture_root, pairs=[(1, "mlp")])
    assert one == folder


def test_capture_holds_only_the_requested_pairs(micro_teacher, micro_preset, capture_root, tmp_path, monkeypatch):
    folder = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, pairs=[(1, "mlp")])
    assert cap.captured_pairs(folder) == [(1, "mlp")]
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == ["layer001.mlp"]
    with pytest.raises(FileNotFoundError, match="layer 0 / attn"):
        cap.load_capture(folder, 0, "attn")
    # the same arrays as in the all-pairs capture (same key, another root)
    full = cap.capture_activations(micro_teacher, micro_preset, root=capture_root)
    for a, b in zip(cap.load_capture(folder, 1, "mlp", mmap=True), cap.load_capture(full, 1, "mlp", mmap=True)):
        assert torch.equal(a, b)
    # a second plan with an overlapping set: only the missing pair is computed, the shared one is not rebuilt
    shared = cap.pair_folder(folder, 1, "mlp") / "meta.json"
    before = shared.read_bytes()
    counter = ForwardCounter(micro_teacher)
    monkeypatch.setattr(micro_teacher, "forward", counter)
    cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, pairs=[[1, "mlp"], [0, "attn"]],
                            batch_size=20)
    assert counter.calls == 1 and cap.captured_pairs(folder) == [(0, "attn"), (1, "mlp")]
    assert shared.read_bytes() == before
    assert json.loads((cap.pair_folder(folder, 0, "attn") / "meta.json").read_text())["pass_pairs"] == 1
    with pytest.raises(ValueError, match="out of range"):
        cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, pairs=[(9, "attn")])
    with pytest.raises(ValueError, match="unknown site"):
        cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, pairs=[(0, "ffn")])


class Killed(RuntimeError):
    pass


def test_a_killed_capture_resumes_and_matches_an_uninterrupted_one(micro_teacher, micro_preset, tmp_path,
                                                                   monkeypatch):
    """The teacher dies after 2 of 4 batches: the pairs' resume folders keep the memory maps and the progress, the
    next call runs only the 2 remaining batches, and the arrays are bit-identical to a capture never interrupted."""
    pairs = [(0, "mlp"), (1, "attn")]
    inner = micro_teacher.forward
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise Killed("simulated kill")
        return inner(*args, **kwargs)

    monkeypatch.setattr(micro_teacher, "forward", dying)
    with pytest.raises(Killed):
        cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, pairs=pairs, batch_size=5)
    folder = next((tmp_path / "captures").iterdir())
    assert cap.captured_pairs(folder) == []  # nothing published
    for pair in pairs:
        res = folder / (cap.pair_folder(folder, *pair).name + ".resume")
        progress = json.loads((res / "progress.json").read_text())
        assert progress["done"] == 10 and progress["batches"] == 2
        assert np.load(res / "targets.npy", mmap_mode="r").shape[0] == 20  # preallocated for all samples
    counter = ForwardCounter(micro_teacher)
    monkeypatch.setattr(micro_teacher, "forward", counter)
    counter._inner = inner
    resumed = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, pairs=pairs, batch_size=5)
    assert resumed == folder and counter.calls == 2  # batches 3 and 4 only
    assert not list(folder.glob("*.resume"))
    assert json.loads((cap.pair_folder(folder, 0, "mlp") / "meta.json").read_text())["resumed_from"] == 10
    full = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path / "ref", pairs=pairs, batch_size=5)
    for pair in pairs:
        for kind in cap.KINDS:
            a = np.load(cap.array_path(folder, *pair, kind))
            b = np.load(cap.array_path(full, *pair, kind))
            assert a.tobytes() == b.tobytes(), (pair, kind)


def test_clean_capture_input_is_the_official_one_and_changes_the_key(micro_teacher, micro_preset, capture_root,
                                                                     tmp_path):
    """``capture_input="clean"`` (src/datasets/extract_scion_fts_mha.py): the teacher sees x0 itself with the same
    random t; a different folder, recorded in the meta."""
    noised = cap.capture_activations(micro_teacher, micro_preset, root=capture_root)
    clean = cap.capture_activations(micro_teacher, micro_preset, root=capture_root, capture_input="clean",
                                    dtype="float32", pairs=[(0, "attn")])
    assert clean.name != noised.name
    meta = cap.capture_meta(clean)
    assert meta["capture_input"] == "clean" and meta["pairs"] == [[0, "attn"]]
    cond, cond_noised = cap.load_conditioning(clean), cap.load_conditioning(noised)
    assert torch.equal(cond["timesteps"], cond_noised["timesteps"])  # same t either way
    x_clean, _ = cap.load_capture(clean, 0, "attn")
    x_noised, _ = cap.load_capture(noised, 0, "attn")
    assert not torch.allclose(x_clean, x_noised, atol=1e-2)
    images, labels, _ = cap.capture_subset(micro_preset, "stage1")
    t = cond["timesteps"]
    block = micro_teacher.transformer_blocks[0]
    with torch.no_grad():
        h = micro_teacher.pos_embed(images)  # no add_noise
        torch.testing.assert_close(x_clean, block.norm1(h, t, labels, hidden_dtype=h.dtype)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="capture_input"):
        cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, capture_input="raw")


def test_bfloat16_storage(micro_teacher, micro_preset, tmp_path):
    """bf16 on disk (fp16 overflows past 65504): stored as its bit pattern, read back as bfloat16 / float32."""
    folder = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, dtype="bfloat16", pairs=[(1, "mlp")])
    exact = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, dtype="float32", pairs=[(1, "mlp")])
    assert folder != exact
    assert np.load(cap.array_path(folder, 1, "mlp", "targets"), mmap_mode="r").dtype == np.int16
    x, y = cap.load_capture(folder, 1, "mlp", mmap=True)
    assert x.dtype == y.dtype == torch.bfloat16
    _, y_exact = cap.load_capture(exact, 1, "mlp")
    assert torch.equal(cap.load_capture(folder, 1, "mlp")[1], y_exact.to(torch.bfloat16).float())


def test_captures_of_the_flat_layout_are_still_read(micro_teacher, micro_preset, tmp_path, monkeypatch):
    """Folders written before per-pair entries (flat ``layer000.attn.inputs.npy`` + top-level DONE) stay valid."""
    import shutil

    from graft_core.runtime import cache

    new = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path / "new")
    legacy = tmp_path / "old" / "captures" / new.name
    legacy.mkdir(parents=True)
    for layer, site in cap.captured_pairs(new):
        for kind in cap.KINDS:
            shutil.copy(cap.pair_folder(new, layer, site) / f"{kind}.npy",
                        legacy / f"layer{layer:03d}.{site}.{kind}.npy")
    shutil.copy(cap.pair_folder(new, 0, "attn") / "conditioning.pt", legacy / "conditioning.pt")
    (legacy / "meta.json").write_text(json.dumps({"num_samples": 20, "num_layers": 2, "sites": ["attn", "mlp"]}))
    (legacy / "DONE").write_text("ok\n")
    cache.write_manifest(legacy)
    monkeypatch.setattr(micro_teacher, "forward", lambda *a, **k: pytest.fail("recaptured a legacy capture"))
    assert cap.capture_activations(micro_teacher, micro_preset, root=tmp_path / "old") == legacy
    assert cap.captured_pairs(legacy) == cap.captured_pairs(new)
    for a, b in zip(cap.load_capture(legacy, 1, "attn"), cap.load_capture(new, 1, "attn")):
        assert torch.equal(a, b)
    assert torch.equal(cap.load_conditioning(legacy)["timesteps"], cap.load_conditioning(new)["timesteps"])


def test_capture_leaves_the_teacher_where_it_was(micro_teacher, micro_preset, tmp_path):
    was_training = micro_teacher.training
    cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, pairs=[(0, "attn")], device="cpu")
    assert next(micro_teacher.parameters()).device.type == "cpu" and micro_teacher.training == was_training


# --------------------------------------------------------------------------------------------------------------------
# Disk estimate
# --------------------------------------------------------------------------------------------------------------------


def test_capture_bytes_formula_and_paper_scale():
    from graft_core.stages import capture_size as cs
    from graft_core.presets import get_preset

    paper = get_preset("paper")
    per_array = 8000 * 256 * 1152 * 2
    assert per_array == 4_718_592_000  # DiT-XL/2: 4.72 GB per array in fp16
    assert cs.default_split_count(paper) == 8000
    assert cs.array_bytes(8000, 256, 1152, "float16") == cs.NPY_HEADER + per_array
    one = cs.capture_bytes(paper, [(3, "attn")])
    assert one == 2 * (cs.NPY_HEADER + per_array) + 8000 * 24 + cs.ENTRY_OVERHEAD
    assert cs.capture_bytes(paper, [(3, "attn"), (3, "attn"), (5, "mlp")]) == 2 * one  # duplicates counted once
    everything = cs.capture_bytes(paper)
    assert everything == 56 * one and 528e9 < everything < 530e9  # ~528 GB per split, as issue 15 says
    assert cs.capture_bytes(paper, [(3, "attn")], dtype="float32") - 2 * cs.NPY_HEADER > 2 * 2 * per_array
    assert cs.capture_bytes(paper, [(3, "attn")], split_count=100) < one
    assert cs.format_bytes(everything) == "528.49 GB"
    with pytest.raises(ValueError, match="dtype"):
        cs.array_bytes(1, 1, 1, "int8")


def test_capture_bytes_bounds_what_a_capture_writes(micro_teacher, micro_preset, tmp_path):
    from graft_core.stages import capture_size as cs

    folder = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, pairs=[(0, "mlp")])
    entry = cap.pair_folder(folder, 0, "mlp")
    s, t = 10 * micro_preset.data.stage1_per_class, micro_preset.teacher
    for kind in cap.KINDS:
        assert (entry / f"{kind}.npy").stat().st_size == cs.array_bytes(s, t.num_tokens, t.hidden_size)
    on_disk = sum(p.stat().st_size for p in entry.iterdir())
    estimate = cs.capture_bytes(micro_preset, [(0, "mlp")])
    assert estimate - cs.ENTRY_OVERHEAD <= on_disk <= estimate


_KILLED_CHILD = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from graft_core.stages import capture as cap
from graft_core.presets import get_preset

teacher = torch.load(sys.argv[1], weights_only=False)
inner, calls = teacher.forward, []

def forward(*args, **kwargs):
    calls.append(1)
    if len(calls) > 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no exception handler, no cleanup: as a Slurm preemption
    return inner(*args, **kwargs)

teacher.forward = forward
cap.capture_activations(teacher, get_preset("micro"), root=sys.argv[2], pairs=[(0, "mlp")], batch_size=5,
                        device="cpu")
"""


def test_a_sigkilled_capture_resumes_bit_identical(micro_teacher, micro_preset, tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys

    torch.save(micro_teacher, tmp_path / "teacher.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(tmp_path / "teacher.pt"), str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    folder = next((tmp_path / "run" / "captures").iterdir())
    assert list(folder.glob(".layer000.mlp.tmp-*"))  # the dead writer's temp folder is left behind
    assert json.loads((folder / "layer000.mlp.resume" / "progress.json").read_text())["done"] == 10
    counter = ForwardCounter(micro_teacher)
    monkeypatch.setattr(micro_teacher, "forward", counter)
    cap.capture_activations(micro_teacher, micro_preset, root=tmp_path / "run", pairs=[(0, "mlp")], batch_size=5,
                            device="cpu")
    assert counter.calls == 2 and cap.captured_pairs(folder) == [(0, "mlp")]
    assert not list(folder.glob(".layer000.mlp.tmp-*")) and not (folder / "layer000.mlp.resume").exists()
    ref = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path / "ref", pairs=[(0, "mlp")],
                                  batch_size=5, device="cpu")
    for kind in cap.KINDS:
        assert (cap.array_path(folder, 0, "mlp", kind).read_bytes() == cap.array_path(ref, 0, "mlp", kind).read_bytes())


def test_bf16_autocast_forward_enters_the_key(micro_teacher, micro_preset, capture_root, tmp_path):
    """The teacher's bf16 autocast (default on CUDA) changes the numbers, so it names another folder; exercised here
    on CPU."""
    plain = cap.capture_activations(micro_teacher, micro_preset, root=capture_root)
    auto = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, autocast=True, pairs=[(1, "attn")],
                                   device="cpu")
    assert auto.name != plain.name and cap.capture_meta(auto)["forward_dtype"] == "bfloat16"
    _, y_auto = cap.load_capture(auto, 1, "attn")
    _, y = cap.load_capture(plain, 1, "attn")
    assert not torch.equal(y_auto, y)
    torch.testing.assert_close(y_auto, y, rtol=0.1, atol=0.1 * y.abs().max().item())


def test_paper_preset_captures_prepared_imagenet_latents(tmp_path, monkeypatch):
    """The paper preset's capture reads the stage-1 subset from ``benchmark.prepare``'s latent files (the data
    source), keyed by the subset's identity; here a 3-class fake at 64 px (8×8×4 latents) and a 2-block DiT."""
    import dataclasses

    from benchmark.fakes.prerequisites import encode_latents, make_vae
    from graft_core.data import imagenet as inet
    from graft_core.presets import get_preset
    from graft_core.models.teacher import build_dit

    make_vae(tmp_path / "hf", width=8)
    out = encode_latents(tmp_path, tmp_path / "hf", classes=3, per_class={"train": 4, "val": 2}, resolution=64,
                         subsets={"stage1": 2, "heldout": 2, "pct10": 4})
    monkeypatch.setenv("GRAFTBENCH_IMAGENET", str(out))
    paper = get_preset("paper")
    preset = paper.replace(teacher=dataclasses.replace(paper.teacher, num_layers=2, num_attention_heads=2,
                                                       attention_head_dim=8, sample_size=8))
    torch.manual_seed(0)
    teacher = build_dit(preset.teacher).eval()
    folder = cap.capture_activations(teacher, preset, root=tmp_path / "cache", pairs=[(1, "attn")], device="cpu")
    x, y = cap.load_capture(folder, 1, "attn")
    assert x.shape == y.shape == (6, 16, 16)
    identity = inet.load_subset(out, "stage1")[1]["sha256"]
    meta = cap.capture_meta(folder)
    assert meta["subset"] == identity and meta["pairs"] == [[1, "attn"]]
    _, labels, idx = cap.capture_subset(preset, "stage1")
    assert folder.name == cap.capture_key(preset, "stage1", identity, preset.stage1.seed, "float16")
    cond = cap.load_conditioning(folder)
    assert torch.equal(cond["labels"], labels) and np.array_equal(cond["indices"].numpy(), idx)


def test_fp16_overflow_is_counted_and_bf16_avoids_it(micro_teacher, micro_preset, tmp_path):
    """A teacher whose MLP outputs pass 65504 (massive activations): fp16 storage turns them into inf and the
    pair's meta counts them; bf16 storage keeps them finite."""
    import copy

    loud = copy.deepcopy(micro_teacher)
    with torch.no_grad():
        loud.transformer_blocks[0].ff.net[2].weight.mul_(1e6)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        fp16 = cap.capture_activations(loud, micro_preset, root=tmp_path / "a", pairs=[(0, "mlp")], device="cpu")
    bf16 = cap.capture_activations(loud, micro_preset, root=tmp_path / "b", pairs=[(0, "mlp")], device="cpu",
                                   dtype="bfloat16")
    assert cap.capture_meta(fp16)["nonfinite"]["targets"] > 0
    assert cap.capture_meta(bf16)["nonfinite"] == {"inputs": 0, "targets": 0}
    assert torch.isfinite(cap.load_capture(bf16, 0, "mlp")[1]).all()
