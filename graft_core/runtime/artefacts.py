"""Trained artefacts (the tiny DiT teacher, the tiny PixArt teacher, the digit classifier): one identity, one place
on disk, one lookup, one training entry point, one integrity check.

An artefact's identity is the hash of its config and, when it is trained here, of the data it was trained on (a
pretrained one is named by its config alone). It is looked up in the shipped assets
(``graft_core/assets/<kind>/<key>/``, made by its ``python -m ... --preset tiny --out`` command) and then in the
user cache (``cache_root()/<kind>/<key>/``); when absent it is trained once through the artefact cache
(``graft_core.runtime.cache``: concurrent jobs wait on the key's lock and load the result). Its folder holds the weights and a
JSON record with their sha256, checked on every load. Torch-free: the driver asks "is it there?" while planning.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from graft_core.runtime import cache
from graft_core.config import stable_hash
from graft_core.errors import MissingWeightsError
from graft_core.runtime.paths import ASSETS_DIR, cache_root


@dataclass(frozen=True)
class TrainedArtefact:
    """One kind of trained artefact. ``kind``: its folder under the assets and the cache; ``name``: its key in the
    identity (``{name: config, "data": data}``); ``what``: how messages name it; ``command``: the module that trains
    it (``python -m <command> --preset P``)."""

    kind: str
    name: str
    weights_file: str
    meta_file: str
    what: str
    command: str

    def key(self, cfg: Any, data: Any) -> str:
        """Identity: the config, and the training data unless the config names a pretrained checkpoint."""
        pretrained = getattr(cfg, "pretrained", None)
        return stable_hash({self.name: cfg} if pretrained else {self.name: cfg, "data": data})

    def dirs(self, key: str) -> list[Path]:
        """Where it may be found: the shipped assets first, then the user cache."""
        return [ASSETS_DIR / self.kind / key, cache_root() / self.kind / key]

    def find(self, key: str) -> Path | None:
        """The first finished folder of ``key`` (shipped or cached), None when there is none."""
        return cache.find(self.dirs(key), self.weights_file)

    def folder(self, key: str, build: Callable[..., None], *, preset: str, train_if_missing: bool = True,
               resume: bool = False) -> Path:
        """The folder of ``key``, trained into the user cache with ``build(tmp[, resume_dir])`` when it is found
        nowhere (``MissingWeightsError`` naming the command instead, when not ``train_if_missing``)."""
        found = self.find(key)
        if found is not None:
            return found
        if not train_if_missing:
            raise MissingWeightsError(f"no trained {self.what} {key}; run `python -m {self.command} --preset "
                                      f"{preset}`")
        return cache.get_or_build(self.dirs(key)[1], build, marker=self.weights_file, resume=resume)

    def train(self, out_dir: Path, build: Callable[..., None], *, resume: bool = False) -> dict:
        """Train into ``out_dir`` even over a finished entry (``--retrain``); returns the record."""
        out_dir = cache.get_or_build(out_dir, build, rebuild=True, resume=resume)
        return self.read_meta(out_dir)

    def read_meta(self, folder: Path) -> dict:
        """The folder's record; a truncated or garbled one is a ``ValueError`` naming the file and the fix."""
        path = Path(folder) / self.meta_file
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err.__class__.__name__}); delete {Path(folder)} to "
                             f"retrain the {self.what}") from None

    def verified_meta(self, folder: Path) -> dict:
        """The record of a folder whose files match their sha256 (the cache manifest's, then the record's own)."""
        folder = Path(folder)
        cache.verify(folder)
        meta = self.read_meta(folder)
        digest = cache.sha256_file(folder / self.weights_file)
        if digest != meta["sha256"]:
            raise ValueError(f"{self.what} weights in {folder} are corrupt (sha256 {digest[:12]} != "
                             f"{meta['sha256'][:12]}); delete the folder to retrain")
        return meta

    def main(self, argv: list[str] | None, *, description: str, config_of: Callable[[Any], Any],
             train: Callable[[Any, Path], dict], refuse: Callable[[Any], str | None] | None = None) -> None:
        """The artefact's command line (``python -m <command> --preset P [--out DIR] [--retrain] [--threads N]``):
        say where the preset's artefact is, or train it (``train(preset, folder)`` → its record, printed).
        ``config_of(preset)``: the artefact's config; ``refuse(preset)``: why the preset has nothing to train."""
        from graft_core.presets import get_preset

        parser = argparse.ArgumentParser(prog=f"python -m {self.command}", description=description)
        parser.add_argument("--preset", default="tiny")
        parser.add_argument("--out", type=Path, help="parent folder to write <key>/ into (default: the user cache)")
        parser.add_argument("--retrain", action="store_true",
                            help=f"train even if a shipped or cached {self.what} exists")
        parser.add_argument("--threads", type=int, help="torch intra-op threads (1 is fastest on a busy 2-core machine)")
        args = parser.parse_args(argv)
        try:
            preset = get_preset(args.preset)
        except ValueError as err:
            parser.exit(2, f"error: {err}\n")
        cfg = config_of(preset)
        why = refuse(preset) if refuse is not None else None
        if why is None and getattr(cfg, "pretrained", None):
            why = f"preset {args.preset!r} uses the pretrained {cfg.pretrained}"
        if why:
            raise SystemExit(f"{why}; nothing to train")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        key = self.key(cfg, preset.data)
        existing = self.find(key)
        if existing is not None and not args.retrain:
            print(f"{self.what} {key} already exists: {existing}; --retrain to train again")
            return
        print(json.dumps(train(preset, args.out / key if args.out else self.dirs(key)[1]), indent=2))
