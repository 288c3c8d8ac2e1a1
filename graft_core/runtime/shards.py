"""One resumable shard array: the work of a long job cut into shards that any number of tasks share.

Used by sharded sampling (``sample_at_scale``: 50k samples → ADM ``.npz``), PixArt-Σ's synthetic pairs
(``pixart.synthetic_shards``) and ImageNet encoding (``imagenet.encode_imagenet``). The rules are the same for all:

* ``num_items`` items in shards of ``shard_size``: shard ``s`` holds items ``[s·shard_size, (s+1)·shard_size)``;
* task ``rank`` of ``world`` does the shards ``s ≡ rank (mod world)`` (a Slurm array task, a torchrun rank, or one
  process doing all), so the result never depends on how many tasks shared the work;
* a settings file (the plan) is written by the first task; a task with other settings is refused
  (``SettingsMismatch``) rather than mixing two sets in one folder;
* every random draw is seeded per shard (or per item), never per task: :func:`spaced_seed`, :func:`consecutive_seed`;
* each shard is written atomically (``graft_core.runtime.paths``), then its done marker (which may be the shard file itself);
  a shard with its marker is skipped, so a killed task loses at most the shard in progress;
* the merge reads the shards in order once :meth:`ShardArray.missing` is empty.

The file names, the settings and the seed formula stay each caller's (they fix existing results' layout and values).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from graft_core.errors import SettingsMismatch
from graft_core.runtime.paths import atomic_write_json


def check_task(rank: int, world: int) -> None:
    """Refuse a task index outside ``0..world-1`` (one line)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard index {rank} is outside 0..{world - 1}")


def num_shards(num_items: int, shard_size: int) -> int:
    return -(-int(num_items) // int(shard_size))


def spaced_seed(global_seed: int, shard: int) -> int:
    """``global_seed·10⁶ + shard·10³``: a shard holds < 1000 batches, so the batch seeds ``+ i`` never collide."""
    return global_seed * 1_000_000 + shard * 1_000


def consecutive_seed(seed: int, shard: int, batches_per_shard: int) -> int:
    """``seed + shard·batches_per_shard``: the batch seeds ``+ i`` of all shards are one consecutive range."""
    return seed + shard * batches_per_shard


@dataclass(frozen=True)
class ShardArray:
    """``num_items`` in shards of ``shard_size``; ``marker(s)`` is the file whose presence says shard ``s`` is done."""

    num_items: int
    shard_size: int
    marker: Callable[[int], Path]

    def __post_init__(self):
        if self.num_items < 1 or self.shard_size < 1:
            raise ValueError(f"the number of items and the shard size must be positive "
                             f"(got {self.num_items}, {self.shard_size})")

    @property
    def num_shards(self) -> int:
        return num_shards(self.num_items, self.shard_size)

    def bounds(self, s: int) -> tuple[int, int]:
        """``(lo, hi)``: the items of shard ``s``."""
        return s * self.shard_size, min(self.num_items, (s + 1) * self.shard_size)

    def is_done(self, s: int) -> bool:
        return self.marker(s).exists()

    def mine(self, rank: int, world: int) -> list[int]:
        """The shards of task ``rank`` of ``world`` (done or not)."""
        check_task(rank, world)
        return list(range(rank, self.num_shards, world))

    def todo(self, rank: int, world: int) -> tuple[list[int], list[int]]:
        """``(to do, already done)`` among the shards of task ``rank`` of ``world``."""
        mine = self.mine(rank, world)
        return [s for s in mine if not self.is_done(s)], [s for s in mine if self.is_done(s)]

    def missing(self, shards: Iterable[int] | None = None) -> list[int]:
        """The shards (all, or of ``shards``) without their done marker, sorted."""
        return sorted(s for s in (range(self.num_shards) if shards is None else set(shards)) if not self.is_done(s))

    def mark_done(self, s: int, record: dict) -> None:
        """Write shard ``s``'s marker (a JSON record), after its data: the last write of a shard."""
        atomic_write_json(self.marker(s), record)


def check_settings(path: Path, settings: dict, *, what: str, folder: Path | None = None,
                   info: dict | None = None) -> None:
    """The plan check. First task: write ``settings`` (+ ``info``, which is not compared) to ``path``. Later tasks:
    refuse (``SettingsMismatch`` naming the fields) a folder whose recorded settings differ from ``settings``."""
    path = Path(path)
    settings = json.loads(json.dumps(settings))  # tuples → lists: as they read back
    if not path.exists():
        atomic_write_json(path, {**settings, **(info or {})})
        return
    old: dict[str, Any] = json.loads(path.read_text())
    diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
    if diff:
        raise SettingsMismatch(f"{folder or path.parent} holds {what} made with other settings {diff}; use another "
                               f"folder (--out)")
