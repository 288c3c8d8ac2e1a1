"""The domain feature extractor of the tiny metrics: a small CNN digit classifier (``ClassifierConfig``).

It plays Inception-v3's part for the 16×16 digits: its pooled penultimate features feed FID / KID / precision-recall,
its logits feed IS and class accuracy, and an intermediate conv map feeds sFID (see ``SPATIAL_CHANNELS``).

Like the teacher, a trained classifier (``graft_core.runtime.artefacts``) is keyed by the hash of (``ClassifierConfig``,
``DataConfig``) and looked up in ``graft_core/assets/classifiers/<key>/`` (shipped) then in
``cache_root()/classifiers/<key>/``; the folder holds ``classifier.safetensors`` and ``classifier.json`` (configs,
sha256 of the weights, held-out accuracy). Training goes through the artefact cache (``graft_core.runtime.cache``): concurrent
jobs train a key once, the others wait and load it. Train and ship the tiny one with::

    python -m graft_core.metrics.classifier --preset tiny --out graft_core/assets/classifiers
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from graft_core.runtime.artefacts import TrainedArtefact
from graft_core.runtime.cache import sha256_file
from graft_core.config import to_jsonable
from graft_core.runtime.paths import atomic_write_json
from graft_core.presets import ClassifierConfig, Preset

WEIGHTS_FILE = "classifier.safetensors"
META_FILE = "classifier.json"
# sFID features: the first 7 channels of the second conv stage (ReLU output, before its pooling), flattened, i.e.
# 7·(R/2)² dims (448 at 16×16). This mirrors ADM's choice (first 7 channels of Inception's mid-level 17×17
# ``mixed_6/conv`` map → 2023 dims): a mid-level map that still has spatial layout, few enough dims for the
# covariance to be estimated from a few thousand samples.
SPATIAL_CHANNELS = 7


class DigitClassifier(nn.Module):
    """Conv(3×3)-BN-ReLU stages with 2× max-pooling between them, global average pooling, a ReLU feature layer.

    Args:
        cfg: channels per stage (``len(cfg.channels) - 1`` poolings, so the resolution must be divisible by
            ``2 ** (len(channels) - 1)``) and ``feature_dim`` (width of the pooled penultimate features).
        resolution: input side in pixels; inputs are ``[N, 1, R, R]`` in [-1, 1].
        num_classes: number of logits.
    """

    def __init__(self, cfg: ClassifierConfig, resolution: int, num_classes: int = 10):
        super().__init__()
        if len(cfg.channels) < 2:
            raise ValueError(f"ClassifierConfig.channels needs at least 2 stages, got {cfg.channels}")
        if resolution % 2 ** (len(cfg.channels) - 1):
            raise ValueError(f"resolution {resolution} is not divisible by 2**{len(cfg.channels) - 1}")
        self.resolution = resolution
        c_in = 1
        self.stages = nn.ModuleList()
        for c in cfg.channels:
            self.stages.append(nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                             nn.ReLU()))
            c_in = c
        self.feature = nn.Sequential(nn.Linear(c_in, cfg.feature_dim), nn.ReLU())
        self.head = nn.Linear(cfg.feature_dim, num_classes)

    @property
    def spatial_dim(self) -> int:
        return SPATIAL_CHANNELS * (self.resolution // 2) ** 2

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pool`` [N, feature_dim], ``logits`` [N, classes], ``spatial`` [N, 7·(R/2)²] for ``x`` in [-1, 1]."""
        spatial = None
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            if i == 1:
                # NHWC order before flattening, as ADM flattens TF's [N, 17, 17, 7] map.
                spatial = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
        pool = self.feature(x.mean(dim=(2, 3)))
        return {"pool": pool, "logits": self.head(pool), "spatial": spatial}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["logits"]


# ----------------------------------------------------------------------------------------------------------------
# Cache: key, folders, load
# ----------------------------------------------------------------------------------------------------------------


CLASSIFIER = TrainedArtefact(kind="classifiers", name="classifier", weights_file=WEIGHTS_FILE, meta_file=META_FILE,
                             what="digit classifier", command="graft_core.metrics.classifier")
classifier_key = CLASSIFIER.key  # (ClassifierConfig, DataConfig) → key: the config and the data it was trained on
classifier_dirs = CLASSIFIER.dirs  # key → [shipped assets folder, user cache folder]
read_meta = CLASSIFIER.read_meta  # classifier.json; a garbled one is a ValueError naming the fix


