"""Job side: execute one step run by calling graft_core (imports of torch and graft_core happen here, lazily).

``execute(ctx)`` dispatches on the step kind through ``EXECUTORS`` (text-to-image runs through
``benchmark.steps_t2i.EXECUTORS``); each executor rebuilds the preset from the run's
config.json (written at plan time) and returns the JSON record that becomes metrics.json; artefacts go to
``run/out``. Inputs of other runs are found through the run ids in the config, never through paths stored at plan
time. ``execute`` is the default step runner of a job (``benchmark.jobs.RunUnit``); a caller that wants other steps
(the tests' fakes, ``--steps``) hands the job its own runner, so nothing here knows about fakes.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from benchmark.step_context import StepContext, capture_folder, capture_pairs, job_device, stage1_dirs
from graft_core.config import plain, stable_hash
from graft_core.presets import Preset

_TEACHERS: dict[str, Any] = {}


def get_teacher(preset: Preset, *, train_if_missing: bool = False, progress: bool = False):
    """The preset's teacher on the job's device, loaded once per process (callers must not modify it:
    assemble/finetune copy it)."""
    from graft_core.teacher import load_teacher

    key = stable_hash({"teacher": preset.teacher, "data": preset.data})
    if key not in _TEACHERS:
        from graft_core.teacher import use_fast_attention

        model = load_teacher(preset, train_if_missing=train_if_missing, progress=progress)
        _TEACHERS[key] = use_fast_attention(model.to(job_device()), job_device())
    return _TEACHERS[key]


def build_student(teacher, plan_dict: dict | None, stage1_dirs: dict[int, Path] | None):
    """Teacher copy (no plan) or ``distill.assemble`` of the plan. Operators without stage-1 weights (random-init
    rows) keep ``assemble``'s initialisation: layer ``i`` under seed ``0 + i``, whatever the preset's seeds; the
    global RNG is left untouched."""
    if plan_dict is None:
        return copy.deepcopy(teacher).eval()
    if plan_dict.get("restructure") == "parallel_pairs":  # Table 6: stage-1 dirs are per block pair
        from graft_core.depth_width import assemble_pairs

        return assemble_pairs(teacher, stage1_dirs)
    from graft_core.distill import assemble
    from graft_core.plan import GraftPlan

    from graft_core.teacher import use_fast_attention

    device = next(teacher.parameters()).device  # new operators are built on the CPU
    return use_fast_attention(assemble(teacher, GraftPlan.from_dict(plan_dict), stage1_dirs).to(device), device)


# ------------------------------------------------------------------------------------------------------- executors
def run_teacher(ctx: StepContext) -> dict:
    from graft_core.teacher import WEIGHTS_FILE, teacher_dirs, teacher_key

    p = ctx.preset()
    model = get_teacher(p, train_if_missing=True, progress=ctx.progress)
    key = teacher_key(p.teacher, p.data)
    found = None if p.teacher.pretrained else next(
        (str(d) for d in teacher_dirs(key) if (d / WEIGHTS_FILE).exists()), None)
    return {"teacher_key": key, "pretrained": p.teacher.pretrained, "weights_dir": found,
            "num_params": sum(t.numel() for t in model.parameters())}


def run_capture(ctx: StepContext) -> dict:
    from graft_core.capture import capture_activations

    p, c = ctx.preset(), ctx.config
    folder = capture_activations(get_teacher(p), p, split=c["split"], root=ctx.run.out, seed=c["seed"],
                                 dtype=c["dtype"], pairs=capture_pairs(c), capture_input=c.get("capture_input", "noised"),
                                 device=job_device(), progress=ctx.progress)
    return {"folder": str(Path(folder).relative_to(ctx.run.folder)), "key": Path(folder).name, "split": c["split"]}


def run_stage1(ctx: StepContext) -> dict:
    """One operator for one (layer, site), or — site ``block_pair`` (Table 6) — one block pair of the teacher."""
    from graft_core.distill import distill_layer

    from graft_core.structure import pretrained_width

    p, c = ctx.preset(), ctx.config
    if c["site"] == "block_pair":
        from graft_core.depth_width import distill_pair

        return distill_pair(get_teacher(p), c["layer"], capture_folder(ctx, c["inputs"]["capture_train"]),
                            capture_folder(ctx, c["inputs"]["capture_heldout"]), stage1=p.stage1,
                            out_dir=ctx.run.out, device=job_device(), bf16=c["bf16"], progress=ctx.progress)
    t = pretrained_width(p.teacher)  # the checkpoint's width, from its config file (no model loaded)
    return distill_layer(capture_folder(ctx, c["inputs"]["capture_train"]),
                         capture_folder(ctx, c["inputs"]["capture_heldout"]), layer=c["layer"], site=c["site"],
                         operator=c["operator"], options=c["options"], stage1=p.stage1, dim=t.hidden_size,
                         num_heads=t.num_attention_heads, seq_len=t.num_tokens, out_dir=ctx.run.out,
                         bf16=c["bf16"], progress=ctx.progress)


def run_stage2(ctx: StepContext) -> dict:
    from graft_core.finetune import finetune

    p, c = ctx.preset(), ctx.config
    teacher = get_teacher(p)
    student = build_student(teacher, c["plan"], stage1_dirs(ctx, c["init"]))
    # grad_accumulation, activation_checkpointing: execution settings of the profile (same results), so not in the
    # config or the run id
    _, metrics = finetune(student, p, out_dir=ctx.run.out, stage2=p.stage2, progress=ctx.progress and ctx.rank == 0,
                          accumulation=int(ctx.settings.get("grad_accumulation", 1)),
                          checkpointing=bool(ctx.settings.get("activation_checkpointing", False)))
    return metrics


def load_model(ctx: StepContext, p: Preset, spec: dict):
    """The model an eval run scores: the teacher, a stage-2 run's EMA weights, or an assembled stage-1 student."""
    import torch

    teacher = get_teacher(p)
    source = spec["source"]
    if source == "teacher":
        return teacher, None
    if source == "stage2":
        s2 = ctx.dep("stage2", spec["run"])
        s2_config = ctx.store.read_config(s2)
        student = build_student(teacher, s2_config["plan"], None)
        from graft_core.finetune import FINAL_DIR

        state = torch.load(s2.out / FINAL_DIR / "ema.pt", map_location="cpu", weights_only=True)
        student.load_state_dict(state, strict=True)
        return student.eval(), s2_config["plan"]
    if source == "assembled":
        return build_student(teacher, spec["plan"], stage1_dirs(ctx, spec["init"])), spec["plan"]
    raise ValueError(f"unknown model source {source!r}")


