"""A teacher's identity and where its weights live, without torch: the driver computes both while planning (is the
teacher already shipped or cached?) and ``graft_core.teacher`` caches the teacher under them."""
from __future__ import annotations

from pathlib import Path

from graft_core.config import stable_hash
from graft_core.paths import ASSETS_DIR, cache_root
from graft_core.presets import DataConfig, TeacherConfig

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def teacher_key(cfg: TeacherConfig, data: DataConfig | None) -> str:
    """Identity of a teacher: its config and, when trained here, the data it was trained on."""
    return stable_hash({"teacher": cfg} if cfg.pretrained else {"teacher": cfg, "data": data})


def teacher_dirs(key: str) -> list[Path]:
    """Where a teacher may be found: shipped assets first, then the user cache."""
    return [ASSETS_DIR / "teachers" / key, cache_root() / "teachers" / key]
