"""Activation capture for stage 1: one pass of the frozen teacher, every layer's operator input and target on disk.

For each sample of the subset the teacher sees ``x_t = add_noise(x0, ε, t)`` with one timestep ``t ~ U{0..999}`` and
the true label (eval mode: no label dropout), ``ε`` and ``t`` drawn from a generator seeded with ``seed`` (paper §3.1).
Forward hooks on every block's ``attn1`` and ``ff`` (the same names in diffusers' DiT and PixArt blocks) record

* ``inputs``  — the tensor entering the operator: the normalised, adaLN-modulated hidden state ``[N, D]``;
* ``targets`` — the operator's output *before* the block multiplies it by its gate (``gate_msa`` / ``gate_mlp``).

Layout of ``root/captures/<key>/`` (key = hash of teacher key, split, subset hash, seed, dtype):

* ``layer003.attn.inputs.npy`` / ``layer003.attn.targets.npy`` … — one ``[S, N, D]`` array per (layer, site, kind),
  **float16** by default (as the official release's fp16 shards; ``dtype="float32"`` for exact copies). Written
  through ``numpy`` memory maps batch by batch, so the paper scale (8k × 256 × 1152 per array) never needs to fit in
  RAM, and read back with ``load_capture`` (optionally memory-mapped).
* ``conditioning.pt`` — subset indices, labels and timesteps; ``meta.json`` — key, shapes, seconds, versions.
* ``DONE`` — written before the manifest. The folder is an artefact-cache entry (``graft_core.cache``): built in a
  private temporary folder under the key's lock, sha256 of every file in ``MANIFEST.json``, renamed into place, so a
  reader either sees a complete capture or none; a second call with the same key only checks ``DONE`` (no teacher
  forward), a concurrent one waits for the first. Readers check the sha256 of the files they load.
"""
from __future__ import annotations

import contextlib
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graft_core import cache
from graft_core.config import stable_hash
from graft_core.diffusion import make_train_scheduler
from graft_core.paths import atomic_torch_save, atomic_write_bytes, atomic_write_json, cache_root
from graft_core.presets import Preset

SITES = ("attn", "mlp")
SITE_MODULES = {"attn": "attn1", "mlp": "ff"}  # our site name → attribute of a diffusers BasicTransformerBlock
SPLITS = ("stage1", "heldout")
DTYPES = {"float16": np.float16, "float32": np.float32}
CAPTURE_VERSION = 1  # bump when the stored content changes meaning


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
def record_sites(model: nn.Module, sites: tuple[str, ...] = SITES, layers: tuple[int, ...] | None = None):
    """Hook ``attn1`` / ``ff`` of the chosen blocks; yields a dict ``{(layer, site): (input, output)}`` that every
    forward overwrites with detached tensors. The hooks return ``None``, so the model's outputs are unchanged."""
    blocks = blocks_of(model)
    layers = tuple(range(len(blocks))) if layers is None else tuple(layers)
    unknown = set(sites) - set(SITES)
    if unknown:
        raise ValueError(f"unknown sites {sorted(unknown)}; choose from {SITES}")
    record: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for layer in layers:
        if getattr(blocks[layer], "_chunk_size", None) is not None:  # ff would run per chunk: one hook call each
            raise ValueError(f"block {layer} uses feed-forward chunking; call model.disable_forward_chunking() first")
        for site in sites:
            module = getattr(blocks[layer], SITE_MODULES[site])

            def hook(mod, args, output, _key=(layer, site)):
                record[_key] = (args[0].detach(), output.detach())

            handles.append(module.register_forward_hook(hook))
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------------------------------------------------
# Subsets and keys
# --------------------------------------------------------------------------------------------------------------------