def run_eval(ctx: StepContext) -> dict:
    """``in_process``: sample and score here. ``adm``: merge the sampling array's shards and score them."""
    from graft_core.evaluate import evaluate_model

    p, c = ctx.preset(), ctx.config
    if p.eval.protocol == "adm":
        merged = _merge_sample_runs(ctx, c["samples"])
        plan = _model_plan(ctx, c["model"])
        per_sample: dict = {}
        record = {"metrics": adm_metrics(merged, p, per_sample), "efficiency": efficiency(p, plan),
                  "model": c["model"], "samples": str(merged.relative_to(ctx.run.folder))}
        return _keep_per_sample(ctx, record, per_sample, merged)
    model, plan = load_model(ctx, p, c["model"])
    per_sample: dict = {}  # features + per-draw FIDs for paired comparisons at summary time (benchmark.comparisons)
    metrics = evaluate_model(model, p, decode=_source(p).decoder(p, job_device()), per_sample=per_sample)
    record = {"metrics": plain(metrics), "efficiency": efficiency(p, plan), "model": c["model"]}
    return _keep_per_sample(ctx, record, per_sample)


def _keep_per_sample(ctx: StepContext, record: dict, per_sample: dict, merged: Path | None = None) -> dict:
    """Write the eval's per-sample features and per-draw FIDs next to its metrics and record what pairs it
    (``graft_core.metrics.paired``); the sharded path's record is built here from the merged batch."""
    if merged is not None and "bootstrap" in per_sample:
        from graft_core.sample_at_scale import sharded_pairing

        per_sample["pairing"] = {**sharded_pairing(ctx.preset(), merged), "extractor": ctx.preset().eval.extractor,
                                 "bootstrap": per_sample.pop("bootstrap")}
    if "pairing" in per_sample:
        from graft_core.metrics.paired import save_per_sample

        record["pairing"] = plain(per_sample["pairing"])
        record["per_sample"] = save_per_sample(ctx.run.out, per_sample)
    return record


def _source(p: Preset):
    from graft_core.data.sources import source_of

    return source_of(p)


def _model_plan(ctx: StepContext, spec: dict) -> dict | None:
    if spec["source"] == "stage2":
        return ctx.store.read_config(ctx.dep("stage2", spec["run"]))["plan"]
    return spec.get("plan")


def run_sample(ctx: StepContext) -> dict:
    """Task ``i`` of the sampling array: the shards ``s ≡ i (mod tasks)`` of the row's ``num_samples``, decoded
    to uint8 and saved one file per shard (a requeued task skips the shards already DONE)."""
    from graft_core.imagenet import load_vae
    from graft_core.sample_at_scale import sample_shards

    p, c = ctx.preset(), ctx.config
    e, device = p.eval, job_device()
    model, _ = load_model(ctx, p, c["model"])
    vae = None if _source(p).pixel_space else load_vae(device=device)
    report = sample_shards(model, p.teacher, ctx.run.out, vae=vae, num_samples=e.num_samples,
                           shard_size=e.shard_size, steps=e.steps, guidance_scale=e.guidance_scale,
                           scheduler=e.scheduler, global_seed=e.seed, batch_size=e.batch_size,
                           label_mode=e.label_mode, rank=c["task"], world_size=c["tasks"],
                           bf16=e.bf16 or device.type == "cuda", progress=ctx.progress,
                           model_key=stable_hash(c["model"]), guidance_channels=e.guidance_channels)
    return {"task": c["task"], "tasks": c["tasks"], "shards": report["sampled"] + report["skipped"],
            "sampled": report["sampled"], "seconds": report["seconds"], "device": str(device)}


