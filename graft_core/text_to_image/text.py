"""Text conditioning for the text-to-image experiment (paper Table 5): prompts, a fixed offline text encoder, and a
wrapper that lets a diffusers ``PixArtTransformer2DModel`` be driven by prompt ids like a class-conditional DiT.

**Tiny text encoder** (``HashTextEncoder``): a frozen, deterministic stand-in for PixArt's T5 — nothing is trained or
downloaded. A caption is lower-cased and split into words and single digits (``re.findall(r"[a-z]+|[0-9]")``), an
``<eos>`` token is appended (the empty caption = just ``<eos>``, as T5 encodes ""), and it is cut to ``max_tokens``
(keeping ``<eos>``). Token ``w`` at position ``i`` is embedded as ``e(w) + p(i)``: ``e(w) ~ N(0, I_C)`` drawn from a
generator seeded by ``sha256(f"{seed}:{w}")`` (so any word has a fixed vector, no vocabulary file) and ``p(i)`` the
sinusoidal position code. Padding positions are zero and masked out. PixArt's trainable ``caption_projection`` maps
the ``C`` channels to the model width, like it maps T5's 4096.

**Prompts** (``digit_prompts``): ``len(TEMPLATES)`` captions per digit, e.g. "a handwritten seven", "the number 7".
Prompt id ``p`` is template ``p // 10`` for digit ``p % 10``, so ids ``0..9`` are template 0 and ``prompt_digit(p) =
p % 10`` is the digit a prompt asks for. The id ``len(prompts)`` is the empty caption (classifier-free guidance).

**``TextConditioned``** wraps a PixArt transformer and a ``PromptTable`` (encoded prompts as buffers): its
``forward(x, timestep=, class_labels=prompt_ids)`` looks the captions up and calls PixArt with
``encoder_hidden_states`` / ``encoder_attention_mask``. Its ``config.num_embeds_ada_norm`` is the empty-caption id,
so ``graft_core.evaluation.sampler``, ``graft_core.stages.finetune`` and ``graft_core.stages.capture.record_sites`` work on it unchanged.

**Paper** (PixArt-Σ's T5): ``encode_prompts`` runs T5 once per prompt (a resumable shard array: the ``encode``
steps, one GPU task each) into a cache entry of float16 shard files; ``CachedPrompts`` serves rows of it with
``PromptTable``'s interface, so T5 is neither in the module tree nor run at any denoising step.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from graft_core.errors import MissingWeightsError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a handwritten {word}",
    "the digit {word}",
    "a picture of the number {word}",
    "{numeral}",
    "the number {numeral}",
    "an image of a handwritten {numeral}",
)
EOS = "<eos>"
_TOKEN = re.compile(r"[a-z]+|[0-9]")


def digit_prompts(templates: Sequence[str] = TEMPLATES) -> list[str]:
    """All captions: index ``p`` = template ``p // 10`` filled with digit ``p % 10``."""
    return [t.format(word=DIGIT_WORDS[d], numeral=d) for t in templates for d in range(10)]


def prompt_digit(prompt_ids: torch.Tensor | int):
    """The digit a prompt id of ``digit_prompts`` asks for."""
    return prompt_ids % 10


def tokenize(text: str, max_tokens: int) -> list[str]:
    """Words and single digits of ``text`` (lower-cased) + ``<eos>``, at most ``max_tokens`` (``<eos>`` kept)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    words = _TOKEN.findall(text.lower())[: max_tokens - 1]
    return words + [EOS]


class HashTextEncoder:
    """Frozen text encoder: hashed Gaussian word vectors + sinusoidal positions (see module docstring)."""

    def __init__(self, dim: int = 64, max_tokens: int = 8, seed: int = 0):
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be a positive even number, got {dim}")
        self.dim, self.max_tokens, self.seed = dim, max_tokens, seed

    def word_vector(self, word: str) -> torch.Tensor:
        digest = hashlib.sha256(f"{self.seed}:{word}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        return torch.randn(self.dim, generator=gen)

    def positions(self) -> torch.Tensor:
        pos = torch.arange(self.max_tokens, dtype=torch.float64)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, self.dim, 2, dtype=torch.float64) / self.dim)
        table = torch.zeros(self.max_tokens, self.dim, dtype=torch.float64)
        table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
        return table.float()

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states [B, max_tokens, dim] float32, mask [B, max_tokens] int64)``; padding is zero and masked."""
        states = torch.zeros(len(texts), self.max_tokens, self.dim)
        mask = torch.zeros(len(texts), self.max_tokens, dtype=torch.long)
        pos = self.positions()
        for b, text in enumerate(texts):
            for i, word in enumerate(tokenize(text, self.max_tokens)):
                states[b, i] = self.word_vector(word) + pos[i]
                mask[b, i] = 1
        return states, mask