def capture_subset(preset: Preset, split: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images, labels and indices of the stage-1 subset (8 per class of train) or its held-out twin (contracts.md)."""
    from graft_core.data import load_digits, stratified_subset

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if preset.data.name != "digits":
        raise NotImplementedError(
            f"capture of data {preset.data.name!r} needs its latent loader (ImageNet SD-VAE latents), which graft_core "
            f"does not provide yet; the digits data is the only one wired in")
    data = load_digits(preset.data)
    images, labels = ((data.train_images, data.train_labels) if split == "stage1"
                      else (data.heldout_images, data.heldout_labels))
    idx = stratified_subset(labels, per_class=preset.data.stage1_per_class, seed=preset.data.split_seed)
    t_idx = torch.as_tensor(idx, dtype=torch.long)
    return images[t_idx], labels[t_idx], idx


def capture_key(preset: Preset, split: str, subset_indices: np.ndarray, seed: int, dtype: str) -> str:
    from graft_core.data.digits import subset_hash
    from graft_core.teacher import teacher_key

    return stable_hash({"teacher": teacher_key(preset.teacher, preset.data), "split": split,
                        "subset": subset_hash(subset_indices), "seed": seed, "dtype": dtype,
                        "version": CAPTURE_VERSION})


def array_path(folder: Path, layer: int, site: str, kind: str) -> Path:
    return Path(folder) / f"layer{layer:03d}.{site}.{kind}.npy"


def is_complete(folder: Path) -> bool:
    return (Path(folder) / "DONE").exists()


# --------------------------------------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------------------------------------


def capture_activations(teacher: nn.Module, preset: Preset, *, split: str = "stage1", root: Path | None = None,
                        seed: int | None = None, dtype: str = "float16", batch_size: int = 256,
                        data: tuple[torch.Tensor, torch.Tensor, np.ndarray] | None = None,
                        progress: bool = False) -> Path:
    """Run the frozen teacher once over the split's subset and store every layer's operator inputs and targets.

    ``seed`` defaults to ``preset.stage1.seed`` (noise and timesteps); ``root`` to the cache root. ``data`` =
    ``(x0, labels, indices)`` replaces the built-in subset (digits only so far), e.g. with ImageNet latents; the
    indices enter the key. Returns the capture folder; when it already holds ``DONE`` nothing is computed.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown capture dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    seed = preset.stage1.seed if seed is None else seed
    images, labels, idx = capture_subset(preset, split) if data is None else data
    key = capture_key(preset, split, idx, seed, dtype)
    folder = Path(root if root is not None else cache_root()) / "captures" / key
    build = functools.partial(_write_capture, teacher, preset, images, labels, idx, seed=seed, dtype=dtype, key=key,
                              split=split, batch_size=batch_size, progress=progress)
    return cache.get_or_build(folder, build, marker="DONE")


def _write_capture(teacher, preset, images, labels, idx, tmp: Path, *, seed: int, dtype: str, key: str, split: str,
                   batch_size: int, progress: bool) -> None:
    """Fill the writer's private folder ``tmp`` with the arrays, conditioning, ``meta.json`` and ``DONE``."""
    meta = _run_capture(teacher, preset, images, labels, idx, seed, DTYPES[dtype], batch_size, tmp, progress)
    meta.update(key=key, split=split, seed=seed, dtype=dtype, version=CAPTURE_VERSION)
    atomic_write_json(tmp / "meta.json", meta)
    atomic_write_bytes(tmp / "DONE", b"ok\n")


def _run_capture(teacher, preset, images, labels, idx, seed, np_dtype, batch_size, out: Path, progress) -> dict:
    from tqdm.auto import tqdm

    cfg = preset.teacher
    num = len(labels)
    gen = torch.Generator().manual_seed(seed)
    timesteps = torch.randint(0, cfg.num_train_timesteps, (num,), generator=gen)
    noise = torch.randn(images.shape, generator=gen)
    scheduler = make_train_scheduler(cfg)
    x_t = scheduler.add_noise(images, noise, timesteps)
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    arrays: dict[tuple[int, str, str], np.ndarray] = {}
    start = time.time()
    try:
        with torch.inference_mode(), record_sites(teacher) as record:
            for lo in tqdm(range(0, num, batch_size), desc="capture", disable=not progress):
                hi = min(num, lo + batch_size)
                teacher(x_t[lo:hi].to(device), timestep=timesteps[lo:hi].to(device),
                        class_labels=labels[lo:hi].to(device), return_dict=False)
                for (layer, site), (inp, tgt) in record.items():
                    for kind, tensor in (("inputs", inp), ("targets", tgt)):
                        arr = arrays.get((layer, site, kind))
                        if arr is None:
                            arr = np.lib.format.open_memmap(array_path(out, layer, site, kind), mode="w+",
                                                            dtype=np_dtype, shape=(num,) + tuple(tensor.shape[1:]))
                            arrays[(layer, site, kind)] = arr
                        arr[lo:hi] = tensor.float().cpu().numpy().astype(np_dtype)
                record.clear()
    finally:
        teacher.train(was_training)
    for arr in arrays.values():
        arr.flush()
    seconds = time.time() - start
    arrays.clear()
    atomic_torch_save({"indices": torch.as_tensor(idx), "labels": labels.clone(), "timesteps": timesteps},
                      out / "conditioning.pt")
    num_layers = len(blocks_of(teacher))
    return {"num_samples": num, "num_layers": num_layers, "sites": list(SITES),
            "seq_len": cfg.num_tokens, "dim": cfg.hidden_size, "seconds": round(seconds, 3),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


def capture_meta(folder: Path) -> dict:
    folder = Path(folder)
    if not is_complete(folder):
        raise FileNotFoundError(f"{folder} is not a complete capture (no DONE marker)")
    cache.verify(folder, ["meta.json"])
    return json.loads((folder / "meta.json").read_text())


def load_capture(folder: Path, layer: int, site: str, *, dtype: torch.dtype = torch.float32,
                 mmap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs [S, N, D], targets [S, N, D])`` of one layer and site.

    Default: loaded into memory and converted to ``dtype`` (float32). ``mmap=True`` returns copy-on-write tensors
    backed by the file, in the stored dtype (for captures larger than RAM). Both files are checked against the
    capture's manifest first (streamed, once per process).
    """
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; choose one of {SITES}")
    folder = Path(folder)
    if not is_complete(folder):
        raise FileNotFoundError(f"{folder} is not a complete capture (no DONE marker); run capture_activations first")
    out = []
    for kind in ("inputs", "targets"):
        path = array_path(folder, layer, site, kind)
        if not path.exists():
            raise FileNotFoundError(f"capture {folder.name} has no layer {layer} / {site} ({path.name})")
        cache.verify(folder, [path.name])
        if mmap:
            out.append(torch.from_numpy(np.load(path, mmap_mode="c")))  # copy-on-write: writable, file untouched
        else:
            out.append(torch.from_numpy(np.load(path)).to(dtype))
    return out[0], out[1]


def load_conditioning(folder: Path) -> dict:
    """Subset indices, labels and timesteps of a capture."""
    cache.verify(folder, ["conditioning.pt"])
    return torch.load(Path(folder) / "conditioning.pt", weights_only=True)
