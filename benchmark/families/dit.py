"""The DiT family, the default: a class-conditional diffusers ``DiTTransformer2DModel`` on ImageNet latents (paper)
or on the digits (tiny, micro), every run's body carrying ``teacher`` (or, for the reference runs, no model at all).

Its rows are the planner's own (``benchmark.dag.Planner``); besides the shared step kinds it runs the ImageNet
protocol's own: the ADM sampling array (``sample``), the metric floor and noise control (``floor``, ``noise``), the
locality analysis and the activation statistics (Figure 2, Table 1 i/ii). Depth→width (Table 6) restructures its
blocks (site ``block``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from benchmark.cost import CPU_S, PAPER_GPU_H, search_probes
from benchmark.family import Family, register_family
from benchmark.step_context import (StepContext, capture_folder, capture_pairs, job_device, load_model,
                                    preset_from_config)
from graft_core.config import from_dict, plain, stable_hash
from graft_core.presets import DataConfig, Preset, TeacherConfig
from graft_core.models.teacher_id import WEIGHTS_FILE, teacher_dirs, teacher_key

_TEACHERS: dict[str, Any] = {}


def get_teacher(preset: Preset, *, train_if_missing: bool = False, progress: bool = False):
    """The preset's teacher on the job's device, loaded once per process (callers must not modify it:
    assemble/finetune copy it)."""
    from graft_core.models.teacher import load_teacher

    key = stable_hash({"teacher": preset.teacher, "data": preset.data})
    if key not in _TEACHERS:
        from graft_core.models.teacher import use_fast_attention

        model = load_teacher(preset, train_if_missing=train_if_missing, progress=progress)
        _TEACHERS[key] = use_fast_attention(model.to(job_device()), job_device())
    return _TEACHERS[key]


def graft_plans(plan_dict: dict | list):
    """The ``GraftPlan``s of a step config's plan: one dict, or a list of them (a per-layer choice of operators)."""
    from graft_core.grafting.plan import GraftPlan

    return [GraftPlan.from_dict(d) for d in (plan_dict if isinstance(plan_dict, list) else [plan_dict])]


def build_student(teacher, plan_dict: dict | list | None, stage1_dirs: dict[int, Path] | None):
    """Teacher copy (no plan) or ``distill.assemble`` of the plan. Operators without stage-1 weights (random-init
    rows) keep ``assemble``'s initialisation: layer ``i`` under seed ``0 + i``, whatever the preset's seeds; the
    global RNG is left untouched."""
    if plan_dict is None:
        return copy.deepcopy(teacher).eval()
    if isinstance(plan_dict, dict) and plan_dict.get("restructure") == "parallel_pairs":  # Table 6: per block pair
        from graft_core.stages.depth_width import assemble_pairs

        return assemble_pairs(teacher, stage1_dirs)
    from graft_core.stages.distill import assemble
    from graft_core.models.teacher import use_fast_attention

    device = next(teacher.parameters()).device  # new operators are built on the CPU
    return use_fast_attention(assemble(teacher, graft_plans(plan_dict), stage1_dirs).to(device), device)


def teacher_record(ctx: StepContext) -> dict:
    p = ctx.preset()
    model = get_teacher(p, train_if_missing=True, progress=ctx.progress)
    key = teacher_key(p.teacher, p.data)
    found = None if p.teacher.pretrained else next(
        (str(d) for d in teacher_dirs(key) if (d / WEIGHTS_FILE).exists()), None)
    return {"teacher_key": key, "pretrained": p.teacher.pretrained, "weights_dir": found,
            "num_params": sum(t.numel() for t in model.parameters())}


def evaluate(ctx: StepContext) -> dict:
    """``in_process``: sample and score here. ``adm``: merge the sampling array's shards and score them."""
    from graft_core.evaluation.evaluate import evaluate_model
    from graft_core.evaluation.sampler import precision

    p, c = ctx.preset(), ctx.config
    if p.eval.protocol == "adm":
        merged = _merge_sample_runs(ctx, c["samples"])
        plan = _model_plan(ctx, c["model"])
        per_sample: dict = {}
        used = sorted({ctx.dep_metrics("sample", rid).get("sampling_precision", "unrecorded") for rid in c["samples"]})
        record = {"metrics": adm_metrics(merged, p, per_sample), "efficiency": efficiency(p, plan),
                  "model": c["model"], "samples": str(merged.relative_to(ctx.run.folder)),
                  "sampling_precision": ",".join(used)}
        return _keep_per_sample(ctx, record, per_sample, merged)
    model, plan = load_model(ctx, c["model"])
    device = job_device()
    per_sample: dict = {}  # features + per-draw FIDs for paired comparisons at summary time (benchmark.comparisons)
    metrics = evaluate_model(model, p, decode=_source(p).decoder(p, device), per_sample=per_sample)
    record = {"metrics": plain(metrics), "efficiency": efficiency(p, plan), "model": c["model"],
              "sampling_precision": precision(p.eval.bf16, next(model.parameters()).device)}
    return _keep_per_sample(ctx, record, per_sample)