def find_classifier(preset: Preset) -> Path | None:
    return CLASSIFIER.find(classifier_key(preset.classifier, preset.data))


def classifier_dir(preset: Preset, *, train_if_missing: bool = True, progress: bool = False) -> Path:
    """Folder of the preset's trained classifier, training it into the user cache if it exists nowhere."""
    return CLASSIFIER.folder(classifier_key(preset.classifier, preset.data),
                             functools.partial(_write_classifier, preset, progress=progress), preset=preset.name,
                             train_if_missing=train_if_missing)


def load_classifier_dir(folder: Path) -> DigitClassifier:
    """Load a classifier folder in eval mode after checking the weights' sha256 against ``classifier.json``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = CLASSIFIER.verified_meta(folder)
    cfg = ClassifierConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["classifier_config"].items()})
    model = DigitClassifier(cfg, meta["resolution"], meta["num_classes"])
    model.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=True)
    return model.eval().requires_grad_(False)


def load_classifier(preset: Preset, *, train_if_missing: bool = True) -> DigitClassifier:
    """The preset's digit classifier in eval mode: shipped, cached, or trained now (tiny: 12 epochs, 2–4 min on a
    busy 2-core machine; micro: seconds)."""
    return load_classifier_dir(classifier_dir(preset, train_if_missing=train_if_missing))


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats → the values an 8-bit image can hold, so training sees what evaluation sees (uint8 samples)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


@torch.no_grad()
def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    hits = sum((model(x).argmax(1) == y).sum().item()
               for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True))
    return hits / len(labels)


def train_classifier(preset: Preset, out_dir: Path, *, progress: bool = False) -> dict:
    """Train on the digits train split (Adam, cosine decay), test on held-out; publish weights + meta as ``out_dir``
    (replacing a classifier already there, under the key's lock) and return the meta.

    Deterministic given ``cfg.seed`` on a fixed machine and thread count (the global RNG is left untouched).
    """
    return CLASSIFIER.train(out_dir, functools.partial(_write_classifier, preset, progress=progress))


def _write_classifier(preset: Preset, out: Path, *, progress: bool = False) -> None:
    """Train and write ``classifier.safetensors`` + ``classifier.json`` into the writer's private folder ``out``."""
    from safetensors.torch import save_file

    from graft_core.data import load_digits

    cfg, data_cfg = preset.classifier, preset.data
    data = load_digits(data_cfg)
    x_train, y_train = quantize(data.train_images), data.train_labels
    x_held, y_held = quantize(data.heldout_images), data.heldout_labels
    start = time.time()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model = DigitClassifier(cfg, data_cfg.resolution, data.num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        steps_per_epoch = -(-len(x_train) // cfg.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
        for epoch in range(cfg.epochs):
            model.train()
            perm = torch.randperm(len(x_train), generator=gen)
            total = 0.0
            for idx in perm.split(cfg.batch_size):
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            if progress:
                print(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / len(x_train):.4f}, "
                      f"held-out accuracy {accuracy(model, x_held, y_held):.4f}", flush=True)
    model.eval()
    meta = {
        "key": classifier_key(cfg, data_cfg),
        "classifier_config": to_jsonable(cfg),
        "data_config": to_jsonable(data_cfg),
        "resolution": data_cfg.resolution,
        "num_classes": data.num_classes,
        "spatial_layer": f"stage 2 ReLU map, first {SPATIAL_CHANNELS} channels, NHWC-flattened",
        "heldout_accuracy": accuracy(model, x_held, y_held),
        "train_accuracy": accuracy(model, x_train, y_train),
        "num_train": len(x_train),
        "num_heldout": len(x_held),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.time() - start, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "made_by": f"python -m graft_core.metrics.classifier --preset {preset.name}",
    }
    out = Path(out)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
    meta["sha256"] = sha256_file(out / WEIGHTS_FILE)
    atomic_write_json(out / META_FILE, meta)


def main(argv: list[str] | None = None) -> None:
    CLASSIFIER.main(argv, description="Train (or find) the preset's digit classifier for the metrics.",
                    config_of=lambda p: p.classifier, train=functools.partial(train_classifier, progress=True),
                    refuse=lambda p: None if p.data.name == "digits" else
                    f"preset {p.name!r} evaluates with Inception-v3 ({p.data.name})")


if __name__ == "__main__":
    main()
