"""The PixArt engine pieces the Table-5 steps call: T5 prompts encoded once into the artefact cache (``CachedPrompts``),
the resumable sharded synthetic-pair sampler, the on-disk stage-1 capture of a PixArt teacher, and PixArt-Σ loaded
offline from the fake Hub cache of ``benchmark.fakes.prerequisites.make_pixart``."""
import copy
import json
import pickle
import sys

import numpy as np
import pytest
import torch

from benchmark.fakes import prerequisites as fakes
from graft_core.stages import capture
from graft_core.text_to_image import pixart
from graft_core.errors import MissingWeightsError, StructureMismatch
from graft_core.text_to_image.text import (PROMPTS_ENV, CachedPrompts, TextConditioned, encode_prompts,
                                          missing_prompt_shards, prompt_shard_files)


@pytest.fixture(scope="module")
def fake_hf(tmp_path_factory):
    """The fake PixArt-Σ prerequisites (28 blocks at width 16, tiny T5, trained tokenizer, SD-XL-shaped VAE)."""
    root = tmp_path_factory.mktemp("fake-pixart")
    fakes.make_pixart(root / "hf")
    return {"hf": root / "hf", "prompts": fakes.make_prompts(root / "prompts.txt")}


@pytest.fixture
def fake_env(fake_hf, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(fake_hf["hf"]))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(PROMPTS_ENV, str(fake_hf["prompts"]))
    return fake_hf


@pytest.fixture(scope="module")
def micro_pixart(micro_preset, tmp_path_factory):
    cfg = pixart.pixart_config(micro_preset)
    folder = tmp_path_factory.mktemp("pixart") / pixart.pixart_key(cfg, micro_preset.data)
    pixart.train_pixart(micro_preset, folder, progress=False)
    return pixart.load_pixart_dir(folder)


def t5_parts(fake_hf):
    from transformers import T5EncoderModel, T5Tokenizer

    pipe = fake_hf["hf"] / "hub" / f"models--{fakes.PIXART_PIPELINE_REPO.replace('/', '--')}" / "snapshots" / \
        fakes.FAKE_REVISION
    return (T5Tokenizer.from_pretrained(pipe / "tokenizer"),
            T5EncoderModel.from_pretrained(pipe / "text_encoder").eval())