def _keep_per_sample(ctx: StepContext, record: dict, per_sample: dict, merged: Path | None = None) -> dict:
    """Write the eval's per-sample features and per-draw FIDs next to its metrics and record what pairs it
    (``graft_core.metrics.paired``); the sharded path's record is built here from the merged batch."""
    if merged is not None and "bootstrap" in per_sample:
        from graft_core.evaluation.sample_at_scale import sharded_pairing

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
    from graft_core.data.imagenet import load_vae
    from graft_core.evaluation.sample_at_scale import sample_shards
    from graft_core.evaluation.sampler import precision

    p, c = ctx.preset(), ctx.config
    e, device = p.eval, job_device()
    model, _ = load_model(ctx, c["model"])
    vae = None if _source(p).pixel_space else load_vae(device=device)
    report = sample_shards(model, p.teacher, ctx.run.out, vae=vae, num_samples=e.num_samples,
                           shard_size=e.shard_size, steps=e.steps, guidance_scale=e.guidance_scale,
                           scheduler=e.scheduler, global_seed=e.seed, batch_size=e.batch_size,
                           label_mode=e.label_mode, rank=c["task"], world_size=c["tasks"],
                           bf16=e.bf16, progress=ctx.progress,
                           model_key=stable_hash(c["model"]), guidance_channels=e.guidance_channels)
    return {"task": c["task"], "tasks": c["tasks"], "shards": report["sampled"] + report["skipped"],
            "sampled": report["sampled"], "seconds": report["seconds"], "device": str(device),
            "sampling_precision": precision(e.bf16, device)}


