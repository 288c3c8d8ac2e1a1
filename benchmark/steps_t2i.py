"""Job side of the text-to-image runs (Table 5): the same step kinds as the DiT ones, on the PixArt teacher.

A run is text-to-image when its config carries ``pixart`` (the teacher's ``PixArtConfig``); ``benchmark.steps``
dispatches those here. Sizes (width, tokens) are read from the teacher itself, so the paper's checkpoint and the
rehearsal's reduced-width fake run the same code. Inputs of other runs are found through the run ids in the config.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from benchmark.step_context import StepContext, capture_folder, job_device, stage1_dirs
from graft_core.config import from_dict, plain, stable_hash

_TEACHERS: dict[str, Any] = {}
# above this many tokens stage 2 recomputes block activations unless the profile says otherwise (PixArt-Σ 2K: 16,384
# tokens × 28 blocks of activations per image would not fit a GPU at any useful batch)
CHECKPOINT_TOKENS = 1024


def pixart_of(config: dict):
    from graft_core.pixart import PixArtConfig

    return from_dict(PixArtConfig, config["pixart"])


def get_pixart(ctx: StepContext, *, train_if_missing: bool = False):
    """The run's PixArt teacher on the job's device, loaded once per process (callers copy before changing it)."""
    from graft_core.pixart import load_pixart_teacher

    c = ctx.config
    key = stable_hash({k: c.get(k) for k in ("pixart", "data", "num_prompts")})
    if key not in _TEACHERS:
        device = job_device()
        model = load_pixart_teacher(ctx.preset(), train_if_missing=train_if_missing, progress=ctx.progress,
                                    num_prompts=c.get("num_prompts"), device=device)
        _TEACHERS[key] = model.to(device)
    return _TEACHERS[key]


def _teacher_id(ctx: StepContext) -> str:
    from graft_core.pixart import pixart_key

    return pixart_key(pixart_of(ctx.config), ctx.preset().data)


def _synthetic_folders(ctx: StepContext, run_ids: list[str]) -> list[Path]:
    for rid in run_ids:
        ctx.dep_metrics("synthetic", rid)  # raises unless that task is done
    return [ctx.dep("synthetic", rid).out for rid in run_ids]


def _diffusion_preset(ctx: StepContext, teacher):
    """The preset with the PixArt teacher's sizes and noise schedule where the DiT teacher's would be read."""
    from graft_core.pixart import diffusion_of

    return ctx.preset().replace(teacher=diffusion_of(teacher))


def build_student(teacher, plan_dict: dict | None, dirs: dict[int, Path] | None):
    """A copy of the teacher, or the plan grafted into a copy of its transformer (stage-1 operators loaded)."""
    if plan_dict is None:
        return copy.deepcopy(teacher).eval()
    from graft_core.distill import assemble
    from graft_core.plan import GraftPlan
    from graft_core.text import TextConditioned

    device = next(teacher.parameters()).device
    transformer = assemble(teacher.transformer, GraftPlan.from_dict(plan_dict), dirs)
    return TextConditioned(transformer, copy.deepcopy(teacher.prompts)).to(device).eval()


def load_model(ctx: StepContext, spec: dict):
    """The model a run scores: the teacher, a stage-2 run's EMA weights (LoRA merged), or a stage-1 student."""
    import torch

    from graft_core.finetune import FINAL_DIR

    teacher = get_pixart(ctx)
    if spec["source"] == "teacher":
        return teacher
    if spec["source"] == "stage2":
        run = ctx.dep("stage2", spec["run"])
        student = build_student(teacher, ctx.store.read_config(run)["plan"], None)
        state = torch.load(run.out / FINAL_DIR / "ema.pt", map_location="cpu", weights_only=True)
        student.load_state_dict(state, strict=True)
        return student.eval()
    if spec["source"] == "assembled":
        return build_student(teacher, spec["plan"], stage1_dirs(ctx, spec["init"]))
    raise ValueError(f"unknown model source {spec['source']!r}")


# ------------------------------------------------------------------------------------------------------- executors
def run_teacher(ctx: StepContext) -> dict:
    from graft_core.accounting import count_params

    teacher = get_pixart(ctx, train_if_missing=True)
    pix = pixart_of(ctx.config)
    return {"pixart_key": _teacher_id(ctx), "pretrained": pix.pretrained, "num_prompts": teacher.prompts.null_id,
            "num_params": count_params(teacher)}


def run_synthetic(ctx: StepContext) -> dict:
    """Task ``i`` of the synthetic-pair array: the shards ``s ≡ i (mod tasks)`` (a requeued task skips finished
    shards)."""
    import time

    from graft_core.pixart import synthetic_shards

    c, s = ctx.config, ctx.config["synthetic"]
    device = job_device()
    start = time.time()
    files = synthetic_shards(get_pixart(ctx), ctx.run.out, num_pairs=s["num_pairs"], shard_size=s["shard_size"],
                             rank=c["task"], world_size=c["tasks"], seed=s["seed"], scheduler=s["scheduler"],
                             steps=s["steps"], guidance_scale=s["guidance_scale"], batch_size=s["batch_size"],
                             bf16=s["bf16"] or device.type == "cuda", device=device, clamp=s["clamp"],
                             progress=ctx.progress)
    return {"task": c["task"], "tasks": c["tasks"], "shards": len(files), "seconds": round(time.time() - start, 2),
            "device": str(device)}


