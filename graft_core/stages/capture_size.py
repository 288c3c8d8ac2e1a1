"""Disk needed by stage-1 captures, without torch: the driver's ``--dry-run`` prints it before anything is queued.

Why a formula and not a measurement: at paper scale one (layer, site) pair of one split is two ``[8000, 256, 1152]``
arrays (4.72 GB each in fp16), and all 28 × 2 pairs are ~528 GB per split — a user must see that before submitting.
Each (layer, site) is its own cache entry (``graft_core.stages.capture``): ``inputs.npy`` + ``targets.npy`` (a 128-byte
``.npy`` header each), its own copy of the conditioning (indices, labels, timesteps: three int64 per sample) and a
few small files (meta, manifest, marker).
"""
from __future__ import annotations

from collections.abc import Iterable

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}  # bytes per stored element (bf16 stored as its 16 bits)
NPY_HEADER = 128  # numpy's format-1.0 header of a 3-d array, padded to 64-byte alignment
CONDITIONING_PER_SAMPLE = 3 * 8  # indices, labels, timesteps: int64 each (conditioning.pt)
ENTRY_OVERHEAD = 8192  # meta.json, MANIFEST.json, DONE and torch.save's zip framing, rounded up


def array_bytes(num_samples: int, seq_len: int, dim: int, dtype: str = "float16") -> int:
    """One stored ``[S, N, D]`` array (``inputs`` or ``targets``) including its ``.npy`` header."""
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown capture dtype {dtype!r}; choose one of {sorted(ITEMSIZE)}")
    return NPY_HEADER + num_samples * seq_len * dim * ITEMSIZE[dtype]


def default_split_count(preset) -> int:
    """Samples in one capture split: ``stage1_per_class`` per class (8k for ImageNet; the held-out twin likewise)."""
    return preset.data.stage1_per_class * preset.teacher.num_classes


def all_pairs(preset) -> list[tuple[int, str]]:
    return [(layer, site) for layer in range(preset.teacher.num_layers) for site in ("attn", "mlp")]


def capture_bytes(preset, pairs: Iterable[tuple[int, str]] | None = None, split_count: int | None = None,
                  dtype: str = "float16") -> int:
    """Bytes on disk of the capture of ``pairs`` (``None`` = every layer × both sites) for **one** split of
    ``split_count`` samples (default :func:`default_split_count`). Twice this for stage1 + heldout."""
    pairs = all_pairs(preset) if pairs is None else list(dict.fromkeys((int(l), str(s)) for l, s in pairs))
    count = default_split_count(preset) if split_count is None else int(split_count)
    t = preset.teacher
    per_pair = (2 * array_bytes(count, t.num_tokens, t.hidden_size, dtype) + CONDITIONING_PER_SAMPLE * count
                + ENTRY_OVERHEAD)
    return per_pair * len(pairs)


def format_bytes(n: int) -> str:
    """``4.72 GB`` — decimal units, as disk quotas are sold."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