def _merge_sample_runs(ctx: StepContext, sample_ids: list[str]) -> Path:
    """Hard-link (or copy) every task's shards into this run's ``out/`` and merge them into ``samples.npz``."""
    import os
    import shutil

    from graft_core.evaluation.sample_at_scale import MERGED, merge_shards

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
    ``per_sample``: filled for paired comparisons (``graft_core.evaluation.adm_eval.evaluate_npz``)."""
    from benchmark.preflight import adm_reference_path
    from graft_core.evaluation.adm_eval import evaluate_npz

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

    from graft_core.runtime.paths import atomic_write_bytes
    from graft_core.evaluation.sample_at_scale import npz_bytes

    atomic_write_bytes(path, npz_bytes(arr_0=images, arr_1=np.asarray(labels, dtype=np.int64)))
    return path


def efficiency(p: Preset, plan_dict: dict | list | None) -> dict:
    """Table 4's ΔFLOPs/Δparams of a graft plan (none for the teacher or a restructured model: the latency run
    reports those); of several plans (a per-layer choice of operators) the sums, which the columns' definition
    (Σ over replaced layers) makes exact."""
    if plan_dict is None or "restructure" in plan_dict:
        return {}
    from graft_core.grafting.accounting import efficiency as eff

    t = p.teacher
    parts = [eff(plan, num_layers=t.num_layers, dim=t.hidden_size, num_heads=t.num_attention_heads,
                 seq_len=t.num_tokens) for plan in graft_plans(plan_dict)]
    if len(parts) == 1:
        return plain(parts[0])
    keys = ("d_flops_op", "d_flops_ft", "d_param")
    total = {k: None if any(q[k] is None for q in parts) else sum(q[k] for q in parts) for k in keys}
    return plain({**total, "flops_source": "; ".join(dict.fromkeys(q["flops_source"] for q in parts)),
                  "paper_d_flops_op": None, "paper_d_flops_ft": None})


def run_floor(ctx: StepContext) -> dict:
    """Real held-out images scored as samples. adm: the prepared val latents (8 per class), decoded with the
    SD-VAE, against the reference batch — the floor that the SD-VAE round trip and the sample count allow."""
    from graft_core.evaluation.evaluate import metric_floor

    p = ctx.preset()
    if p.eval.protocol == "adm":
        images, labels = _source(p).real_images(p, "heldout", device=job_device())
        return {"metrics": adm_metrics(_write_batch(ctx.run.out / "floor.npz", images, labels), p),
                "real": "prepared val latents (heldout subset), SD-VAE decoded"}
    return {"metrics": plain(metric_floor(p))}


def run_noise(ctx: StepContext) -> dict:
    """Uniform-noise images scored as samples (what "no model" scores); adm: against the reference batch."""
    from graft_core.evaluation.evaluate import noise_control

    p = ctx.preset()
    if p.eval.protocol == "adm":
        import numpy as np

        from benchmark.preflight import adm_reference_path
        from graft_core.evaluation.adm_eval import batch_info
        from graft_core.evaluation.sampler import make_labels

        res = batch_info(adm_reference_path(), "reference batch")["resolution"]
        e = p.eval
        images = np.random.default_rng(e.seed).integers(0, 256, size=(e.num_samples, res, res, 3), dtype=np.uint8)
        labels = make_labels(e.num_samples, p.teacher.num_classes, e.label_mode, e.seed)
        return {"metrics": adm_metrics(_write_batch(ctx.run.out / "noise.npz", images, labels), p)}
    return {"metrics": plain(noise_control(p))}


def run_locality(ctx: StepContext) -> dict:
    from graft_core.grafting.locality import band_locality
    from graft_core.evaluation.sampler import make_labels

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

    from graft_core.stages.activation_stats import activation_statistics
    from graft_core.runtime.paths import atomic_write_bytes

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


def latency(ctx: StepContext) -> dict:
    """Forward latency of the teacher and the parallel-pair model (eager and fused), and the parameter counts
    (Table 6's speed-up and Params columns), on the job's device."""
    from graft_core.grafting.accounting import count_params
    from graft_core.stages.depth_width import measure_speedup

    p, c = ctx.preset(), ctx.config
    teacher = get_teacher(p)
    model, _ = load_model(ctx, c["model"])
    speed = measure_speedup(teacher, model.to(job_device()), p.teacher, batch=int(c["latency"]["batch"]),
                            repeats=int(c["latency"]["repeats"]))
    params, teacher_params = count_params(model), count_params(teacher)
    return plain({"speedup": speed["speedup"], "speedup_eager": speed["speedup_eager"], "latency": speed,
                  "depth": len(model.transformer_blocks), "teacher_depth": len(teacher.transformer_blocks),
                  "params_m": params / 1e6, "teacher_params_m": teacher_params / 1e6,
                  "params_delta_pct": 100.0 * (params - teacher_params) / teacher_params})


def run_search(ctx: StepContext, probe_factory: Callable | None = None) -> dict:
    """A layer search (``graft_core.grafting.selection``) over the candidates' stage-1 runs. Every held-out-loss evaluation
    is cached by id under ``<preset>/probes/`` (id = hash of the teacher, data, probe config and the swapped
    (layer, stage-1 run) pairs), so a search at another budget, or a requeued one, reuses every evaluation it shares.
    ``probe_factory(ctx, lookup) -> probe`` replaces the real held-out loss (the fake steps)."""
    from graft_core.grafting.selection import NEEDS_PROBE, Candidate, SelectionProblem, select

    p, c = ctx.preset(), ctx.config
    s = c["search"]
    candidates, lookup = [], {}
    for cand in c["candidates"]:
        record = ctx.dep_metrics("stage1", cand["stage1"])
        candidates.append(Candidate(int(cand["layer"]), cand["op"], float(cand["saved_flops"]), record.get("val_mse")))
        lookup[(int(cand["layer"]), cand["op"])] = cand
    stats = {"evaluated": 0, "reused": 0}
    probe = None
    if s["strategy"] in NEEDS_PROBE:
        probe = _cached(ctx, (probe_factory or _held_out_probe)(ctx, lookup), lookup, stats)
    problem = SelectionProblem(num_layers=p.teacher.num_layers, candidates=tuple(candidates), primary=s["primary"],
                               layers=int(s["layers"]), flops=float(s["flops"]), probe=probe)
    selection = select(s["strategy"], problem)
    if not selection.swaps:
        raise ValueError(f"search {s['strategy']} chose no layer: none of its candidates saves FLOPs at this size; "
                         f"give it an operator that does")
    chosen = [[layer, lookup[(layer, op)]["operator"], lookup[(layer, op)]["options"]] for layer, op in selection.swaps]
    saved = sum(lookup[(layer, op)]["saved_flops"] for layer, op in selection.swaps)
    return {"assignment": chosen, "layers": list(selection.layers), "saved_flops": saved, "probes": stats,
            "selection": plain(selection.to_dict(), finite=True)}


def _cached(ctx: StepContext, probe: Callable, lookup: dict, stats: dict) -> Callable:
    """``probe`` behind the store's probe cache (one JSON file per evaluation id, written atomically)."""
    import json

    from graft_core.runtime.paths import atomic_write_json

    c = ctx.config
    folder = ctx.store.root / "probes"
    identity = {"teacher": c["teacher"], "data": c["data"], "probe": c["search"]["probe"], "site": c["search"]["site"]}

    def cached(swaps) -> float:
        key = stable_hash({**identity, "swaps": [[layer, lookup[(layer, op)]["stage1"]] for layer, op in swaps]})
        path = folder / f"{key}.json"
        if path.exists():
            try:
                value = float(json.loads(path.read_text())["loss"])
                stats["reused"] += 1
                return value
            except (ValueError, KeyError, TypeError):
                pass  # a damaged entry is evaluated again and rewritten
        value = float(probe(swaps))
        atomic_write_json(path, {"loss": value, "swaps": [[layer, op] for layer, op in swaps]})
        stats["evaluated"] += 1
        return value

    return cached


def _held_out_probe(ctx: StepContext, lookup: dict) -> Callable:
    """The real probe: the teacher with the swaps' stage-1 operators assembled in, scored by ``graft_core.grafting.probe``."""
    from graft_core.config import from_dict
    from graft_core.grafting.probe import ProbeConfig, probe_batch, probe_loss

    p, c = ctx.preset(), ctx.config
    cfg = from_dict(ProbeConfig, c["search"]["probe"])
    teacher, batch, device = get_teacher(p), probe_batch(p, cfg), job_device()

    def probe(swaps) -> float:
        if not swaps:
            return probe_loss(teacher, p, batch, batch_size=cfg.batch_size, device=device)
        by_op: dict[str, dict] = {}
        for layer, op in swaps:
            cand = lookup[(layer, op)]
            entry = by_op.setdefault(op, {"site": c["search"]["site"], "operator": cand["operator"], "layers": [],
                                          "options": cand["options"]})
            entry["layers"].append(layer)
        dirs = {layer: ctx.dep("stage1", lookup[(layer, op)]["stage1"]).out for layer, op in swaps}
        student = build_student(teacher, list(by_op.values()), dirs)
        return probe_loss(student, p, batch, batch_size=cfg.batch_size, device=device)

    return probe


def teacher_present(config: dict) -> bool:
    """A trained teacher is shipped (graft_core/assets) or cached; a pretrained one is assumed downloaded."""
    teacher = from_dict(TeacherConfig, config["teacher"])
    if teacher.pretrained:
        return True
    key = teacher_key(teacher, from_dict(DataConfig, config["data"]))
    return any((d / WEIGHTS_FILE).exists() for d in teacher_dirs(key))


def node_cost(node, gpu: bool) -> tuple[float, int]:
    """(cost in GPU-h or CPU-min, stage-2 samples) of one DiT run."""
    c, kind = node.config, node.kind
    samples = 0
    if kind == "stage2":
        samples = c["stage2"]["steps"] * c["stage2"]["batch_size"]
    if gpu:
        if kind == "stage2":
            return PAPER_GPU_H["stage2_per_50k_x_256"] * samples / (50_000 * 256), samples
        if kind == "stage1":
            per = "stage1_block_pair_200ep" if c["site"] == "block_pair" else "stage1_per_layer_200ep"
            return PAPER_GPU_H[per] * c["stage1"]["epochs"] / 200, 0
        if kind == "capture":  # one teacher pass + writing the pairs (the paper's figure is for all 2·layers pairs)
            n = c["data"]["stage1_per_class"] * c["teacher"]["num_classes"]
            share = len(c["pairs"]) / (2 * c["teacher"]["num_layers"]) if c.get("pairs") else 1.0
            return (PAPER_GPU_H["capture_per_8k"] * share + PAPER_GPU_H["teacher_pass_per_8k"]) * n / 8000, 0
        if kind == "sample":  # one task of the sampling array: its share of the shards
            e = c["eval"]
            share = e["num_samples"] / c["tasks"]
            return PAPER_GPU_H["sample_per_50k_250steps"] * share * e["steps"] / (50_000 * 250), 0
        if kind == "eval" and "samples" in c:  # adm protocol: the metrics job after the sampling array
            return PAPER_GPU_H["adm_metrics"] * c["eval"]["num_samples"] / 50_000, 0
        if kind == "eval":
            e = c["eval"]
            return PAPER_GPU_H["eval_per_50k_250steps"] * e["num_samples"] * e["steps"] / (50_000 * 250), 0
        if kind in ("floor", "noise"):
            return PAPER_GPU_H["reference"], 0
        if kind == "search":
            probe = c["search"]["probe"] or {}
            forwards = probe.get("num_samples", 0) * probe.get("timesteps", 0)
            return search_probes(c) * PAPER_GPU_H["probe_per_1k_forwards"] * forwards / 1000, 0
        return PAPER_GPU_H.get(kind, 0.0), samples
    # CPU minutes
    s = CPU_S["job_overhead"]
    tokens = (c.get("teacher", {}).get("sample_size", 16) // c.get("teacher", {}).get("patch_size", 2)) ** 2 \
        if isinstance(c.get("teacher"), dict) else 64
    scale = tokens / 64
    if kind == "teacher" and not teacher_present(c):
        t = c["teacher"]
        s += t["train_steps"] * CPU_S["teacher_step_64"] * t["train_batch_size"] / 64 * scale
    elif kind == "stage1":
        n = c["data"]["stage1_per_class"] * c["teacher"]["num_classes"]
        steps = c["stage1"]["epochs"] * -(-n // c["stage1"]["batch_size"])
        if c["site"] == "block_pair":  # two of the model's blocks, forward + backward, on min(batch, n) samples
            s += (steps * CPU_S["stage2_step_64"] * 2 / c["teacher"]["num_layers"]
                  * min(n, c["stage1"]["batch_size"]) / 64 * scale)
        else:
            s += steps * CPU_S["stage1_step"] * max(1.0, c["stage1"]["batch_size"] / 64) * scale
    elif kind == "stage2":
        s += c["stage2"]["steps"] * CPU_S["stage2_step_64"] * c["stage2"]["batch_size"] / 64 * scale
    elif kind in ("eval", "sample"):
        e = c["eval"]
        cfg = 2 if e["guidance_scale"] != 1.0 else 1
        share = 1 / c["tasks"] if kind == "sample" else 0 if "samples" in c else 1  # adm metrics: no sampling
        s += share * e["num_samples"] * e["steps"] * CPU_S["sample_per_image_step"] * cfg / 2 * scale
    elif kind == "capture":
        s += CPU_S["capture"]
    elif kind == "activation_stats":
        s += CPU_S["activation_stats"]
    elif kind == "latency":
        s += CPU_S["latency"]
    elif kind in ("floor", "noise"):
        s += CPU_S["reference"]
    elif kind == "search":
        probe = c["search"]["probe"] or {}
        forwards = probe.get("num_samples", 0) * probe.get("timesteps", 0)
        s += search_probes(c) * (forwards * CPU_S["probe_forward"] * scale + CPU_S["probe_assemble"])
    elif kind == "locality":
        loc = c["locality"]
        s += loc["num_samples"] * loc["steps"] * CPU_S["sample_per_image_step"] * 1.5 * scale
    return s / 60.0, samples


class DitFamily(Family):
    name = "dit"
    marker = ""  # the default: runs with a ``teacher`` key, and the reference runs without a model
    sites = ("attn", "mlp", "block")
    executors = {"sample": run_sample, "floor": run_floor, "noise": run_noise, "locality": run_locality,
                 "activation_stats": run_activation_stats, "search": run_search}

    def capture_bytes(self, node) -> int:
        """``graft_core.stages.capture_size``: the run's pairs, or all of them, of one split."""
        from graft_core.stages.capture_size import capture_bytes

        c = node.config
        return capture_bytes(preset_from_config(c), capture_pairs(c), dtype=c["dtype"])

    def cost(self, node, gpu: bool) -> tuple[float, int]:
        return node_cost(node, gpu)

    def teacher_present(self, config: dict) -> bool:
        return teacher_present(config)

    def train_steps(self, config: dict) -> int:
        return config["teacher"]["train_steps"]

    block_probe, params_key, published_params = "dit_block", "dit_xl_2", 675_000_000  # DiT-XL/2
    published_cost_kinds = ("stage2", "stage1", "capture")

    def model_dims(self, config: dict) -> tuple[int, int, int]:
        from benchmark.resources import transformer_dims

        return transformer_dims(config["teacher"])

    def teacher(self, ctx: StepContext, *, train_if_missing: bool = False):
        return get_teacher(ctx.preset(), train_if_missing=train_if_missing, progress=ctx.progress)

    def teacher_record(self, ctx: StepContext) -> dict:
        return teacher_record(ctx)

    def sizes(self, ctx: StepContext):
        """The checkpoint's width, from its config file (no model loaded)."""
        from graft_core.models.structure import pretrained_width

        return pretrained_width(ctx.preset().teacher)

    def build_student(self, teacher, plan: dict | list | None, dirs):
        return build_student(teacher, plan, dirs)

    def evaluate(self, ctx: StepContext) -> dict:
        return evaluate(ctx)

    def latency(self, ctx: StepContext) -> dict:
        return latency(ctx)


register_family(DitFamily)
