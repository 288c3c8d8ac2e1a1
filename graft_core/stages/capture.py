"""Activation capture for stage 1: one pass of the frozen teacher, the operator inputs and targets of the requested
(layer, site) pairs on disk.

For each sample of the subset the teacher sees, with one timestep ``t ~ U{0..999}`` and the true label (eval mode:
no label dropout), ``ε`` and ``t`` drawn from a generator seeded with ``seed`` (paper §3.1):

* ``capture_input="noised"`` (default, ours): ``x_t = add_noise(x0, ε, t)`` — the input the teacher sees in training
  and sampling, the natural reading of the paper;
* ``capture_input="clean"`` (the official ``src/datasets/extract_scion_fts_mha.py``): the clean latent ``x0`` with
  the same random ``t`` (the code never noises it; docs/paper-reference.md §6 item 8). ``ε`` is still drawn, so both
  options see the same ``t``.

Forward hooks on the blocks' ``attn1`` / ``ff`` (the same names in diffusers' DiT and PixArt blocks) record

* ``inputs``  — the tensor entering the operator: the normalised, adaLN-modulated hidden state ``[N, D]``;
* ``targets`` — the operator's output *before* the block multiplies it by its gate (``gate_msa`` / ``gate_mlp``).

Layout of ``root/captures/<key>/`` (key = hash of teacher key, split, subset identity, seed, dtype, plus the capture
input and the forward precision when they are not the defaults; the set of pairs is **not** in the key):

* ``layer003.attn/`` … — one artefact-cache entry (``graft_core.runtime.cache``) per (layer, site): ``inputs.npy`` and
  ``targets.npy`` (``[S, N, D]``; **float16** by default as the official fp16 shards, ``bfloat16`` stored as its
  16-bit pattern in an int16 ``.npy`` — fp16's range ends at 65504 — or ``float32`` for exact copies),
  ``conditioning.pt`` (subset indices, labels, timesteps), ``meta.json``, ``DONE`` and ``MANIFEST.json``. Each entry
  is complete on its own, so two plans needing layers {1, 3} and {3, 5} share layer 3: whichever asks first builds
  it, the other finds it (or waits on its lock). One call builds all its missing pairs in **one** teacher pass.
* while a pair is being built, ``layer003.attn.resume/`` holds its preallocated memory maps and ``progress.json``
  (samples written, after each batch's flush): a killed capture continues from there.
* captures written before this layout (flat ``layer003.attn.inputs.npy`` files with a top-level ``DONE``, every
  pair) are still read, and a capture call with their key returns them.

The teacher runs on ``device`` (default CUDA when available) with bf16 autocast there (``autocast=False``: fp32 with
TF32 matmuls, as the official extraction), in batches; each batch's tensors go to CPU and into the memory maps, so RAM
stays bounded at paper scale (8k × 256 × 1152 per array).
``graft_core.stages.capture_size.capture_bytes`` gives the disk a set of pairs needs without torch.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graft_core.runtime import cache
from graft_core.config import stable_hash
from graft_core.models.diffusion import make_train_scheduler
from graft_core.runtime.paths import atomic_torch_save, atomic_write_bytes, atomic_write_json, cache_root
from graft_core.presets import Preset

SITES = ("attn", "mlp")  # operator sites: what stage 1 of a graft distils (and what ``pairs=None`` captures)
SITE_MODULES = {"attn": "attn1", "mlp": "ff"}  # our site name → attribute of a diffusers BasicTransformerBlock
# "block": the whole block's input hidden state → its output (depth→width distils block pairs from it, Table 6)
BLOCK_SITE = "block"
CAPTURE_SITES = SITES + (BLOCK_SITE,)
SPLITS = ("stage1", "heldout")
KINDS = ("inputs", "targets")
# numpy storage dtype per capture dtype; bfloat16 has none in numpy, so its bit pattern is stored as int16
DTYPES = {"float16": np.float16, "bfloat16": np.int16, "float32": np.float32}
CAPTURE_INPUTS = ("noised", "clean")  # ours (x_t) | the official extraction (clean x0, random t)
CAPTURE_VERSION = 1  # bump when the stored content changes meaning
MARKER = "DONE"
PROGRESS = "progress.json"
_PAIR_DIR = re.compile(r"^layer(\d{3})\.(attn|mlp|block)$")

Pair = tuple[int, str]


# --------------------------------------------------------------------------------------------------------------------
# Recording the operator inputs and outputs of a diffusers transformer
# --------------------------------------------------------------------------------------------------------------------


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a diffusers DiT / PixArt model (``model.transformer_blocks``)."""
    blocks = getattr(model, "transformer_blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no `transformer_blocks`; expected a diffusers DiT or PixArt "
                         f"model")
    return blocks