def run_capture(ctx: StepContext) -> dict:
    """The grafted layers' ``attn1`` inputs and ungated outputs on a range of the synthetic pairs, on disk."""
    from graft_core.capture import capture_activations
    from graft_core.pixart import synthetic_subset

    c = ctx.config
    teacher = get_pixart(ctx)
    lo, hi = c["range"]
    data = synthetic_subset(_synthetic_folders(ctx, c["synthetic"]), lo, hi, teacher_id=_teacher_id(ctx))
    folder = capture_activations(teacher, _diffusion_preset(ctx, teacher), split=c["split"], root=ctx.run.out,
                                 seed=c["seed"], dtype=c["dtype"], data=data, pairs=c["pairs"], device=job_device(),
                                 progress=ctx.progress)
    return {"folder": str(Path(folder).relative_to(ctx.run.folder)), "key": Path(folder).name, "split": c["split"],
            "num_samples": hi - lo}


def run_stage1(ctx: StepContext) -> dict:
    """One operator for one PixArt layer (``distill.distill_layer``, the one stage-1 loop), at the teacher's sizes."""
    from graft_core.distill import distill_layer
    from graft_core.pixart import diffusion_of

    p, c = ctx.preset(), ctx.config
    t = diffusion_of(get_pixart(ctx))
    return distill_layer(capture_folder(ctx, c["inputs"]["capture_train"]),
                         capture_folder(ctx, c["inputs"]["capture_heldout"]), layer=c["layer"], site=c["site"],
                         operator=c["operator"], options=c["options"], stage1=p.stage1, dim=t.hidden_size,
                         num_heads=t.num_attention_heads, seq_len=t.num_tokens, out_dir=ctx.run.out,
                         device=job_device(), bf16=c["bf16"], progress=ctx.progress)


def run_stage2(ctx: StepContext) -> dict:
    """LoRA stage 2 (``finetune``: DDP over the job's tasks, gradient accumulation and activation checkpointing from
    the profile; checkpointing by default above ``CHECKPOINT_TOKENS``) of the grafted model or, without a plan, of
    the teacher (the control), on all synthetic pairs."""
    import numpy as np

    from graft_core.finetune import finetune
    from graft_core.pixart import diffusion_of, load_synthetic

    p, c = ctx.preset(), ctx.config
    teacher = get_pixart(ctx)
    student = build_student(teacher, c["plan"], stage1_dirs(ctx, c["init"]))
    x0, ids = load_synthetic(_synthetic_folders(ctx, c["synthetic"]["runs"]), c["synthetic"]["num_pairs"])
    _, metrics = finetune(student, _diffusion_preset(ctx, teacher), out_dir=ctx.run.out, stage2=p.stage2,
                          progress=ctx.progress and ctx.rank == 0, data=(x0, ids, np.arange(len(ids))),
                          accumulation=int(ctx.settings.get("grad_accumulation", 1)),
                          checkpointing=bool(ctx.settings.get("activation_checkpointing",
                                                               diffusion_of(teacher).num_tokens > CHECKPOINT_TOKENS)))
    return metrics


def run_eval(ctx: StepContext) -> dict:
    """Prompt following (tiny: prompt accuracy + FID on the digits; paper: GenEval, resumable in ``out/``)."""
    from graft_core.accounting import count_params
    from graft_core.pixart import evaluate_t2i

    c = ctx.config
    model = load_model(ctx, c["model"])
    record = evaluate_t2i(model, ctx.preset(), c["t2i"], out_dir=ctx.run.out, max_tokens=pixart_of(c).max_tokens,
                          progress=ctx.progress)
    return plain({**record, "model": c["model"], "params_m": count_params(model) / 1e6})


def run_latency(ctx: StepContext) -> dict:
    """Forward latency of teacher and grafted model at the model's tokens and at ``long_tokens``; parameters."""
    from graft_core.accounting import count_params
    from graft_core.pixart import diffusion_of, measure_speedup

    c = ctx.config
    teacher = get_pixart(ctx)
    model = load_model(ctx, c["model"])
    lat = c["latency"]
    speed = measure_speedup(teacher, model, batch=int(lat["batch"]), repeats=int(lat["repeats"]),
                            long_tokens=lat.get("long_tokens"))
    tokens, long = str(diffusion_of(teacher).num_tokens), str(lat.get("long_tokens"))
    return plain({"speedup": speed[tokens]["speedup"], "latency": speed,
                  "speedup_long": speed[long]["speedup"] if long in speed else None,
                  "long_tokens": lat.get("long_tokens") if long in speed else None,
                  "params_m": count_params(model) / 1e6, "teacher_params_m": count_params(teacher) / 1e6})


EXECUTORS: dict[str, Callable[[StepContext], dict]] = {
    "teacher": run_teacher, "synthetic": run_synthetic, "capture": run_capture, "stage1": run_stage1,
    "stage2": run_stage2, "eval": run_eval, "latency": run_latency,
}
