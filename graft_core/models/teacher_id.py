"""A teacher's identity and where its weights live, without torch: the driver computes both while planning (is the
teacher already shipped or cached?) and ``graft_core.models.teacher`` caches the teacher under them
(``graft_core.runtime.artefacts``, the mechanism every trained artefact shares)."""
from __future__ import annotations

from graft_core.runtime.artefacts import TrainedArtefact

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
TEACHER = TrainedArtefact(kind="teachers", name="teacher", weights_file=WEIGHTS_FILE, meta_file="teacher.json",
                          what="teacher", command="graft_core.models.teacher")
teacher_key = TEACHER.key  # (TeacherConfig, DataConfig | None) → key: the config, and the data when trained here
teacher_dirs = TEACHER.dirs  # key → [shipped assets folder, user cache folder]