def test_encode_prompts_stores_t5_states_once(fake_hf, tmp_path):
    """Rows = T5's output for each prompt (fp16), the last row the empty caption; a second call finds the entry and
    never loads T5; CachedPrompts serves rows on the ids' device, shares its maps on copy and pickles small."""
    tokenizer, encoder = t5_parts(fake_hf)
    prompts = list(fakes.FAKE_PROMPTS[:5])
    folder = encode_prompts(prompts, tokenizer, encoder, 12, tmp_path, device="cpu", batch_size=2, shard_size=4)
    tok = tokenizer(prompts + [""], padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    with torch.no_grad():
        want = encoder(tok.input_ids, attention_mask=tok.attention_mask)[0]
    table = CachedPrompts(folder)
    assert table.null_id == 5 and table.dim == encoder.config.d_model
    states, mask = table(torch.tensor([4, 0, 5, 0]))
    assert states.dtype == torch.float16 and states.shape == (4, 12, encoder.config.d_model)
    assert torch.equal(mask, tok.attention_mask[[4, 0, 5, 0]])
    torch.testing.assert_close(states.float(), want[[4, 0, 5, 0]], atol=2e-3, rtol=2e-3)
    assert mask[2].sum() == 1  # the empty caption: just </s>
    with pytest.raises(ValueError, match="prompt ids must lie"):
        table(torch.tensor([6]))

    def must_not_load():
        raise AssertionError("T5 loaded for a cached prompt set")

    enc_id = json.loads((folder / "prompts.json").read_text())["encoder"]
    assert encode_prompts(prompts, tokenizer, must_not_load, 12, tmp_path, encoder_id=enc_id, shard_size=4) == folder
    other = encode_prompts(prompts[:4], tokenizer, encoder, 12, tmp_path, device="cpu")  # another set, another key
    assert other != folder and CachedPrompts(other).null_id == 4
    clone = copy.deepcopy(table)
    assert clone._rows is table._rows  # a model copy (EMA, finetune) does not read the maps
    assert len(pickle.dumps(table)) < prompt_shard_files(folder, 0)[0].stat().st_size + 10_000
    assert torch.equal(pickle.loads(pickle.dumps(table))(torch.tensor([0]))[0], states[[1]])  # id 0


class Killed(Exception):
    pass


class DiesAfter(torch.nn.Module):
    """T5 that dies (as a killed job) at its ``calls``-th forward."""

    def __init__(self, encoder, calls):
        super().__init__()
        self.encoder, self.calls, self.config = encoder, calls, encoder.config

    def forward(self, *args, **kwargs):
        self.calls -= 1
        if self.calls < 0:
            raise Killed()
        return self.encoder(*args, **kwargs)


def test_encoding_array_resumes_and_equals_an_uninterrupted_run(fake_hf, tmp_path):
    """Two tasks of the encoding array, one killed half-way and requeued: the finished shards are skipped, the
    interrupted one is redone, and every row equals one uninterrupted process's (whatever the number of tasks)."""
    tokenizer, encoder = t5_parts(fake_hf)
    prompts = list(fakes.FAKE_PROMPTS)  # 8 prompts + the empty caption: 5 shards of 2 rows
    kw = dict(device="cpu", batch_size=1, shard_size=2, encoder_id="fake-t5")
    whole = CachedPrompts(encode_prompts(prompts, tokenizer, encoder, 12, tmp_path / "one", **kw))
    root = tmp_path / "array"
    with pytest.raises(Killed):  # task 0 of 2 (shards 0, 2, 4) dies in its second shard
        encode_prompts(prompts, tokenizer, lambda: DiesAfter(encoder, 3), 12, root, rank=0, world_size=2, **kw)
    entry = root / whole.key
    assert missing_prompt_shards(entry) == [1, 2, 3, 4]
    with pytest.raises(MissingWeightsError, match=r"shard\(s\) \[1, 2, 3, 4\] are not encoded"):
        CachedPrompts(entry)  # a reader refuses an unfinished set (one line)
    seen = DiesAfter(encoder, 100)
    encode_prompts(prompts, tokenizer, lambda: seen, 12, root, rank=0, world_size=2, **kw)
    assert seen.calls == 100 - 3  # requeued: shards 2 and 4 only (3 rows: 2 + 1)
    assert missing_prompt_shards(entry) == [1, 3]

    def must_not_load():
        raise AssertionError("T5 loaded by a task whose shards are done")

    encode_prompts(prompts, tokenizer, must_not_load, 12, root, rank=0, world_size=2, **kw)
    encode_prompts(prompts, tokenizer, encoder, 12, root, rank=1, world_size=2, **kw)
    table = CachedPrompts(entry)
    ids = torch.arange(len(prompts) + 1)
    for a, b in zip(table(ids), whole(ids)):
        assert torch.equal(a, b)
    with pytest.raises(Exception, match="other settings"):  # another layout in the same entry is refused
        encode_prompts(prompts, tokenizer, encoder, 12, root, **{**kw, "shard_size": 3})
    prompt_shard_files(entry, 3)[0].write_bytes(prompt_shard_files(entry, 1)[0].read_bytes())
    from graft_core.errors import CorruptArtefactError

    with pytest.raises(CorruptArtefactError, match="DONE_00003.json"):
        CachedPrompts(entry)(torch.tensor([6]))


def test_the_benchmark_steps_only_look_the_t5_states_up(fake_env, tmp_path, monkeypatch):
    """``encode=False`` (the teacher, sampling and training steps): a set the encode steps did not finish is refused
    in one line and T5 is never loaded; after the encoding array's tasks the same call finds it."""
    from graft_core.runtime import paths

    monkeypatch.setenv("GRAFTBENCH_CACHE", str(tmp_path / "cache"))
    prompts = list(fakes.FAKE_PROMPTS[:3])
    load_t5 = pixart.load_t5
    monkeypatch.setattr(pixart, "load_t5", lambda *a, **k: pytest.fail("T5 loaded by a lookup"))
    with pytest.raises(MissingWeightsError, match="run its encode steps") as err:
        pixart.paper_prompts(prompts, 12, encode=False)
    assert "\n" not in str(err.value)
    monkeypatch.setattr(pixart, "load_t5", load_t5)
    reports = [pixart.encode_paper_prompts(prompts, 12, rank=r, world_size=2, shard_size=1, device="cpu")
               for r in (0, 1)]
    assert reports[0]["missing"] == [1, 3] and reports[1]["missing"] == []
    table = pixart.paper_prompts(prompts, 12, encode=False)
    assert table.folder == paths.cache_root() / pixart.PROMPT_CACHE / reports[1]["key"] and table.null_id == 3


def test_load_paper_teacher_from_the_fake_hub_cache(fake_env, tmp_path):
    """Offline, from HF_HOME: the 28-block PixArt-Σ-structured fake with its width and sample size read from the
    checkpoint, prompts from $GRAFTBENCH_PIXART_PROMPTS encoded once by T5, two synthetic pairs that decode."""
    pix = pixart.pretrained_pixart(pixart.PAPER_PIXART)
    assert (pix.num_layers, pix.hidden_size, pix.sample_size, pix.caption_channels) == (28, 16, 8, 32)
    teacher = pixart.load_paper_teacher(pixart.PAPER_PIXART)
    assert isinstance(teacher, TextConditioned) and isinstance(teacher.prompts, CachedPrompts)
    assert teacher.prompts.null_id == len(fakes.FAKE_PROMPTS) and len(teacher.transformer_blocks) == 28
    assert not any("text_encoder" in k or "prompts" in k for k in teacher.state_dict())  # T5 is not in the tree
    files = pixart.synthetic_shards(teacher, tmp_path / "pairs", num_pairs=2, shard_size=1, steps=2, batch_size=2,
                                    device="cpu")
    assert [f.name for f in files] == ["shard_00000.pt", "shard_00001.pt"]
    x0, ids = pixart.load_synthetic(tmp_path / "pairs", 2)
    assert x0.shape == (2, 4, 8, 8) and ids.tolist() == [0, 1] and torch.isfinite(x0).all()
    with torch.no_grad():
        images = pixart.paper_decoder()(x0)
    assert images.shape == (2, 3, 64, 64)
    again = pixart.paper_prompts(list(fakes.FAKE_PROMPTS), pix.max_tokens, device="cpu")
    assert again.folder == teacher.prompts.folder  # encoded once: the same entry


def test_missing_tokenizer_package_is_one_line(fake_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import sentencepiece → ImportError
    with pytest.raises(MissingWeightsError, match="pip install sentencepiece") as err:
        pixart.load_paper_teacher(pixart.PAPER_PIXART)
    assert "\n" not in str(err.value)


def test_pixart_structure_is_checked():
    config = {"num_layers": 12, "in_channels": 4, "out_channels": 8, "patch_size": 2, "norm_type": "ada_norm_single",
              "use_additional_conditions": False, "num_embeds_ada_norm": 1000, "num_attention_heads": 2,
              "attention_head_dim": 8, "cross_attention_dim": 16, "caption_channels": 32, "sample_size": 8}
    with pytest.raises(StructureMismatch, match="num_layers 12 \\(expected 28\\)"):
        pixart.pretrained_pixart(pixart.PAPER_PIXART, config)
    ok = pixart.pretrained_pixart(pixart.PAPER_PIXART, {**config, "num_layers": 28})
    assert (ok.attention_head_dim, ok.sample_size, ok.caption_channels) == (8, 8, 32)
    with pytest.raises(StructureMismatch, match="use_additional_conditions"):
        pixart.pretrained_pixart(pixart.PAPER_PIXART, {**config, "num_layers": 28, "use_additional_conditions": True})


SAMPLER = dict(steps=2, guidance_scale=4.5, batch_size=2, seed=7, device="cpu", clamp=True)


def test_synthetic_shards_do_not_depend_on_world_size(micro_pixart, tmp_path):
    """7 pairs in shards of 3: one task, or two tasks (one folder or two) give identical pairs; a deleted shard is
    redrawn identically without touching the others; a missing one is named; other settings are refused."""
    one = tmp_path / "one"
    pixart.synthetic_shards(micro_pixart, one, num_pairs=7, shard_size=3, **SAMPLER)
    x1, ids1 = pixart.load_synthetic(one, 7)
    assert x1.shape == (7, 1, 8, 8) and ids1.tolist() == [i % micro_pixart.prompts.null_id for i in range(7)]
    assert x1.abs().max() <= 1 and not torch.equal(x1[0], x1[3])  # clamped; shards draw different noise
    shared = tmp_path / "shared"
    mine = [pixart.synthetic_shards(micro_pixart, shared, num_pairs=7, shard_size=3, rank=r, world_size=2, **SAMPLER)
            for r in (1, 0)]
    assert [[p.name for p in m] for m in mine] == [["shard_00001.pt"], ["shard_00000.pt", "shard_00002.pt"]]
    x2, ids2 = pixart.load_synthetic(shared, 7)
    assert torch.equal(x1, x2) and torch.equal(ids1, ids2)
    split = [tmp_path / "r0", tmp_path / "r1"]
    for r in (0, 1):
        pixart.synthetic_shards(micro_pixart, split[r], num_pairs=7, shard_size=3, rank=r, world_size=2, **SAMPLER)
    assert torch.equal(pixart.load_synthetic(split, 7)[0], x1)
    assert torch.equal(pixart.load_synthetic(one, 4)[0], x1[:4])

    kept = pixart.shard_path(one, 0).stat().st_mtime_ns
    pixart.shard_path(one, 1).unlink()
    with pytest.raises(FileNotFoundError, match="shard 1 \\(pairs 3..5\\)"):
        pixart.load_synthetic(one, 7)
    pixart.synthetic_shards(micro_pixart, one, num_pairs=7, shard_size=3, **SAMPLER)  # resumes: only shard 1
    assert pixart.shard_path(one, 0).stat().st_mtime_ns == kept
    assert torch.equal(pixart.load_synthetic(one, 7)[0], x1)
    with pytest.raises(ValueError, match="seed"):
        pixart.synthetic_shards(micro_pixart, one, num_pairs=7, shard_size=3, **{**SAMPLER, "seed": 8})


def reference_attn(teacher, x0, ids, layer, cfg, *, seed):
    """``attn1``'s input and ungated output of ``layer`` in one forward, with the capture protocol's draws: one
    uniform timestep per sample, then the noise, from a generator seeded with ``seed``."""
    from graft_core.models.diffusion import make_train_scheduler

    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, cfg.num_train_timesteps, (len(x0),), generator=gen)
    x_t = make_train_scheduler(cfg).add_noise(x0, torch.randn(x0.shape, generator=gen), t)
    with torch.inference_mode(), capture.record_sites(teacher, sites=("attn",), layers=(layer,)) as record:
        teacher(x_t, timestep=t, class_labels=ids, return_dict=False)
    return tuple(v.float() for v in record[(layer, "attn")])


def test_capture_activations_on_a_pixart_teacher(micro_preset, micro_pixart, tmp_path):
    """The on-disk capture of ``attn1`` in a TextConditioned PixArt (labels = prompt ids) equals the hooked tensors
    of one in-RAM forward on the same pairs, timesteps and noise; another synthetic set is another capture."""
    pix = pixart.pixart_config(micro_preset)
    pixart.synthetic_shards(micro_pixart, tmp_path / "pairs", num_pairs=10, shard_size=4, **SAMPLER)
    data = pixart.synthetic_subset(tmp_path / "pairs", 0, 10, teacher_id="micro")
    preset = micro_preset.replace(teacher=pix.diffusion())
    folder = capture.capture_activations(micro_pixart, preset, data=data, pairs=[(1, "attn")], root=tmp_path / "cap",
                                         dtype="float32", device="cpu", batch_size=4)
    inputs, targets = capture.load_capture(folder, 1, "attn")
    want = reference_attn(micro_pixart, data.x0, data.labels, 1, preset.teacher, seed=preset.stage1.seed)
    assert inputs.shape == (10, 16, pix.hidden_size)
    torch.testing.assert_close(inputs, want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(targets, want[1], atol=1e-5, rtol=1e-5)
    assert capture.load_conditioning(folder)["labels"].tolist() == data.labels.tolist()
    pixart.synthetic_shards(micro_pixart, tmp_path / "pairs2", num_pairs=10, shard_size=4, **{**SAMPLER, "seed": 9})
    other = pixart.synthetic_subset(tmp_path / "pairs2", 0, 10, teacher_id="micro")
    assert capture.capture_activations(micro_pixart, preset, data=other, pairs=[(1, "attn")], root=tmp_path / "cap",
                                       dtype="float32", device="cpu", batch_size=4) != folder
    assert np.array_equal(data.indices, np.arange(10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_paper_pieces_on_cuda(fake_env, micro_preset, tmp_path):
    """On a GPU: T5 encodes there, the cached rows follow the ids onto it, the sampler and the capture run there."""
    teacher = pixart.load_paper_teacher(pixart.PAPER_PIXART, device="cuda")
    assert json.loads((teacher.prompts.folder / "prompts.json").read_text())["device"].startswith("cuda")
    teacher.to("cuda")
    states, mask = teacher.prompts(torch.tensor([0, teacher.prompts.null_id], device="cuda"))
    assert states.device.type == mask.device.type == "cuda"
    pixart.synthetic_shards(teacher, tmp_path / "pairs", num_pairs=4, shard_size=2, steps=2, batch_size=2,
                            device="cuda", bf16=True)
    data = pixart.synthetic_subset(tmp_path / "pairs", 0, 4, teacher_id="fake")
    assert torch.isfinite(data.x0).all() and data.x0.device.type == "cpu"
    pix = pixart.pretrained_pixart(pixart.PAPER_PIXART)
    folder = capture.capture_activations(teacher, micro_preset.replace(teacher=pix.diffusion()), data=data,
                                         pairs=[(8, "attn"), (27, "attn")], root=tmp_path / "cap", device="cuda")
    inputs, targets = capture.load_capture(folder, 27, "attn")
    assert inputs.shape == targets.shape == (4, 16, 16) and torch.isfinite(targets).all()
    assert capture.capture_meta(folder, 27, "attn")["device"].startswith("cuda")