def _merge_sample_runs(ctx: StepContext, sample_ids: list[str]) -> Path:
    """Hard-link (or copy) every task's shards into this run's ``out/`` and merge them into ``samples.npz``."""
    import os
    import shutil

    from graft_core.sample_at_scale import MERGED, merge_shards

    out = ctx.run.out
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for i, rid in enumerate(sample_ids):
        part = ctx.dep("sample", rid)
        ctx.dep_metrics("sample", rid)  # raises unless that task is done
        if i == 0:
            shutil.copyfile(part.out / "plan.json", out / "plan.json")
        for src in sorted((part.out / "shards").iterdir()):
            dest = out / "shards" / src.name
            if dest.exists():
                continue
            try:
                os.link(src, dest)
            except OSError:  # another filesystem: copy
                shutil.copyfile(src, dest)
    merged = out / MERGED
    return merged if merged.exists() else merge_shards(out)


def adm_metrics(npz: Path, p: Preset, per_sample: dict | None = None) -> dict:
    """ADM's evaluator on ``npz`` against the reference batch: FID/sFID from the batch's stored statistics (the
    paper's numbers), the 10k reference images' own FID/sFID kept as ``fid_ref_images``/``sfid_ref_images``.
    ``per_sample``: filled for paired comparisons (``graft_core.adm_eval.evaluate_npz``)."""
    from benchmark.preflight import adm_reference_path
    from graft_core.adm_eval import evaluate_npz

    m = evaluate_npz(npz, adm_reference_path(), extractor=p.eval.extractor, device=job_device(),
                     batch_size=max(p.eval.batch_size, 16), per_sample=per_sample)
    out = dict(m)
    if "fid_adm_stats" in m:
        out.update(fid=m["fid_adm_stats"], sfid=m["sfid_adm_stats"], fid_ref_images=m["fid"],
                   sfid_ref_images=m["sfid"])
    return plain(out)


def _write_batch(path: Path, images, labels) -> Path:
    """An ADM-layout batch (``arr_0`` uint8 images, ``arr_1`` labels), written as the sampler writes its shards."""
    import numpy as np

    from graft_core.paths import atomic_write_bytes
    from graft_core.sample_at_scale import npz_bytes

    atomic_write_bytes(path, npz_bytes(arr_0=images, arr_1=np.asarray(labels, dtype=np.int64)))
    return path


def efficiency(p: Preset, plan_dict: dict | None) -> dict:
    """Table 4's ΔFLOPs/Δparams of a graft plan (none for the teacher or a restructured model: the latency run
    reports those)."""
    if plan_dict is None or "restructure" in plan_dict:
        return {}
    from graft_core.accounting import efficiency as eff
    from graft_core.plan import GraftPlan

    t = p.teacher
    return plain(eff(GraftPlan.from_dict(plan_dict), num_layers=t.num_layers, dim=t.hidden_size,
                      num_heads=t.num_attention_heads, seq_len=t.num_tokens))


def run_floor(ctx: StepContext) -> dict:
    """Real held-out images scored as samples. adm: the prepared val latents (8 per class), decoded with the
    SD-VAE, against the reference batch — the floor that the SD-VAE round trip and the sample count allow."""
    from graft_core.evaluate import metric_floor

    p = ctx.preset()
    if p.eval.protocol == "adm":
        images, labels = _source(p).real_images(p, "heldout", device=job_device())
        return {"metrics": adm_metrics(_write_batch(ctx.run.out / "floor.npz", images, labels), p),
                "real": "prepared val latents (heldout subset), SD-VAE decoded"}
    return {"metrics": plain(metric_floor(p))}


def run_noise(ctx: StepContext) -> dict:
    """Uniform-noise images scored as samples (what "no model" scores); adm: against the reference batch."""
    from graft_core.evaluate import noise_control

    p = ctx.preset()
    if p.eval.protocol == "adm":
        import numpy as np

        from benchmark.preflight import adm_reference_path
        from graft_core.adm_eval import batch_info
        from graft_core.sampler import make_labels

        res = batch_info(adm_reference_path(), "reference batch")["resolution"]
        e = p.eval
        images = np.random.default_rng(e.seed).integers(0, 256, size=(e.num_samples, res, res, 3), dtype=np.uint8)
        labels = make_labels(e.num_samples, p.teacher.num_classes, e.label_mode, e.seed)
        return {"metrics": adm_metrics(_write_batch(ctx.run.out / "noise.npz", images, labels), p)}
    return {"metrics": plain(noise_control(p))}