@contextlib.contextmanager
def record_sites(model: nn.Module, sites: tuple[str, ...] = SITES, layers: tuple[int, ...] | None = None, *,
                 pairs: Iterable[Pair] | None = None,
                 sink: Callable[[Pair, torch.Tensor, torch.Tensor], None] | None = None):
    """Hook ``attn1`` / ``ff`` of the chosen blocks (``pairs``, or every layer of ``layers`` × ``sites``), or the
    block itself for site ``block`` (its input hidden state and its output).

    Yields a dict ``{(layer, site): (input, output)}`` that every forward overwrites with detached tensors — or, with
    ``sink``, calls ``sink((layer, site), input, output)`` instead and keeps nothing (so a capture holds one pair's
    tensors at a time). The hooks return ``None``, so the model's outputs are unchanged."""
    blocks = blocks_of(model)
    if pairs is None:
        layers = tuple(range(len(blocks))) if layers is None else tuple(layers)
        pairs = [(layer, site) for layer in layers for site in sites]
    pairs = [(int(layer), str(site)) for layer, site in pairs]
    unknown = {site for _, site in pairs} - set(CAPTURE_SITES)
    if unknown:
        raise ValueError(f"unknown sites {sorted(unknown)}; choose from {CAPTURE_SITES}")
    record: dict[Pair, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for layer, site in pairs:
        if getattr(blocks[layer], "_chunk_size", None) is not None:  # ff would run per chunk: one hook call each
            raise ValueError(f"block {layer} uses feed-forward chunking; call model.disable_forward_chunking() first")
        module = blocks[layer] if site == BLOCK_SITE else getattr(blocks[layer], SITE_MODULES[site])

        def hook(mod, args, kwargs, output, _key=(layer, site)):
            inp = (args[0] if args else kwargs["hidden_states"]).detach()
            if sink is not None:
                sink(_key, inp, output.detach())
            else:
                record[_key] = (inp, output.detach())

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------------------------------------------------
# Subsets, pairs and keys
# --------------------------------------------------------------------------------------------------------------------


def _subset(preset: Preset, split: str):
    from graft_core.data.sources import source_of

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    return source_of(preset).subset(preset, split)


def capture_subset(preset: Preset, split: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Model-space images (digit pixels or ImageNet latents), labels and indices of the stage-1 subset (8 per class
    of train) or its held-out twin (contracts.md), from the preset's data source."""
    sub = _subset(preset, split)
    return sub.x0, sub.labels, sub.indices


def normalize_pairs(pairs: Iterable[Sequence] | None, num_layers: int) -> list[Pair]:
    """Sorted unique ``(layer, site)`` pairs; ``None`` = every layer × both sites. Accepts JSON lists
    (``[[3, "attn"]]``, as a run config stores them)."""
    if pairs is None:
        return [(layer, site) for layer in range(num_layers) for site in SITES]
    out = sorted({(int(layer), str(site)) for layer, site in pairs})
    for layer, site in out:
        if site not in CAPTURE_SITES:
            raise ValueError(f"unknown site {site!r}; choose one of {CAPTURE_SITES}")
        if not 0 <= layer < num_layers:
            raise ValueError(f"layer {layer} is out of range for a teacher of {num_layers} blocks")
    return out


def capture_key(preset: Preset, split: str, subset: np.ndarray | str, seed: int, dtype: str, *,
                capture_input: str = "noised", forward_dtype: str = "float32") -> str:
    """The capture folder's name. ``subset``: the subset's indices (digits, hashed as before) or its identity string
    (``Subset.identity``). Options at their default are left out, so keys of earlier captures are unchanged."""
    from graft_core.data.digits import subset_hash
    from graft_core.models.teacher import teacher_key

    body = {"teacher": teacher_key(preset.teacher, preset.data), "split": split,
            "subset": subset if isinstance(subset, str) else subset_hash(subset), "seed": seed, "dtype": dtype,
            "version": CAPTURE_VERSION}
    if capture_input != "noised":
        body["capture_input"] = capture_input
    if forward_dtype != "float32":
        body["forward_dtype"] = forward_dtype
    return stable_hash(body)


def pair_folder(folder: Path, layer: int, site: str) -> Path:
    """The cache entry of one (layer, site) inside a capture folder."""
    return Path(folder) / f"layer{int(layer):03d}.{site}"


def is_legacy(folder: Path) -> bool:
    """A capture written before per-pair entries: flat files, every pair, one ``DONE`` at the top."""
    return (Path(folder) / MARKER).exists()


def _entry_and_files(folder: Path, layer: int, site: str) -> tuple[Path, dict[str, Path]]:
    folder = Path(folder)
    if is_legacy(folder):
        return folder, {kind: folder / f"layer{int(layer):03d}.{site}.{kind}.npy" for kind in KINDS}
    entry = pair_folder(folder, layer, site)
    return entry, {kind: entry / f"{kind}.npy" for kind in KINDS}


def array_path(folder: Path, layer: int, site: str, kind: str) -> Path:
    """Where the ``inputs`` / ``targets`` array of a pair lives (either layout)."""
    return _entry_and_files(folder, layer, site)[1][kind]


def has_pair(folder: Path, layer: int, site: str) -> bool:
    folder = Path(folder)
    if is_legacy(folder):
        return array_path(folder, layer, site, "inputs").exists()
    return cache.is_entry(pair_folder(folder, layer, site), marker=MARKER)


def captured_pairs(folder: Path) -> list[Pair]:
    """The complete (layer, site) pairs of a capture folder, sorted."""
    folder = Path(folder)
    if is_legacy(folder):
        meta = json.loads((folder / "meta.json").read_text())
        return [(layer, site) for layer in range(meta["num_layers"]) for site in meta["sites"]]
    if not folder.is_dir():
        return []
    out = []
    for child in folder.iterdir():
        m = _PAIR_DIR.match(child.name)
        if m and child.is_dir() and cache.is_entry(child, marker=MARKER):
            out.append((int(m.group(1)), m.group(2)))
    return sorted(out)


def is_complete(folder: Path, pairs: Iterable[Pair] | None = None) -> bool:
    """Every pair of ``pairs`` is captured (``None``: at least one pair is)."""
    if pairs is None:
        return bool(captured_pairs(folder))
    return all(has_pair(folder, layer, site) for layer, site in pairs)


def _subset_hash(indices: np.ndarray) -> str:
    from graft_core.data.digits import subset_hash

    return subset_hash(indices)


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# --------------------------------------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------------------------------------


def capture_activations(teacher: nn.Module, preset: Preset, *, split: str = "stage1", root: Path | None = None,
                        seed: int | None = None, dtype: str = "float16", batch_size: int = 256,
                        data=None, pairs: Sequence[Pair] | None = None, capture_input: str = "noised",
                        device: torch.device | str | None = None, autocast: bool | None = None,
                        progress: bool = False) -> Path:
    """Run the frozen teacher over the split's subset and store the inputs and targets of ``pairs``.

    ``pairs`` = ``None`` captures every layer × both sites (as before this option existed). Pairs already in the
    capture folder are not recomputed; the missing ones are built in one teacher pass, each published as its own
    cache entry, resumable after a kill. ``seed`` defaults to ``preset.stage1.seed``; ``root`` to the cache root.
    ``data`` = a ``graft_core.data.sources.Subset`` or ``(x0, labels, indices)`` replaces the preset's subset.
    ``device`` defaults to CUDA when available (the teacher is moved there and back); ``autocast`` (default: on CUDA)
    runs the teacher's forward in bf16 autocast and enters the key. Returns the capture folder
    (``root/captures/<key>``).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown capture dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if capture_input not in CAPTURE_INPUTS:
        raise ValueError(f"unknown capture_input {capture_input!r}; choose one of {CAPTURE_INPUTS}")
    seed = preset.stage1.seed if seed is None else seed
    device = _default_device() if device is None else torch.device(device)
    bf16 = device.type == "cuda" if autocast is None else bool(autocast)
    forward_dtype = "bfloat16" if bf16 else "float32"
    if data is None:
        data = _subset(preset, split)
    if hasattr(data, "identity"):
        images, labels, idx, subset_id = data.x0, data.labels, data.indices, data.identity
    else:
        images, labels, idx = data
        subset_id = idx
    key = capture_key(preset, split, subset_id, seed, dtype, capture_input=capture_input, forward_dtype=forward_dtype)
    folder = Path(root if root is not None else cache_root()) / "captures" / key
    if is_legacy(folder):
        return folder
    wanted = normalize_pairs(pairs, len(blocks_of(teacher)))
    missing = [p for p in wanted if not has_pair(folder, *p)]
    if missing:
        job = _CaptureJob(teacher, preset, images, labels, idx, key=key, split=split, seed=seed, dtype=dtype,
                          capture_input=capture_input, device=device, bf16=bf16, batch_size=batch_size,
                          subset=subset_id if isinstance(subset_id, str) else _subset_hash(idx), progress=progress)
        _build_chain(folder, missing, job, {})
    return folder


def _build_chain(folder: Path, pairs: list[Pair], job: "_CaptureJob", acquired: dict) -> None:
    """Take the lock of each missing pair in sorted order (``cache.get_or_build`` nested, so two captures with
    overlapping pairs cannot deadlock), skip pairs another process finished meanwhile, then run one teacher pass
    into every acquired pair's temp and resume folders. Each pair is published by its own ``get_or_build``."""
    if not pairs:
        if acquired:
            job.run(acquired)
        return
    pair, rest = pairs[0], pairs[1:]
    built = []

    def build(tmp, res):
        built.append(pair)
        _build_chain(folder, rest, job, {**acquired, pair: (Path(tmp), Path(res))})

    cache.get_or_build(pair_folder(folder, *pair), build, marker=MARKER, resume=True)
    if not built:  # finished by another process while we waited for its lock
        _build_chain(folder, rest, job, acquired)


@contextlib.contextmanager
def _tf32(enabled: bool):
    """TF32 matmuls for the pass on CUDA, as the official extraction (``allow_tf32 = True``) and DiT's sampling set
    them; the global flags are restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _to_numpy(t: torch.Tensor, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return t.to(torch.bfloat16).cpu().view(torch.int16).numpy()
    if t.device.type != "cpu":  # cast on the device: half the transfer
        return t.to(torch.float16 if dtype == "float16" else torch.float32).cpu().numpy()
    with np.errstate(over="ignore"):  # fp16 overflow is counted once per pair at the end (meta "nonfinite")
        return t.float().numpy().astype(DTYPES[dtype], copy=False)


def _from_numpy(arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(arr)
    return t.view(torch.bfloat16) if arr.dtype == np.int16 else t  # int16 files hold bfloat16 bit patterns


def teacher_inputs(preset: Preset, images: torch.Tensor, seed: int, capture_input: str = "noised"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_in, timesteps)`` the teacher sees for ``images`` (one sample each, in order): ``t ~ U{0..T-1}`` and
    ``ε`` drawn from a generator seeded with ``seed``, ``x_in = add_noise(x0, ε, t)`` (``"noised"``) or ``x0``
    (``"clean"``). Shared by the capture and the online stage 1 (``graft_core.stages.online``): both see the same
    draws for the same pairs and seed."""
    if capture_input not in CAPTURE_INPUTS:
        raise ValueError(f"unknown capture_input {capture_input!r}; choose one of {CAPTURE_INPUTS}")
    cfg = preset.teacher
    gen = torch.Generator().manual_seed(seed)
    timesteps = torch.randint(0, cfg.num_train_timesteps, (len(images),), generator=gen)
    noise = torch.randn(images.shape, generator=gen)  # drawn for "clean" too: the same t either way
    x_in = make_train_scheduler(cfg).add_noise(images, noise, timesteps) if capture_input == "noised" else images
    return x_in, timesteps


class _PairWriter:
    """One pair's preallocated memory maps in its resume folder, and its progress marker."""

    def __init__(self, tmp: Path, res: Path, num: int, dtype: str):
        self.tmp, self.res, self.num, self.dtype = tmp, res, num, dtype
        self.arrays: dict[str, np.memmap] = {}
        self.done = self.resumed_from = self._resume()

    def _resume(self) -> int:
        try:
            prog = json.loads((self.res / PROGRESS).read_text())
        except (FileNotFoundError, ValueError):
            return 0
        if prog.get("num_samples") != self.num or prog.get("dtype") != self.dtype:
            return 0
        for kind in KINDS:
            try:
                arr = np.load(self.res / f"{kind}.npy", mmap_mode="r+")
            except (FileNotFoundError, ValueError, OSError):
                arr = None
            if arr is None or arr.shape[0] != self.num or arr.dtype != DTYPES[self.dtype]:
                self.arrays.clear()
                return 0
            self.arrays[kind] = arr
        return int(prog["done"])

    def write(self, kind: str, lo: int, hi: int, tensor: torch.Tensor) -> None:
        arr = self.arrays.get(kind)
        if arr is None:
            arr = np.lib.format.open_memmap(self.res / f"{kind}.npy", mode="w+", dtype=DTYPES[self.dtype],
                                            shape=(self.num,) + tuple(tensor.shape[1:]))
            self.arrays[kind] = arr
        elif tuple(arr.shape[1:]) != tuple(tensor.shape[1:]):
            raise ValueError(f"{self.res}: stored shape {arr.shape[1:]} != captured {tuple(tensor.shape[1:])}")
        arr[lo:hi] = _to_numpy(tensor, self.dtype)

    def commit(self, hi: int, batches: int) -> None:
        """Flush the maps, then record the progress: a kill between the two only repeats this batch."""
        for arr in self.arrays.values():
            arr.flush()
        self.done = hi
        atomic_write_json(self.res / PROGRESS, {"done": hi, "batches": batches, "num_samples": self.num,
                                                "dtype": self.dtype})

    def finish(self) -> tuple[tuple[int, ...], dict[str, int]]:
        """Close the maps and move the arrays into the entry; returns the shape and the count of non-finite values
        per kind (fp16 overflows past 65504: stage 1 would diverge at its first batch, so the meta says so)."""
        shape = tuple(self.arrays["inputs"].shape)
        nonfinite = {}
        for kind, arr in self.arrays.items():
            arr.flush()
            nonfinite[kind] = sum(int((~torch.isfinite(_from_numpy(arr[lo:lo + 256]))).sum())
                                  for lo in range(0, len(arr), 256))
        self.arrays.clear()  # close the maps before the files move
        if any(nonfinite.values()):
            warnings.warn(f"{self.res.name}: {nonfinite} non-finite values in the {self.dtype} capture "
                          f"(dtype='bfloat16' keeps fp32's range)", RuntimeWarning, stacklevel=2)
        for kind in KINDS:
            os.replace(self.res / f"{kind}.npy", self.tmp / f"{kind}.npy")  # same folder tree: a rename, no copy
        return shape, nonfinite


class _CaptureJob:
    """One teacher pass writing every acquired pair."""

    def __init__(self, teacher, preset, images, labels, idx, *, key, split, seed, dtype, capture_input, device, bf16,
                 batch_size, subset, progress):
        self.__dict__.update(teacher=teacher, preset=preset, images=images, labels=labels, idx=idx, key=key,
                             split=split, seed=seed, dtype=dtype, capture_input=capture_input, device=device,
                             bf16=bf16, batch_size=int(batch_size), subset=subset, progress=progress)

    def run(self, acquired: dict[Pair, tuple[Path, Path]]) -> None:
        from tqdm.auto import tqdm

        num = len(self.labels)
        x_in, timesteps = teacher_inputs(self.preset, self.images, self.seed, self.capture_input)
        writers = {pair: _PairWriter(tmp, res, num, self.dtype) for pair, (tmp, res) in acquired.items()}
        start = min(w.done for w in writers.values())
        span = {"lo": 0, "hi": 0}

        def sink(pair, inp, out):
            w = writers[pair]
            if span["hi"] > w.done:  # a pair already past this batch (resumed further) keeps its rows
                w.write("inputs", span["lo"], span["hi"], inp)
                w.write("targets", span["lo"], span["hi"], out)

        teacher = self.teacher
        home = next(teacher.parameters()).device
        was_training = teacher.training
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16
                    else contextlib.nullcontext())
        begin = time.time()
        teacher.to(self.device).eval()
        try:
            with torch.inference_mode(), _tf32(self.device.type == "cuda"), \
                    record_sites(teacher, pairs=list(writers), sink=sink):
                starts = range(start, num, self.batch_size)
                for batch, lo in enumerate(tqdm(starts, desc="capture", disable=not self.progress)):
                    hi = min(num, lo + self.batch_size)
                    span.update(lo=lo, hi=hi)
                    with autocast:
                        teacher(x_in[lo:hi].to(self.device), timestep=timesteps[lo:hi].to(self.device),
                                class_labels=self.labels[lo:hi].to(self.device), return_dict=False)
                    for w in writers.values():
                        if hi > w.done:
                            w.commit(hi, batches=-(-hi // self.batch_size))
        finally:
            teacher.to(home).train(was_training)
        seconds = time.time() - begin
        conditioning = {"indices": torch.as_tensor(self.idx), "labels": self.labels.clone(), "timesteps": timesteps}
        from graft_core.models.teacher import teacher_key

        for (layer, site), w in writers.items():
            shape, nonfinite = w.finish()
            atomic_torch_save(conditioning, w.tmp / "conditioning.pt")
            atomic_write_json(w.tmp / "meta.json", {
                "key": self.key, "layer": layer, "site": site, "split": self.split, "seed": self.seed,
                "dtype": self.dtype, "capture_input": self.capture_input,
                "forward_dtype": "bfloat16" if self.bf16 else "float32", "device": str(self.device),
                "tf32": self.device.type == "cuda",
                "batch_size": self.batch_size, "num_samples": num, "num_layers": len(blocks_of(teacher)),
                "sites": list(SITES), "seq_len": shape[1], "dim": shape[2], "subset": self.subset,
                "teacher": teacher_key(self.preset.teacher, self.preset.data), "resumed_from": w.resumed_from,
                "pass_pairs": len(writers), "nonfinite": nonfinite, "seconds": round(seconds, 3),
                "torch": torch.__version__, "threads": torch.get_num_threads(), "version": CAPTURE_VERSION})
            atomic_write_bytes(w.tmp / MARKER, b"ok\n")


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


def _missing(folder: Path, layer: int, site: str) -> FileNotFoundError:
    return FileNotFoundError(f"{folder} holds no complete capture of layer {layer} / {site} (no {MARKER} marker); "
                             f"run capture_activations with pairs that include it")


def capture_meta(folder: Path, layer: int | None = None, site: str | None = None) -> dict:
    """The meta of one pair (default: the first captured), with ``pairs`` = every pair the folder holds."""
    folder = Path(folder)
    if is_legacy(folder):
        cache.verify(folder, ["meta.json"])
        meta = json.loads((folder / "meta.json").read_text())
    else:
        pairs = captured_pairs(folder)
        if layer is None:
            if not pairs:
                raise FileNotFoundError(f"{folder} is not a complete capture (no pair with a {MARKER} marker)")
            layer, site = pairs[0]
        if not has_pair(folder, layer, site):
            raise _missing(folder, layer, site)
        entry = pair_folder(folder, layer, site)
        cache.verify(entry, ["meta.json"])
        meta = json.loads((entry / "meta.json").read_text())
    meta["pairs"] = [list(p) for p in captured_pairs(folder)]
    return meta


def pair_nbytes(folder: Path, layer: int, site: str) -> int:
    """Bytes of one pair's two arrays on disk (whether stage 1 may load them into memory)."""
    return sum(p.stat().st_size for p in _entry_and_files(folder, layer, site)[1].values())


def load_capture(folder: Path, layer: int, site: str, *, dtype: torch.dtype = torch.float32,
                 mmap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs [S, N, D], targets [S, N, D])`` of one layer and site; no other pair is opened.

    Default: loaded into memory and converted to ``dtype`` (float32). ``mmap=True`` returns copy-on-write tensors
    backed by the files, in the stored dtype (for captures larger than RAM: pages are read as rows are indexed).
    Both files are checked against the pair's manifest first (streamed, once per process).
    """
    if site not in CAPTURE_SITES:
        raise ValueError(f"unknown site {site!r}; choose one of {CAPTURE_SITES}")
    folder = Path(folder)
    if not has_pair(folder, layer, site):
        raise _missing(folder, layer, site)
    entry, files = _entry_and_files(folder, layer, site)
    cache.verify(entry, [files[kind].name for kind in KINDS])
    out = []
    for kind in KINDS:
        if mmap:
            out.append(_from_numpy(np.load(files[kind], mmap_mode="c")))  # copy-on-write: writable, file untouched
        else:
            out.append(_from_numpy(np.load(files[kind])).to(dtype))
    return out[0], out[1]


def load_conditioning(folder: Path, layer: int | None = None, site: str | None = None) -> dict:
    """Subset indices, labels and timesteps of a capture (every pair holds the same copy)."""
    folder = Path(folder)
    if is_legacy(folder):
        entry = folder
    else:
        if layer is None:
            pairs = captured_pairs(folder)
            if not pairs:
                raise FileNotFoundError(f"{folder} is not a complete capture (no pair with a {MARKER} marker)")
            layer, site = pairs[0]
        entry = pair_folder(folder, layer, site)
    cache.verify(entry, ["conditioning.pt"])
    return torch.load(entry / "conditioning.pt", weights_only=True)
