"""What every step executor works with: its context (store, run, config, rank, the profile's settings), the preset
rebuilt from the config, the job's device, and the inputs of other runs found through the run ids in the config.

Shared by the step executors (``benchmark.steps``) and the model families' hooks (``benchmark.families``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmark.store import RunPaths, Store
from graft_core.config import from_dict
from graft_core.presets import (ClassifierConfig, DataConfig, EvalConfig, Preset, Stage1Config, Stage2Config,
                                TeacherConfig, get_preset)

_PRESET_PARTS = {"teacher": TeacherConfig, "data": DataConfig, "classifier": ClassifierConfig, "stage1": Stage1Config,
                 "stage2": Stage2Config, "eval": EvalConfig}


@dataclass
class StepContext:
    store: Store
    run: RunPaths
    config: dict
    rank: int = 0
    world_size: int = 1
    progress: bool = True
    settings: dict = field(default_factory=dict)  # the profile's execution settings of this kind (not the config)

    @property
    def kind(self) -> str:
        return self.config["kind"]

    def preset(self) -> Preset:
        return preset_from_config(self.config)

    def dep(self, kind: str, run_id: str) -> RunPaths:
        return self.store.run(kind, run_id)

    def dep_metrics(self, kind: str, run_id: str) -> dict:
        run = self.dep(kind, run_id)
        if not run.done.exists():
            raise RuntimeError(f"input run {kind}/{run_id} is not done")
        return self.store.read_metrics(run) or {}


def preset_from_config(config: dict) -> Preset:
    """``get_preset(name)`` with every preset part the config carries put back (``dataclasses.replace``)."""
    base = get_preset(config["preset"])
    parts = {name: from_dict(cls, config[name]) for name, cls in _PRESET_PARTS.items()
             if isinstance(config.get(name), dict)}
    return base.replace(**parts)


# ------------------------------------------------------------------------------------------------------- models
def job_device():
    """The job's device: ``cuda:LOCAL_RANK`` when the job has a GPU (TF32 matmuls on, as DiT's sampling does),
    else the CPU. Every step puts its models here; only stage 1 and stage 2 pick it themselves."""
    import torch

    from graft_core.runtime.distributed import default_device, env_info

    device = default_device(env_info())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def stage1_dirs(ctx: StepContext, init) -> dict[int, Path] | None:
    """The stage-1 folder of each layer of an ``init``: ``{"stage1": {layer: run id}}`` (a run per layer) or
    ``{"stage1_online": run id, "layers": [...]}`` (one online run's per-layer folders); None for a random init."""
    if not isinstance(init, dict):
        return None
    if "stage1_online" in init:
        from graft_core.stages.online import layer_dir

        out = ctx.dep("stage1_online", init["stage1_online"]).out
        return {int(layer): layer_dir(out, layer) for layer in init["layers"]}
    return {int(layer): ctx.dep("stage1", rid).out for layer, rid in init["stage1"].items()}


def capture_pairs(config: dict) -> list | None:
    """The (layer, site) pairs a capture run stores: its ``pairs``, every layer of its ``sites`` (``["block"]`` for
    depth→width), or None = every layer × both operator sites."""
    if config.get("pairs"):
        return config["pairs"]
    if config.get("sites"):
        return [[layer, site] for layer in range(config["teacher"]["num_layers"]) for site in config["sites"]]
    return None


def capture_folder(ctx: StepContext, run_id: str) -> Path:
    return ctx.dep("capture", run_id).folder / ctx.dep_metrics("capture", run_id)["folder"]


def load_model(ctx: StepContext, spec: dict):
    """(model, plan) that an eval, sample or latency run scores, from its family: the teacher, a stage-2 run's EMA
    weights (LoRA merged), or a student assembled from stage-1 runs."""
    import torch

    from benchmark.family import family_of
    from graft_core.stages.finetune import FINAL_DIR

    family = family_of(ctx.config)
    teacher = family.teacher(ctx)
    source = spec["source"]
    if source == "teacher":
        return teacher, None
    if source == "stage2":
        run = ctx.dep("stage2", spec["run"])
        plan = ctx.store.read_config(run)["plan"]
        student = family.build_student(teacher, plan, None)
        state = torch.load(run.out / FINAL_DIR / "ema.pt", map_location="cpu", weights_only=True)
        student.load_state_dict(state, strict=True)
        return student.eval(), plan
    if source == "assembled":
        return family.build_student(teacher, spec["plan"], stage1_dirs(ctx, spec["init"])), spec["plan"]
    raise ValueError(f"unknown model source {source!r}")
