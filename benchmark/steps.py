"""Job side: execute one step run by calling graft_core (imports of torch and graft_core happen here, lazily).

One set of executors for every model family: ``execute(ctx)`` looks the run's family up from its config
(``benchmark.family.family_of``) and runs the executor of the step kind, which asks the family for what differs
(its teacher, the data a capture and stage 2 read, the student a plan builds, evaluation, latency); the kinds only a
family has (DiT's ADM sampling array, PixArt-Σ's synthetic pairs) are the family's own ``executors``. Each executor
rebuilds the preset from the run's config.json (written at plan time) and returns the JSON record that becomes
metrics.json; artefacts go to ``run/out``. Inputs of other runs are found through the run ids in the config, never
through paths stored at plan time. ``execute`` is the default step runner of a job (``benchmark.jobs.RunUnit``); a
caller that wants other steps (the tests' fakes, ``--steps``) hands the job its own runner, so nothing here knows
about fakes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from benchmark.family import family_of
from benchmark.step_context import StepContext, capture_folder, capture_pairs, job_device, stage1_dirs


def run_teacher(ctx: StepContext) -> dict:
    """The teacher loaded (trained first when a tiny one is missing) and its identity."""
    return family_of(ctx.config).teacher_record(ctx)


def run_capture(ctx: StepContext) -> dict:
    """The inputs and outputs of the run's (layer, site) pairs under the frozen teacher, on disk."""
    from graft_core.stages.capture import capture_activations

    c = ctx.config
    family = family_of(c)
    teacher = family.teacher(ctx)
    folder = capture_activations(teacher, family.engine_preset(ctx, teacher), split=c["split"], root=ctx.run.out,
                                 seed=c["seed"], dtype=c["dtype"], data=family.capture_data(ctx, teacher),
                                 pairs=capture_pairs(c), capture_input=c.get("capture_input", "noised"),
                                 device=job_device(), progress=ctx.progress)
    return {"folder": str(Path(folder).relative_to(ctx.run.folder)), "key": Path(folder).name, "split": c["split"],
            **family.capture_record(ctx)}


def run_stage1(ctx: StepContext) -> dict:
    """One operator for one (layer, site) at the teacher's sizes (``distill.distill_layer``, the one stage-1 loop),
    or — site ``block_pair`` (Table 6) — one block pair of the teacher."""
    from graft_core.stages.distill import distill_layer

    p, c = ctx.preset(), ctx.config
    family = family_of(c)
    train, held = capture_folder(ctx, c["inputs"]["capture_train"]), capture_folder(ctx, c["inputs"]["capture_heldout"])
    if c["site"] == "block_pair":
        from graft_core.stages.depth_width import distill_pair

        return distill_pair(family.teacher(ctx), c["layer"], train, held, stage1=p.stage1, out_dir=ctx.run.out,
                            device=job_device(), bf16=c["bf16"], progress=ctx.progress)
    t = family.sizes(ctx)
    return distill_layer(train, held, layer=c["layer"], site=c["site"], operator=c["operator"], options=c["options"],
                         stage1=p.stage1, dim=t.hidden_size, num_heads=t.num_attention_heads, seq_len=t.num_tokens,
                         out_dir=ctx.run.out, bf16=c["bf16"], progress=ctx.progress)


def run_stage1_online(ctx: StepContext) -> dict:
    """Stage 1 of every layer of the run's plan from one teacher forward per batch, nothing stored but checkpoints
    (``graft_core.stages.online``, the same stage-1 step); per-layer folders as ``run_stage1`` writes them."""
    from graft_core.grafting.plan import GraftPlan
    from graft_core.stages.online import distill_online

    p, c = ctx.preset(), ctx.config
    family = family_of(c)
    teacher = family.teacher(ctx)
    t = family.sizes(ctx)
    return distill_online(teacher, family.engine_preset(ctx, teacher), GraftPlan.from_dict(c["plan"]),
                          stage1=p.stage1, train_data=family.stage1_data(ctx, teacher, "stage1"),
                          heldout_data=family.stage1_data(ctx, teacher, "heldout"), dim=t.hidden_size,
                          num_heads=t.num_attention_heads, seq_len=t.num_tokens, out_dir=ctx.run.out,
                          seed=c["seed"], capture_input=c.get("capture_input", "noised"), bf16=c["bf16"],
                          accumulation=int(ctx.settings.get("grad_accumulation", 1)), device=job_device(),
                          progress=ctx.progress)


def run_stage2(ctx: StepContext) -> dict:
    """Stage 2 (``finetune``: DDP over the job's tasks) of the grafted model or, without a plan, of the teacher (the
    control), on the family's data."""
    from graft_core.stages.finetune import finetune

    p, c = ctx.preset(), ctx.config
    family = family_of(c)
    teacher = family.teacher(ctx)
    student = family.build_student(teacher, c["plan"], stage1_dirs(ctx, c["init"]))
    data = family.stage2_data(ctx)
    # grad_accumulation, activation_checkpointing: execution settings of the profile (same results), so not in the
    # config or the run id
    _, metrics = finetune(student, family.engine_preset(ctx, teacher), out_dir=ctx.run.out, stage2=p.stage2,
                          progress=ctx.progress and ctx.rank == 0, **({"data": data} if data is not None else {}),
                          accumulation=int(ctx.settings.get("grad_accumulation", 1)),
                          checkpointing=bool(ctx.settings.get("activation_checkpointing",
                                                               family.checkpointing(ctx, teacher))))
    return metrics


def run_eval(ctx: StepContext) -> dict:
    """The family's evaluation protocol on the run's model."""
    return family_of(ctx.config).evaluate(ctx)


def run_latency(ctx: StepContext) -> dict:
    """Forward latency of the teacher and the run's model, and their parameter counts."""
    return family_of(ctx.config).latency(ctx)


EXECUTORS: dict[str, Callable[[StepContext], dict]] = {
    "teacher": run_teacher, "capture": run_capture, "stage1": run_stage1, "stage1_online": run_stage1_online,
    "stage2": run_stage2, "eval": run_eval, "latency": run_latency,
}


def executors_of(config: dict) -> dict[str, Callable[[StepContext], dict]]:
    """The executors of a run: the shared ones and its family's own kinds."""
    return {**EXECUTORS, **family_of(config).executors}


def execute(ctx: StepContext) -> dict:
    """The real step runner: the graft_core function of the run's kind (and model family)."""
    return executors_of(ctx.config)[ctx.kind](ctx)