class PromptTable(nn.Module):
    """Encoded captions of a fixed prompt list plus the empty caption (id ``len(prompts)``), held as buffers."""

    def __init__(self, prompts: Sequence[str], encode: Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.prompts = list(prompts)
        states, mask = encode(self.prompts + [""])
        self.register_buffer("states", states)
        self.register_buffer("mask", mask)

    @property
    def null_id(self) -> int:
        return len(self.prompts)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids.to(self.states.device).long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > self.null_id):
            raise ValueError(f"prompt ids must lie in 0..{self.null_id} (the last is the empty caption)")
        return self.states[ids], self.mask[ids]


class ModelConfig(dict):
    """A plain dict with attribute access (diffusers reads ``config.x``, peft calls ``config.get``)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class TextConditioned(nn.Module):
    """A PixArt transformer driven by prompt ids, with the class-conditional DiT call signature.

    ``model(x, timestep=t, class_labels=prompt_ids, return_dict=False)[0]`` — prompt id ``null_id`` is the empty
    caption. ``transformer_blocks`` and the sizes in ``config`` are the PixArt model's (surgery, capture, timing).
    """

    def __init__(self, transformer: nn.Module, prompts: PromptTable):
        super().__init__()
        self.transformer = transformer
        self.prompts = prompts
        cfg = transformer.config
        self.config = ModelConfig(
            num_embeds_ada_norm=prompts.null_id, sample_size=cfg.sample_size, patch_size=cfg.patch_size,
            num_attention_heads=cfg.num_attention_heads, attention_head_dim=cfg.attention_head_dim,
            in_channels=cfg.in_channels, out_channels=cfg.out_channels, model_type="pixart_text_conditioned")

    @property
    def transformer_blocks(self) -> nn.ModuleList:
        return self.transformer.transformer_blocks

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None, return_dict: bool = True, **kwargs):
        if class_labels is None:
            class_labels = torch.full((hidden_states.shape[0],), self.prompts.null_id, dtype=torch.long,
                                      device=hidden_states.device)
        states, mask = self.prompts(class_labels)
        return self.transformer(hidden_states, encoder_hidden_states=states.to(hidden_states.device,
                                                                               hidden_states.dtype),
                                timestep=timestep, encoder_attention_mask=mask.to(hidden_states.device),
                                added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                                return_dict=return_dict, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Paper: captions through PixArt-Σ's T5
# --------------------------------------------------------------------------------------------------------------------

PROMPTS_ENV = "GRAFTBENCH_PIXART_PROMPTS"  # text file, one prompt per line (the paper's 30k prompt set is unnamed)


PROMPT_META = "prompts.json"  # the set's settings: prompts, sizes, encoder, shard size (written by the first task)
PROMPT_SHARDS = "shards"  # shards/embeddings_XXXXX.npy [n, max_tokens, D] float16, mask_XXXXX.npy uint8, DONE_XXXXX.json
PROMPT_SHARD_SIZE = 512  # rows per shard file (paper: 12k prompts × 300 × 4096 fp16 → 1.3 GB per shard)


def module_fingerprint(module: nn.Module) -> str:
    """A cheap identity of a module's weights: its config, every parameter's name, shape and dtype, and the bytes of
    the first 1024 values of each (hashing all of T5-XXL's 4.7 B parameters would cost more than encoding)."""
    h = hashlib.sha256()
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in module.state_dict().items():
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            h.update(p.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _tokenize_all(tokenizer, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    tok = tokenizer(texts, padding="max_length", max_length=max_tokens, truncation=True, add_special_tokens=True,
                    return_tensors="pt")
    return tok.input_ids, tok.attention_mask


def prompts_key(prompts: Sequence[str], tokenizer, encoder_id: str, max_tokens: int) -> str:
    """Identity of an encoded prompt set: the prompts, the token ids the tokenizer gives them (so another tokenizer
    or vocabulary is another key without naming it), the encoder's identity and ``max_tokens``."""
    ids, mask = _tokenize_all(tokenizer, list(prompts) + [""], max_tokens)
    h = hashlib.sha256()
    for blob in (json.dumps(list(prompts)).encode(), ids.to(torch.int64).numpy().tobytes(),
                 mask.to(torch.int64).numpy().tobytes(), f"{encoder_id}:{max_tokens}".encode()):
        h.update(hashlib.sha256(blob).digest())
    return h.hexdigest()[:16]


def prompt_shard_files(entry: Path, s: int) -> tuple[Path, Path, Path]:
    """(embeddings, mask, done marker) of shard ``s`` of an encoded prompt set."""
    d = Path(entry) / PROMPT_SHARDS
    return d / f"embeddings_{s:05d}.npy", d / f"mask_{s:05d}.npy", d / f"DONE_{s:05d}.json"


def prompt_array(entry: Path, num_rows: int, shard_size: int):
    """The shard array of an encoded prompt set (rows = the prompts, then the empty caption)."""
    from graft_core.runtime.shards import ShardArray

    return ShardArray(int(num_rows), int(shard_size), lambda s: prompt_shard_files(entry, s)[2])


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def encode_prompts(prompts: Sequence[str], tokenizer, encoder, max_tokens: int, folder: str | Path, *,
                   device: torch.device | str | None = None, batch_size: int = 32, encoder_id: str | None = None,
                   shard_size: int = PROMPT_SHARD_SIZE, rank: int = 0, world_size: int = 1,
                   progress: bool = False) -> Path:
    """Encode task ``rank`` of ``world_size``'s shards of a prompt set with T5 on ``device`` into the entry
    ``folder/<prompts_key>``; returns the entry (complete once every task has run: :func:`missing_prompt_shards`).

    Rows are the prompts, then the empty caption (row ``len(prompts)``), in shards of ``shard_size`` rows
    (``graft_core.runtime.shards``: task ``rank`` does the shards ``s ≡ rank (mod world_size)``). Each shard's float16
    states and uint8 mask are written atomically, then its done marker with their sha256; a shard with its marker
    is skipped, so a killed or requeued task loses at most the shard in progress, and the rows do not depend on
    ``world_size``. ``prompts.json`` records the settings; another shard size in the same entry is refused.

    Why: the denoiser needs the same 300-token T5 states for a prompt at every step, sample and epoch, and T5-XXL
    (4.7 B parameters) costs more than a PixArt forward; at paper scale (12k prompts × 300 × 4096 fp16 ≈ 29 GB)
    the result is a GPU array job of its own, never one in-RAM tensor.

    ``encoder`` is the T5 encoder module, or a zero-argument callable that loads it (called only when this task has
    a shard to encode, so a finished set never loads T5). ``encoder_id`` names the encoder in the key (default: the
    module's ``module_fingerprint``; required when ``encoder`` is a loader).
    """
    import time

    from graft_core.runtime.paths import atomic_write_bytes
    from graft_core.runtime.shards import check_settings

    prompts = list(prompts)
    if encoder_id is None:
        if not isinstance(encoder, nn.Module):
            raise ValueError("encode_prompts: pass encoder_id when encoder is a loader, not a module")
        encoder_id = module_fingerprint(encoder)
    key = prompts_key(prompts, tokenizer, encoder_id, max_tokens)
    entry = Path(folder) / key
    texts = prompts + [""]
    array = prompt_array(entry, len(texts), shard_size)
    settings = {"key": key, "prompts": prompts, "num_prompts": len(prompts), "num_rows": len(texts),
                "max_tokens": int(max_tokens), "shard_size": int(shard_size), "encoder": encoder_id, "dtype": "float16"}
    if (entry / PROMPT_META).exists():  # refuse another layout before any work
        check_settings(entry / PROMPT_META, settings, what="T5 prompt states")
    todo, _ = array.todo(rank, world_size)
    if not todo:
        return entry
    module = encoder if isinstance(encoder, nn.Module) else encoder()
    dev = torch.device(device) if device is not None else next(module.parameters()).device
    home = next(module.parameters()).device
    was_training = module.training
    module.to(dev).eval()
    try:
        from tqdm.auto import tqdm

        for s in tqdm(todo, desc="T5 prompt shards", disable=not progress):
            start = time.time()
            lo, hi = array.bounds(s)
            states, masks = [], []
            with torch.inference_mode():
                for b in range(lo, hi, batch_size):
                    ids, mask = _tokenize_all(tokenizer, texts[b:min(hi, b + batch_size)], max_tokens)
                    out = module(ids.to(dev), attention_mask=mask.to(dev))[0].to(torch.float16)
                    bad = int((~torch.isfinite(out)).sum())
                    if bad:
                        raise ValueError(f"encode_prompts: {bad} T5 output values of rows {b}.. are not finite in "
                                         f"float16")
                    states.append(out.cpu().numpy())
                    masks.append(mask.to(torch.uint8).numpy())
            emb, msk = np.concatenate(states), np.concatenate(masks)
            check_settings(entry / PROMPT_META, {**settings, "dim": int(emb.shape[-1])}, what="T5 prompt states",
                           info={"device": str(dev), "batch_size": int(batch_size)})
            files = prompt_shard_files(entry, s)
            digests = {}
            for path, arr in ((files[0], emb), (files[1], msk)):
                data = _npy_bytes(arr)
                digests[path.name] = hashlib.sha256(data).hexdigest()
                atomic_write_bytes(path, data)
            array.mark_done(s, {"shard": s, "rows": [lo, hi], "sha256": digests, "device": str(dev),
                                "seconds": round(time.time() - start, 2)})
    finally:
        module.to(home).train(was_training)
    return entry


def missing_prompt_shards(entry: str | Path) -> list[int] | None:
    """The shards of an encoded prompt set that no task has finished yet (None: no task has written any)."""
    entry = Path(entry)
    if not (entry / PROMPT_META).exists():
        return None
    meta = json.loads((entry / PROMPT_META).read_text())
    return prompt_array(entry, meta["num_rows"], meta["shard_size"]).missing()


_VERIFIED_SHARDS: dict[str, tuple] = {}  # shard file → (size, mtime_ns) of its last sha256 check in this process


class _Rows:
    """The shard memory maps of an encoded prompt set, each opened (and checked against its done marker's sha256)
    on first use in each process. Copies share it and a pickle holds only the folder: ``finetune``/EMA deep-copy
    models and DDP pickles them, and copying a memmap reads it whole."""

    def __init__(self, folder: Path, shard_size: int, verify: bool = True):
        self.folder, self.shard_size, self.verify = Path(folder), int(shard_size), verify
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if s not in self._arrays:
            emb, mask, done = prompt_shard_files(self.folder, s)
            if self.verify:
                digests = json.loads(done.read_text())["sha256"]
                for path in (emb, mask):
                    st = path.stat()
                    if _VERIFIED_SHARDS.get(str(path)) != (st.st_size, st.st_mtime_ns):
                        from graft_core.errors import CorruptArtefactError
                        from graft_core.runtime.cache import sha256_file

                        if sha256_file(path) != digests[path.name]:
                            raise CorruptArtefactError(f"{path} does not match the sha256 its done marker {done.name} "
                                                       f"records (corrupt or replaced): delete {done} and rerun the "
                                                       f"encode step (it redoes that shard)")
                        _VERIFIED_SHARDS[str(path)] = (st.st_size, st.st_mtime_ns)
            self._arrays[s] = (np.load(emb, mmap_mode="r"), np.load(mask, mmap_mode="r"))
        return self._arrays[s]

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """States and masks of the sorted row indices ``rows``, read shard by shard."""
        shards = rows // self.shard_size
        states, masks = [], []
        for s in np.unique(shards):
            local = rows[shards == s] - int(s) * self.shard_size
            emb, mask = self.shard(int(s))
            states.append(np.ascontiguousarray(emb[local]))
            masks.append(np.ascontiguousarray(mask[local]))
        return np.concatenate(states), np.concatenate(masks)

    def __deepcopy__(self, memo):
        return self

    def __getstate__(self):
        return {**self.__dict__, "_arrays": {}}


class CachedPrompts(nn.Module):
    """A prompt set encoded by ``encode_prompts`` (every shard done), read row by row from its shards' memory maps:
    the same interface as ``PromptTable`` (``forward(ids) -> (states, mask)`` on the ids' device, ``null_id`` = the
    empty caption). An unfinished set is refused in one line naming its missing shards.

    Why: T5 is then needed neither in the module tree (``.to(cuda)`` would move 19 GB) nor at any denoising step,
    and only the rows of a batch are ever in memory. The module holds no parameters or buffers.
    """

    def __init__(self, folder: str | Path, *, verify: bool = True):
        super().__init__()
        folder = Path(folder)
        missing = missing_prompt_shards(folder)
        if missing is None or missing:
            what = "nothing is encoded" if missing is None else f"shard(s) {missing[:8]} are not encoded"
            raise MissingWeightsError(f"the T5 states of this prompt set ({folder}): {what}; run its encode steps "
                                      f"(`python -m benchmark.run` plans them before the teacher; they resume)")
        meta = json.loads((folder / PROMPT_META).read_text())
        self.prompts, self.max_tokens, self.dim = list(meta["prompts"]), int(meta["max_tokens"]), int(meta["dim"])
        self.key = meta["key"]
        self._rows = _Rows(folder, meta["shard_size"], verify)

    @property
    def folder(self) -> Path:
        return self._rows.folder

    @property
    def null_id(self) -> int:
        return len(self.prompts)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.as_tensor(ids)
        flat = ids.detach().reshape(-1).long().cpu().numpy()
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) > self.null_id):
            raise ValueError(f"prompt ids must lie in 0..{self.null_id} (the last is the empty caption)")
        # sorted unique rows: a memmap gather reads each page once; the inverse restores the batch order
        rows, inverse = np.unique(flat, return_inverse=True)
        states, mask = self._rows.rows(rows)
        s = torch.from_numpy(states)[torch.from_numpy(inverse)]
        m = torch.from_numpy(mask).long()[torch.from_numpy(inverse)]
        shape = tuple(ids.shape)
        return (s.reshape(shape + s.shape[1:]).to(ids.device, non_blocking=True),
                m.reshape(shape + m.shape[1:]).to(ids.device, non_blocking=True))


def read_prompts(path: str | Path | None = None) -> list[str]:
    """The prompts the paper teacher generates its synthetic pairs from (``$GRAFTBENCH_PIXART_PROMPTS``)."""

    path = Path(path or os.environ.get(PROMPTS_ENV, "") or "/nonexistent-prompts")
    if not path.exists():
        raise MissingWeightsError(f"no prompt file for the PixArt-Σ synthetic pairs: set {PROMPTS_ENV} to a text file "
                                  f"with one prompt per line (the paper drew them from an unnamed public 30k-prompt "
                                  f"set, docs/paper-reference.md §2)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------------------------
# Prompt following: the tiny analogue (digit classifier) and the GenEval adapter (paper)
# --------------------------------------------------------------------------------------------------------------------


def prompt_accuracy(images_uint8, prompt_ids: torch.Tensor, classifier: nn.Module, num_templates: int) -> dict:
    """Fraction of samples the digit classifier assigns to the prompted digit (our GenEval analogue), overall and per
    caption template (the analogue of GenEval's per-task scores)."""
    x = torch.as_tensor(images_uint8).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        pred = torch.cat([classifier(chunk).argmax(1) for chunk in x.split(1000)])
    hit = (pred == prompt_digit(prompt_ids)).float()
    template = prompt_ids // 10
    by_template = {str(k): hit[template == k].mean().item() for k in range(num_templates) if (template == k).any()}
    return {"prompt_acc": hit.mean().item(), "prompt_acc_by_template": by_template}


GENEVAL_ENV = "GRAFTBENCH_GENEVAL"  # a checkout of github.com/djghosh13/geneval
GENEVAL_DETECTOR_ENV = "GRAFTBENCH_GENEVAL_DETECTOR"  # folder with the Mask2Former weights of download_models.sh
GENEVAL_PYTHON_ENV = "GRAFTBENCH_GENEVAL_PYTHON"  # an interpreter with GenEval's deps (mmdet 2.27, open_clip, ...)
GENEVAL_DETECTOR_FILE = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"


def geneval_paths(root: str | Path | None = None, detector: str | Path | None = None) -> tuple[Path, Path]:
    """``(geneval checkout, detector folder)`` from the arguments or ``$GRAFTBENCH_GENEVAL`` /
    ``$GRAFTBENCH_GENEVAL_DETECTOR``; ``MissingWeightsError`` with set-up instructions when anything is absent."""

    root = Path(root or os.environ.get(GENEVAL_ENV, "") or "/nonexistent-geneval")
    detector = Path(detector or os.environ.get(GENEVAL_DETECTOR_ENV, "") or root / "models")
    needed = [root / "evaluation" / "evaluate_images.py", root / "prompts" / "evaluation_metadata.jsonl",
              detector / GENEVAL_DETECTOR_FILE]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise MissingWeightsError(
            f"GenEval is not available (missing: {', '.join(missing)}). The detector weights cannot be downloaded "
            f"here: on a machine with internet `git clone https://github.com/djghosh13/geneval`, run "
            f"`evaluation/download_models.sh <folder>` there, install its environment (mmdet 2.27, open_clip with the "
            f"ViT-L-14 'openai' weights in its cache; GenEval's evaluator needs a CUDA GPU), copy all of it here "
            f"and set {GENEVAL_ENV}=<checkout>, {GENEVAL_DETECTOR_ENV}=<folder> (and {GENEVAL_PYTHON_ENV}=<python of "
            f"that environment> if it is not this one)")
    return root, detector


def geneval_metadata(root: Path) -> list[dict]:
    """GenEval's 553 prompts with their task tags (``prompts/evaluation_metadata.jsonl``)."""
    lines = (Path(root) / "prompts" / "evaluation_metadata.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


GENEVAL_SHARD = 8  # GenEval prompts per resumable shard of the sampling array
GENEVAL_SETTINGS = "geneval.json"  # what fixes a GenEval sampling folder's images (a rerun with others is refused)


def geneval_prompts(root: str | Path | None = None) -> list[str]:
    """GenEval's distinct prompts, sorted: the prompt set whose T5 states the evaluation reads."""
    return sorted({m["prompt"] for m in geneval_metadata(geneval_paths(root)[0])})


def _geneval_done(folder: Path, s: int) -> Path:
    return Path(folder) / "shards" / f"DONE_{s:05d}.json"


def geneval_array(folders: Path | list[Path], num_prompts: int, shard_size: int):
    """The sampling array over GenEval's prompts: a shard is done when its marker is in (one of) ``folders``."""
    from graft_core.runtime.shards import ShardArray

    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]

    def marker(s: int) -> Path:
        return next((_geneval_done(f, s) for f in folders if _geneval_done(f, s).exists()),
                    _geneval_done(folders[0], s))

    return ShardArray(int(num_prompts), int(shard_size), marker)


def geneval_sample_shards(generate: Callable[[list[str], int], "np.ndarray"], *, out_dir: Path, rank: int = 0,
                          world_size: int = 1, shard_size: int = GENEVAL_SHARD, images_per_prompt: int = 4,
                          root: str | Path | None = None, detector: str | Path | None = None, seed: int = 0,
                          settings: dict | None = None) -> dict:
    """Task ``rank`` of ``world_size`` of GenEval's sampling array: the prompts of the shards ``s ≡ rank (mod
    world_size)`` (``graft_core.runtime.shards``), ``images_per_prompt`` images each by ``generate(prompts, seed)``
    (uint8 ``[n, H, W, 3]``), in GenEval's layout ``out_dir/images/<index:05d>/{metadata.jsonl,
    samples/<k:04d>.png}``, then the shard's done marker. Prompt ``index`` draws with ``seed + index``, so the
    images do not depend on ``world_size``; a requeued task skips its finished shards and redoes at most one.
    ``settings`` (the model, the sampler) join ``geneval.json``: a folder holding other images is refused."""
    from PIL import Image

    from graft_core.runtime.shards import check_settings

    root, _ = geneval_paths(root, detector)  # fail before generating anything
    out_dir = Path(out_dir)
    metadata = geneval_metadata(root)
    array = geneval_array(out_dir, len(metadata), shard_size)
    check_settings(out_dir / GENEVAL_SETTINGS,
                   {"num_prompts": len(metadata), "shard_size": int(shard_size), "seed": int(seed),
                    "images_per_prompt": int(images_per_prompt), "seeding": "prompt index i: seed + i",
                    "metadata": hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:16],
                    **(settings or {})}, what="GenEval images")
    todo, skipped = array.todo(rank, world_size)
    for s in todo:
        lo, hi = array.bounds(s)
        for index in range(lo, hi):
            meta = metadata[index]
            folder = out_dir / "images" / f"{index:05d}"
            images = generate([meta["prompt"]] * images_per_prompt, seed + index)
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            for k, image in enumerate(images):
                Image.fromarray(image).save(folder / "samples" / f"{k:04d}.png")
            (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        array.mark_done(s, {"shard": s, "prompts": [lo, hi], "images": (hi - lo) * images_per_prompt})
    return {"num_shards": array.num_shards, "sampled": todo, "skipped": skipped}


def geneval_evaluate(image_folders: Path | list[Path], *, out_dir: Path, shard_size: int = GENEVAL_SHARD,
                     root: str | Path | None = None, detector: str | Path | None = None) -> dict:
    """GenEval's evaluator on the images of every shard of the sampling array, gathered from the tasks' folders
    ``image_folders`` (hard links) into ``out_dir/images``; one error naming the first missing shard otherwise.
    Runs GenEval's ``evaluation/evaluate_images.py`` with the user's detector in a subprocess (once: its
    ``results.jsonl`` is kept) and averages, as its ``summary_scores.py`` does, the per-image correctness per task
    tag, then over tasks."""
    import os
    import shutil
    import subprocess
    import sys

    root, detector = geneval_paths(root, detector)
    out_dir = Path(out_dir)
    folders = [Path(image_folders)] if isinstance(image_folders, (str, Path)) else [Path(f) for f in image_folders]
    metadata = geneval_metadata(root)
    array = geneval_array(folders, len(metadata), shard_size)
    missing = array.missing()
    if missing:
        lo, hi = array.bounds(missing[0])
        raise FileNotFoundError(f"GenEval shard {missing[0]} (prompts {lo}..{hi - 1}) is not done in "
                                f"{', '.join(str(f) for f in folders)}: rerun its sampling task (it resumes)")
    images_dir = out_dir / "images"
    for s in range(array.num_shards):
        src = array.marker(s).parent.parent / "images"
        if src.resolve() == images_dir.resolve():
            continue
        for index in range(*array.bounds(s)):  # files already linked by a killed earlier try are kept
            shutil.copytree(src / f"{index:05d}", images_dir / f"{index:05d}", copy_function=_link_or_copy,
                            dirs_exist_ok=True)
    results = out_dir / "results.jsonl"
    if not results.exists():
        python = os.environ.get(GENEVAL_PYTHON_ENV, sys.executable)
        tmp = results.with_name(f".{results.name}.{os.getpid()}.tmp")
        subprocess.run([python, str(root / "evaluation" / "evaluate_images.py"), str(images_dir), "--outfile",
                        str(tmp), "--model-path", str(detector)], check=True, cwd=root)
        os.replace(tmp, results)  # a killed evaluator leaves no partial results behind
    return summarize_geneval(results)


def _link_or_copy(src: str, dest: str) -> None:
    import os
    import shutil

    if os.path.exists(dest):
        return
    try:
        os.link(src, dest)
    except OSError:  # another filesystem
        shutil.copy2(src, dest)


def geneval_score(generate: Callable[[list[str], int], "np.ndarray"], *, out_dir: Path, images_per_prompt: int = 4,
                  root: str | Path | None = None, detector: str | Path | None = None, seed: int = 0) -> dict:
    """GenEval overall score (percent, the paper's Table-5 number) and per-task scores of a text-to-image model, in
    one process: every shard of :func:`geneval_sample_shards` (resumable) into ``out_dir``, then
    :func:`geneval_evaluate` there. The benchmark runs the same two halves as a sampling array and its eval step."""
    geneval_paths(root, detector)  # fail before generating anything
    geneval_sample_shards(generate, out_dir=out_dir, images_per_prompt=images_per_prompt, root=root, detector=detector,
                          seed=seed)
    return geneval_evaluate(out_dir, out_dir=out_dir, root=root, detector=detector)


def summarize_geneval(results: Path) -> dict:
    """Per-task accuracy and their mean (GenEval's "overall score"), in percent."""
    rows = [json.loads(line) for line in Path(results).read_text().splitlines() if line.strip()]
    tasks: dict[str, list[bool]] = {}
    for row in rows:
        tasks.setdefault(row["tag"], []).append(bool(row["correct"]))
    scores = {tag: 100.0 * sum(v) / len(v) for tag, v in tasks.items()}
    return {"geneval_overall": sum(scores.values()) / len(scores) if scores else None, "geneval_tasks": scores,
            "geneval_images": len(rows)}