def run_locality(ctx: StepContext) -> dict:
    from graft_core.locality import band_locality
    from graft_core.sampler import make_labels

    p, cfg = ctx.preset(), ctx.config["locality"]
    labels = make_labels(cfg["num_samples"], p.teacher.num_classes, p.eval.label_mode, cfg["seed"])
    result = band_locality(get_teacher(p), teacher_cfg=p.teacher, labels=labels, ks=cfg["ks"], steps=cfg["steps"],
                           guidance_scale=cfg["guidance_scale"], seed=cfg["seed"], scheduler=cfg["scheduler"],
                           batch_size=p.eval.batch_size)
    ks = [int(k) for k in cfg["ks"]]
    by_k = {int(k): v for k, v in result.items()}
    layers = [[by_k[k][i] for k in ks] for i in range(p.teacher.num_layers)]
    return {"locality": {"k": ks, "layers": layers}, "select_k": cfg["select_k"]}


def run_activation_stats(ctx: StepContext) -> dict:
    """Per-layer statistics of one site's outputs over its stage-1 capture(s) (Table 1 i/ii). Each (layer, site)
    is read on its own (memory-mapped, chunked) and its result kept in ``out/`` so a requeued job (56 paper pairs of
    4.7 GB) resumes at the first layer not done yet."""
    import json

    from graft_core.activation_stats import activation_statistics
    from graft_core.paths import atomic_write_bytes

    c = ctx.config
    site, sigma = c["site"], float(c["outlier_sigma"])
    folders: dict[str, Path] = {}
    rows, num_samples = [], None
    for layer in c["layers"]:
        done = ctx.run.out / f"layer{int(layer):03d}.{site}.json"
        if done.exists():
            part = json.loads(done.read_text())
        else:
            rid = c["captures"][str(layer)]
            if rid not in folders:
                folders[rid] = capture_folder(ctx, rid)
            stats = activation_statistics(folders[rid], sites=(site,), layers=[int(layer)], outlier_sigma=sigma)
            part = {"num_samples": stats["num_samples"], "capture": rid, **plain(stats[site][0], finite=True)}
            atomic_write_bytes(done, (json.dumps(part, allow_nan=False) + "\n").encode())
        num_samples = part.pop("num_samples")  # the same for every layer: one teacher pass per capture
        rows.append(part)
    return {"activation_stats": {"site": site, "outlier_sigma": sigma, "num_samples": num_samples,
                                 "split": "stage1", "layers": rows}}


def run_latency(ctx: StepContext) -> dict:
    """Forward latency of the teacher and the parallel-pair model (eager and fused), and the parameter counts
    (Table 6's speed-up and Params columns), on the job's device."""
    from graft_core.accounting import count_params
    from graft_core.depth_width import measure_speedup

    p, c = ctx.preset(), ctx.config
    teacher = get_teacher(p)
    model, _ = load_model(ctx, p, c["model"])
    speed = measure_speedup(teacher, model.to(job_device()), p.teacher, batch=int(c["latency"]["batch"]),
                            repeats=int(c["latency"]["repeats"]))
    params, teacher_params = count_params(model), count_params(teacher)
    return plain({"speedup": speed["speedup"], "speedup_eager": speed["speedup_eager"], "latency": speed,
                  "depth": len(model.transformer_blocks), "teacher_depth": len(teacher.transformer_blocks),
                  "params_m": params / 1e6, "teacher_params_m": teacher_params / 1e6,
                  "params_delta_pct": 100.0 * (params - teacher_params) / teacher_params})


EXECUTORS: dict[str, Callable[[StepContext], dict]] = {
    "teacher": run_teacher, "capture": run_capture, "stage1": run_stage1, "stage2": run_stage2, "sample": run_sample,
    "eval": run_eval, "floor": run_floor, "noise": run_noise, "locality": run_locality,
    "activation_stats": run_activation_stats, "latency": run_latency,
}


def executors_of(config: dict) -> dict[str, Callable[[StepContext], dict]]:
    """The executors of a run's model family: text-to-image runs (their config carries ``pixart``, Table 5) are
    ``benchmark.steps_t2i``'s, every other run is a DiT run."""
    if "pixart" in config:
        from benchmark.steps_t2i import EXECUTORS as T2I

        return T2I
    return EXECUTORS


def execute(ctx: StepContext) -> dict:
    """The real step runner: the graft_core function of the run's kind (and model family)."""
    return executors_of(ctx.config)[ctx.kind](ctx)
