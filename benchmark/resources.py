"""Feasibility before submission: per planned step, the peak GPU memory, host memory, wall hours and disk it needs
under a profile, against what the profile declares (``gpu_mem_gb``, ``mem_gb``, ``timeout_min``, ``disk_gb``).

``check_plan(nodes, profile)`` → one ``StepFit`` per step (``--dry-run`` prints them per step kind, ``--dry-run
--json`` writes them, a real launch refuses a plan with a step that does not fit: ``refusal_lines``). Each figure
names its source in ``source``: ``measured`` (the saved-activation bytes of ``benchmarks/paper_scale.py``,
``benchmarks/results/paper_scale.json``, and parameter counts), ``paper`` (the paper's published bounds, through
``benchmark.cost``) or ``assumed`` (our arithmetic: throughputs, working-set multiples, bandwidths; each constant in
``ASSUMED`` says what it stands for).

Memory of a training step = training state (``memory_model.state_bytes``: fp32 weights, gradients, AdamW, EMA; DDP's
gradient buckets on more than one GPU) + saved activations of one micro-batch (per block: the measured DiT-XL/2 or
PixArt-Σ block with its grafted operator in place of attention/MLP, × the measured bf16/fp32 ratio under autocast;
with activation checkpointing only each block's input is kept) + a CUDA context and workspace. Inference steps:
weights + a working set of ``INFERENCE_WIDTHS`` activations of width D per token. A step whose job checkpoints and
is requeued by submitit (``resumable``) may run ``1 + max_num_timeout`` time limits.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.cost import node_cost
from benchmark.family import families, family_of
from benchmark.memory_model import SavedModel, fit, state_bytes

GB = 1e9
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "paper_scale.json"
# Our arithmetic, not measured on a GPU (source "assumed"); replace by a GPU run of benchmarks/paper_scale.py.
ASSUMED = {
    "cuda_context_gb": 3.0,  # CUDA context, cuBLAS/cuDNN workspaces, allocator slack
    "fragmentation": 1.10,  # caching-allocator fragmentation on top of the live tensors
    "inference_widths": 10,  # live activations of an inference forward per token, in units of D (MLP hidden 4D + ~6D)
    "inference_bytes": 2,  # bf16 activations at inference on a GPU
    "read_gb_per_s": 2.0,  # sustained read of a capture larger than host memory (parallel filesystem)
    "cpu_gflops_per_core": 50.0,  # fp32 matmul throughput of one CPU core (T5 encoding on a CPU job)
    "gpu_tflops": 300.0,  # sustained bf16 throughput of one H100 on a large encoder (~30 % of peak)
    "inception_gb": 4.0,  # Inception-v3 feature extraction at batch 64-256
}  # a family's own constants: ``Family.resource_constants``
# fallbacks when benchmarks/results/paper_scale.json is absent: bytes per token per layer (fp32), our arithmetic
FALLBACK_PER_TOKEN = {"dit_block": 100e3, "pixart_block": 120e3, "mha": 23e3, "mlp": 37e3}  # by probe name
OPERATOR_PROBE = {("mlp", 3): "mlp_r3", ("mlp", 6): "mlp_r6"}
SITE_PROBE = {"attn": "mha", "mlp": "mlp"}


@dataclass
class StepFit:
    kind: str
    run: str
    gpus: int
    est_gpu_mem_gb: float
    gpu_mem_gb: float | None
    est_host_mem_gb: float
    mem_gb: float | None
    est_hours: float
    timeout_hours: float
    resumable: bool
    est_disk_gb: float
    disk_gb: float | None
    fits: bool = True
    why: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)  # profile settings that would make it fit ("" = none exists)
    source: dict = field(default_factory=dict)
    row: str = ""
    settings: dict = field(default_factory=dict)  # execution settings chosen by the model (``model_settings``)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("est_gpu_mem_gb", "est_host_mem_gb", "est_hours", "timeout_hours", "est_disk_gb"):
            d[k] = round(d[k], 3)
        return d


# ------------------------------------------------------------------------------------------------ measured figures
@functools.lru_cache(maxsize=None)
def measured() -> dict:
    """The probes' summary of ``benchmarks/results/paper_scale.json`` ({} when it was never run)."""
    try:
        return json.loads(RESULTS.read_text())["summary"]
    except (OSError, ValueError, KeyError):
        return {}


def probe_model(name: str) -> tuple[SavedModel, float, str]:
    """(saved-bytes model in fp32, bf16/fp32 ratio, source) of one probe."""
    probes = measured().get("probes", {})
    p = probes.get(name)
    if not p:
        return SavedModel(FALLBACK_PER_TOKEN.get(name, FALLBACK_PER_TOKEN["mha"]), source="assumed"), 0.6, "assumed"
    if "per_token" in p:
        model = SavedModel(p["per_token"], p.get("per_token2", 0.0), p.get("shared2", 0.0))
    else:  # measured at DiT's 256 tokens only
        model = SavedModel(p["bytes_per_token_256"])
    return model, p.get("bf16_ratio", 1.0), "measured"


def probe_params(name: str) -> int | None:
    return measured().get("probes", {}).get(name, {}).get("params")


def model_params(c: dict) -> tuple[int, str]:
    """(parameters, source) of the node's model: counted by the probes, else the family's published count."""
    family = family_of(c)
    counted = measured().get("model_params", {})
    if counted.get(family.params_key):
        return int(counted[family.params_key]), "measured"
    return family.published_params, "paper"


def _probe_of(op: str, options: dict) -> str:
    return OPERATOR_PROBE.get((op, options.get("ratio")), op)


# ------------------------------------------------------------------------------------------------ per step kind
def transformer_dims(t: dict) -> tuple[int, int, int]:
    """(width, tokens, layers) of a patch transformer's hashed config (DiT's ``teacher``, PixArt's ``pixart``)."""
    width = t["num_attention_heads"] * t["attention_head_dim"]
    tokens = (t["sample_size"] // t["patch_size"]) ** 2
    return width, tokens, t["num_layers"]


def _dims(c: dict) -> tuple[int, int, int]:
    """(width, tokens, layers) of the step's model, by its family (``Family.model_dims``)."""
    return family_of(c).model_dims(c)


def _block_bytes(c: dict, batch: int, bf16: bool) -> tuple[float, str]:
    """Saved bytes of every block of the step's model for one micro-batch of ``batch``, the plan's operator in its
    layers."""
    width, tokens, layers = _dims(c)
    block, block_bf16, src = probe_model(family_of(c).block_probe)
    per_block = block.predict(batch, tokens)
    plan = c.get("plan") if isinstance(c.get("plan"), dict) else {}
    grafted = set(plan.get("layers") or []) if plan.get("operator") else set()
    delta, srcs = 0.0, {src}
    if grafted:
        orig, _, s1 = probe_model(SITE_PROBE.get(plan.get("site"), "mha"))
        new, _, s2 = probe_model(_probe_of(plan["operator"], plan.get("options") or {}))
        delta = new.predict(batch, tokens) - orig.predict(batch, tokens)
        srcs |= {s1, s2}
    total = layers * per_block + len(grafted) * delta
    return total * (block_bf16 if bf16 else 1.0), "measured" if srcs == {"measured"} else "assumed"


def fitting_accumulation(c: dict, gpus: int, settings: dict, gpu_mem_gb: float) -> int | None:
    """The smallest power-of-2 ``grad_accumulation`` at or above the profile's whose stage-2 estimate fits
    ``gpu_mem_gb`` (it must divide the per-GPU batch: same effective batch, same results); None when none does."""
    per_gpu = c["stage2"]["batch_size"] // max(1, gpus)
    k = int(settings.get("grad_accumulation", 1))
    while k <= per_gpu:
        if per_gpu % k == 0 and _stage2(c, gpus, {**settings, "grad_accumulation": k})[0] <= gpu_mem_gb:
            return k
        k *= 2
    return None


def model_settings(node, profile) -> dict:
    """Execution settings the memory model chooses for one step (empty: the profile's own fit). A stage-2 step whose
    estimate exceeds ``gpu_mem_gb`` at the profile's accumulation gets the smallest power-of-2 accumulation that
    fits: micro-batches of the same effective batch, so its results and run id are unchanged (the job reads it as
    ``ctx.settings``, from the launch, never from config.json)."""
    if node.kind not in ("stage2", "stage1_online"):
        return {}
    res, settings = profile.resources(node.kind), profile.job_settings(node.kind)
    gpus = int(res.get("gpus_per_node") or 0) * int(res.get("nodes") or 1)
    limit = res.get("gpu_mem_gb")
    if node.kind == "stage1_online":  # one GPU: the micro-batch of the teacher forward
        if not gpus or limit is None or _stage1_online(node.config, settings)[0] <= float(limit):
            return {}
        k = fitting_online_accumulation(node.config, settings, float(limit))
        return {"grad_accumulation": k} if k else {}
    if not gpus or limit is None or _stage2(node.config, gpus, settings)[0] <= float(limit):
        return {}
    k = fitting_accumulation(node.config, gpus, settings, float(limit))
    return {"grad_accumulation": k} if k else {}


def run_settings(nodes, profile) -> dict[str, dict]:
    """``model_settings`` of every step that has any, by node key (``kind/run_id``): what the jobs carry beside the
    profile's per-kind settings (``benchmark.jobs.RunUnit``)."""
    if not applies(profile):
        return {}
    return {n.key: s for n in nodes if (s := model_settings(n, profile))}


def _stage2(c: dict, gpus: int, settings: dict) -> tuple[float, float, str]:
    """(GPU GB, host GB, source) of a stage-2 step."""
    width, tokens, layers = _dims(c)
    st = c["stage2"]
    params, psrc = model_params(c)
    plan = c.get("plan") if isinstance(c.get("plan"), dict) else {}
    if plan.get("operator") and plan.get("layers"):
        new = probe_params(_probe_of(plan["operator"], plan.get("options") or {}))
        old = probe_params(SITE_PROBE.get(plan.get("site"), "mha"))
        if new and old:
            params += len(plan["layers"]) * (new - old)
    trainable = params
    if st.get("lora_rank"):  # rank-r adapters on every linear of a block: ~(8 attn + 8 cross-attn + 10 MLP)·D·r
        trainable = layers * 26 * width * st["lora_rank"]
    state = sum(state_bytes(params, trainable).values()) + (4 * trainable if gpus > 1 else 0)
    accumulation = int(settings.get("grad_accumulation", 1))
    micro = max(1, math.ceil(st["batch_size"] / max(1, gpus) / accumulation))
    if settings.get("activation_checkpointing"):
        act = micro * tokens * width * 2 * layers + _block_bytes(c, micro, st.get("bf16", True))[0] / layers
        asrc = "measured"
    else:
        act, asrc = _block_bytes(c, micro, st.get("bf16", True))
    gpu = (state + act) * ASSUMED["fragmentation"] / GB + ASSUMED["cuda_context_gb"]
    host = 4 * params / GB * 2  # the teacher stays on the host beside the student's copy before it moves
    return gpu, host, "measured" if {psrc, asrc} <= {"measured"} else "assumed"


def inference_gb(c: dict, batch: int) -> float:
    """GPU GB of an inference forward of the node's model at ``batch``: weights + a working set of activations."""
    width, tokens, _ = _dims(c)
    params, _ = model_params(c)
    act = batch * tokens * width * ASSUMED["inference_widths"] * ASSUMED["inference_bytes"]
    return (4 * params + act) / GB + ASSUMED["cuda_context_gb"]


def _capture_batch() -> int:
    from graft_core.stages.capture import capture_activations
    import inspect

    return inspect.signature(capture_activations).parameters["batch_size"].default


def _stage1(c: dict) -> tuple[float, str]:
    """GPU GB of a stage-1 step: the operator's state and saved activations at its batch, plus the two fp32 chunks
    ``graft_core.stages.distill.mse_over`` moves to the device at every check."""
    from graft_core.stages.distill import EVAL_CHUNK

    width, tokens, _ = _dims(c)
    probe = _probe_of(c["operator"], c.get("options") or {}) if c.get("site") != "block_pair" else "dit_block"
    model, bf16, src = probe_model(probe)
    batch = c["stage1"]["batch_size"]
    act = model.predict(batch, tokens) * (bf16 if c.get("bf16") else 1.0)
    state = sum(state_bytes(probe_params(probe) or 0).values())
    chunks = 2 * EVAL_CHUNK * tokens * width * 4
    return (act + state + chunks) * ASSUMED["fragmentation"] / GB + ASSUMED["cuda_context_gb"], src


def _heads(c: dict) -> int:
    return (c.get("pixart") or c.get("teacher"))["num_attention_heads"]


def stage1_online_flops(c: dict) -> float:
    """FLOPs of a ``stage1_online`` run: every epoch one teacher forward per stage-1 pair and one forward + backward
    (3× a forward) of every grafted operator; every check (``eval_every`` epochs, the last, and the untrained start)
    a teacher forward and every operator's forward over both splits. Per block and sample the teacher costs its MHA
    and MLP (``graft_core.grafting.accounting.teacher_cost``) plus PixArt's cross-attention projections (2·2·N·D²;
    its keys and values over ≤ 300 caption tokens left out)."""
    from graft_core.grafting.accounting import operator_cost, teacher_cost

    width, tokens, layers = _dims(c)
    dims = {"num_heads": _heads(c), "seq_len": tokens}
    block = sum(teacher_cost(site, width, **dims).flops_op + teacher_cost(site, width, **dims).flops_ft
                for site in ("attn", "mlp")) + (4 * tokens * width ** 2 if c.get("pixart") else 0)
    plan = c["plan"]
    op = operator_cost(plan["operator"], width, **dims, **(plan.get("options") or {}))
    ops = len(plan["layers"]) * (op.flops_op + op.flops_ft)
    st, (lo, hi), (_, end) = c["stage1"], c["ranges"]["stage1"], c["ranges"]["heldout"]
    checks = st["epochs"] // st["eval_every"] + 2
    return st["epochs"] * (hi - lo) * (layers * block + 3 * ops) + checks * (end - lo) * (layers * block + ops)


def stage1_online_hours(c: dict) -> float:
    """GPU hours of a ``stage1_online`` run on one GPU at ``ASSUMED["gpu_tflops"]``."""
    return stage1_online_flops(c) / (ASSUMED["gpu_tflops"] * 1e12) / 3600


def _stage1_online(c: dict, settings: dict) -> tuple[float, float, str]:
    """(GPU GB, host GB, source) of a ``stage1_online`` run at the micro-batch of ``settings["grad_accumulation"]``:
    the fp32 teacher, its inference working set for one micro-batch (``inference_gb``'s widths), every grafted
    layer's (input, output) pair from that forward in the forward's precision, one operator's fp32 copy of its pair
    and its saved activations (the layers train one after another), and the operators' training state (weights,
    gradients, AdamW, best weights: ``state_bytes``); host: the two splits' noised inputs and the synthetic latents
    in fp32."""
    width, tokens, _ = _dims(c)
    params, psrc = model_params(c)
    plan = c["plan"]
    batch = c["stage1"]["batch_size"]
    micro = max(1, math.ceil(batch / int(settings.get("grad_accumulation", 1))))
    act_bytes = 2  # the teacher's forward runs in bf16 autocast on a GPU (graft_core.stages.online, as a capture)
    probe = _probe_of(plan["operator"], plan.get("options") or {})
    op_model, op_bf16, asrc = probe_model(probe)
    op_params = probe_params(probe) or 0
    working = micro * tokens * width * ASSUMED["inference_widths"] * act_bytes
    pairs = len(plan["layers"]) * 2 * micro * tokens * width * act_bytes
    one_op = 2 * micro * tokens * width * 4 + op_model.predict(micro, tokens) * (op_bf16 if c.get("bf16") else 1.0)
    state = len(plan["layers"]) * sum(state_bytes(op_params).values())
    gpu = (4 * params + working + pairs + one_op + state) * ASSUMED["fragmentation"] / GB + \
        ASSUMED["cuda_context_gb"]
    pix = c.get("pixart") or c.get("teacher")
    latent = pix["in_channels"] * pix["sample_size"] ** 2 * 4
    host = 4.0 + 4 * params / GB + 3 * c["ranges"]["heldout"][1] * latent / GB
    return gpu, host, "measured" if {psrc, asrc} <= {"measured"} else "assumed"


def fitting_online_accumulation(c: dict, settings: dict, gpu_mem_gb: float) -> int | None:
    """The smallest power-of-2 ``grad_accumulation`` (dividing the stage-1 batch) whose ``stage1_online`` estimate
    fits ``gpu_mem_gb``; None when even micro-batch 1 does not."""
    batch = c["stage1"]["batch_size"]
    k = int(settings.get("grad_accumulation", 1))
    while k <= batch:
        if batch % k == 0 and _stage1_online(c, {**settings, "grad_accumulation": k})[0] <= gpu_mem_gb:
            return k
        k *= 2
    return None


def _pair_gb(c: dict) -> float:
    """Bytes of one (layer, site) capture pair a stage-1 step reads: inputs + targets in fp16."""
    width, tokens, _ = _dims(c)
    n = c.get("num_samples") or c["data"]["stage1_per_class"] * c["teacher"]["num_classes"]
    return 2 * n * tokens * width * 2 / GB


def _disk_gb(node, capture_disk) -> float:
    c = node.config
    if node.kind == "capture":
        return capture_disk(node) / GB
    if node.kind == "stage2":  # graft_core.stages.finetune keeps KEEP_CHECKPOINTS checkpoints (weights, EMA, AdamW: 16 B
        from graft_core.stages.finetune import KEEP_CHECKPOINTS  # per parameter) and writes the final EMA weights

        params, _ = model_params(c)
        return (KEEP_CHECKPOINTS * 16 + 4) * params / GB
    if node.kind == "stage1_online":  # KEEP_CHECKPOINTS checkpoints (each operator's weights, AdamW, best weights:
        from graft_core.stages.finetune import KEEP_CHECKPOINTS  # 16 B per parameter) and the final operators

        plan = c["plan"]
        op_params = probe_params(_probe_of(plan["operator"], plan.get("options") or {})) or 0
        return (KEEP_CHECKPOINTS * 16 + 4) * len(plan["layers"]) * op_params / GB
    if node.kind == "sample":  # its share of the samples as uint8 256×256×3 arrays
        return c["eval"]["num_samples"] / c["tasks"] * 256 * 256 * 3 / GB
    if node.kind == "synthetic":  # latents of its share of the pairs, fp16
        width, tokens, _ = _dims(c)
        return c["synthetic"]["num_pairs"] / c["tasks"] * tokens * 4 * 4 * 2 / GB
    return 0.1


RESUMABLE = {"stage2": "checkpoints every stage2.checkpoint_every steps and is requeued",
             "stage1_online": "checkpoints every graft_core.stages.online.CHECKPOINT_EVERY steps and is requeued",
             "sample": "resumes shard by shard", "synthetic": "resumes shard by shard",
             "encode": "resumes shard by shard"}


def step_fit(node, profile, capture_disk) -> StepFit:
    """``capture_disk(node) -> bytes``: the driver's capture-size arithmetic (``benchmark.run.capture_disk``)."""
    res = profile.resources(node.kind)
    chosen = model_settings(node, profile)
    settings = {**profile.job_settings(node.kind), **chosen}
    c = node.config
    gpus = int(res.get("gpus_per_node") or 0) * int(res.get("nodes") or 1)
    cpus = int(res.get("cpus_per_task") or 1)
    gpu_mem, mem, src = 0.0, 4.0, {"gpu_mem": "assumed", "host_mem": "assumed"}
    kind, family = node.kind, family_of(c)
    if kind == "stage2":
        gpu_mem, mem, s = _stage2(c, gpus, settings)
        src.update(gpu_mem=s)
    elif kind == "stage1":
        gpu_mem, s = _stage1(c)
        src.update(gpu_mem=s)
        from graft_core.stages.distill import IN_MEMORY_BYTES  # a larger pair is memory-mapped: page cache, not the job's

        pair = _pair_gb(c)
        mem = 4.0 + (pair if pair * GB <= IN_MEMORY_BYTES else 0.0)
    elif kind == "stage1_online":
        gpu_mem, mem, s = _stage1_online(c, settings)
        src.update(gpu_mem=s, host_mem="assumed")
    elif kind == "capture":
        gpu_mem = inference_gb(c, _capture_batch())
        mem = 8.0
    elif kind in ("sample", "locality", "latency", "synthetic"):
        batch = (c.get("synthetic", {}).get("batch_size") if kind == "synthetic" else
                 c.get("eval", {}).get("batch_size", 64) if kind == "sample" else 2)
        cfg = 2 if kind in ("sample", "synthetic") else 1
        gpu_mem = inference_gb(c, batch * cfg)
    elif kind in ("eval", "floor", "noise"):
        gpu_mem = ASSUMED["inception_gb"]
    hours_gpu, _ = node_cost(node, gpu=True)
    hours = hours_gpu / max(1, gpus)
    src["hours"] = "paper" if kind in family.published_cost_kinds else "assumed"
    own = family.step_resources(kind, c, gpus, cpus)
    gpu_mem, mem, hours = own.get("gpu_mem", gpu_mem), own.get("mem", mem), own.get("hours", hours)
    if not gpus:
        gpu_mem = 0.0
    why = []
    if kind == "stage1":
        pair = _pair_gb(c)
        if pair > float(res.get("mem_gb") or 0):  # larger than the job's memory: re-read from disk every epoch
            reads = pair * c["stage1"]["epochs"] / ASSUMED["read_gb_per_s"] / 3600
            if reads > hours:
                hours, src["hours"] = reads, "assumed"
            why.append(f"re-reads its {pair:,.0f} GB capture {c['stage1']['epochs']}× "
                       f"({pair * c['stage1']['epochs'] / 1e3:,.0f} TB, {reads:,.1f} h at "
                       f"{ASSUMED['read_gb_per_s']:g} GB/s)")
    timeout_h = float(res.get("timeout_min") or 0) / 60
    resumable = kind in RESUMABLE
    retries = int(res.get("slurm", {}).get("max_num_timeout") or 0) if resumable else 0
    fit_ = StepFit(kind=kind, run=node.run_id, gpus=gpus, est_gpu_mem_gb=gpu_mem, gpu_mem_gb=res.get("gpu_mem_gb"),
                   est_host_mem_gb=mem, mem_gb=res.get("mem_gb"), est_hours=hours, timeout_hours=timeout_h,
                   resumable=resumable, est_disk_gb=own.get("disk", _disk_gb(node, capture_disk)),
                   disk_gb=res.get("disk_gb"), why=why,
                   source={**src, "disk": "assumed" if kind != "capture" else "measured"}, settings=chosen)
    if chosen:
        fit_.why.append(f"the memory model chose {', '.join(f'{kind}.{k}={v}' for k, v in chosen.items())} "
                        f"(profile: {profile.job_settings(kind).get('grad_accumulation', 1)}; same effective batch)")
    _judge(fit_, node, profile, settings, retries)
    return fit_


def _judge(f: StepFit, node, profile, settings: dict, retries: int) -> None:
    """Set ``fits``, the reasons and the profile settings that would make the step fit."""
    problems = []
    if f.gpu_mem_gb is not None and f.gpus and f.est_gpu_mem_gb > f.gpu_mem_gb:
        problems.append(f"GPU memory {f.est_gpu_mem_gb:.1f} GB > gpu_mem_gb {f.gpu_mem_gb}")
        f.fix.append(_memory_fix(f, node, profile, settings))
    if f.mem_gb is not None and f.est_host_mem_gb > float(f.mem_gb):
        problems.append(f"host memory {f.est_host_mem_gb:.1f} GB > mem_gb {f.mem_gb}")
        f.fix.append(f"{f.kind}.mem_gb={math.ceil(f.est_host_mem_gb * 1.2)}")
    limit = f.timeout_hours * (1 + retries)
    if f.est_hours > limit:
        over = f"{f.est_hours:,.1f} h > {'the time limit' if not retries else f'{1 + retries} time limits of'} " \
               f"{f.timeout_hours:g} h"
        problems.append(over + ("" if f.resumable else " (not resumable: no mid-run checkpoint)"))
        if f.kind == "teacher" and not f.gpus:
            f.fix.append("teacher.gpus_per_node=1")
        else:
            f.fix.append(f"{f.kind}.timeout_min={math.ceil(f.est_hours * 60 * 1.2 / (1 + retries))}")
    if f.disk_gb is not None and f.est_disk_gb > float(f.disk_gb):
        problems.append(f"disk {f.est_disk_gb:,.0f} GB > disk_gb {f.disk_gb}")
        f.fix.append(f"disk_gb={math.ceil(f.est_disk_gb)}")
    f.fits = not problems
    f.why = problems + f.why if problems else f.why
    if f.resumable and f.est_hours > f.timeout_hours:
        f.why.append(f"runs {math.ceil(f.est_hours / max(f.timeout_hours, 1e-9))} time limits: "
                     f"{RESUMABLE[f.kind]}")


def _memory_fix(f: StepFit, node, profile, settings: dict) -> str:
    """The smallest profile change that brings the step under ``gpu_mem_gb``, or a note that none exists."""
    c = node.config
    if f.kind == "stage2":  # no accumulation fits (``model_settings`` chose one otherwise)
        ckpt = {**settings, "activation_checkpointing": True, "grad_accumulation": 1}
        k = None if settings.get("activation_checkpointing") else fitting_accumulation(c, f.gpus, ckpt, f.gpu_mem_gb)
        if k:
            return "stage2.activation_checkpointing=true" + (f", stage2.grad_accumulation={k}" if k > 1 else "")
        return "no profile setting fits (even micro-batch 1 with activation checkpointing)"
    if f.kind == "stage1_online":
        return "none: even micro-batch 1 (stage1_online.grad_accumulation = the stage-1 batch) does not fit"
    if f.kind == "capture":
        return f"none: the capture batch ({_capture_batch()}) is fixed in graft_core/stages/capture.py"
    if f.kind == "stage1":
        return "none: graft_core/stages/distill.py mse_over moves two fp32 chunks of EVAL_CHUNK samples to the GPU"
    return f"{f.kind}.gpu_mem_gb (a larger GPU)"


def check_plan(nodes, profile, capture_disk) -> list[StepFit]:
    return [step_fit(n, profile, capture_disk) for n in nodes]


def plan_disk(fits: list[StepFit], profile) -> dict:
    """The plan's disk (every step's outputs kept) against the profile's ``disk_gb`` (the defaults')."""
    total = sum(f.est_disk_gb for f in fits)
    disk = profile.resources("collect").get("disk_gb")
    return {"est_disk_gb": round(total, 1), "disk_gb": disk, "fits": disk is None or total <= float(disk)}


def summary_lines(fits: list[StepFit]) -> list[str]:
    """One line per step kind (the worst step of that kind): GPUs, memory, hours, disk, and what does not fit."""
    lines = []
    by_kind: dict[str, list[StepFit]] = {}
    for f in fits:
        by_kind.setdefault(f.kind, []).append(f)
    for kind, group in by_kind.items():
        worst = max(group, key=lambda f: (not f.fits, f.est_gpu_mem_gb, f.est_hours))
        bad = sum(not f.fits for f in group)
        mem = f"GPU mem {worst.est_gpu_mem_gb:.1f}/{worst.gpu_mem_gb if worst.gpu_mem_gb is not None else '?'} GB" \
            if worst.gpus else "no GPU"
        resumable = " (resumable, requeued)" if worst.resumable else ""
        line = (f"  {kind:<9} ×{len(group):<4} {worst.gpus} GPU  {mem}, {worst.est_hours:,.2f}/"
                f"{worst.timeout_hours:g} h{resumable}, disk {worst.est_disk_gb:,.1f} GB "
                f"[{'fits' if not bad else f'{bad} do not fit'}; {worst.source.get('gpu_mem')}/"
                f"{worst.source.get('hours')}]")
        lines.append(line)
        if bad:
            lines.append(f"      {worst.run}: {'; '.join(worst.why)} → {', '.join(worst.fix)}")
        for f in group:
            if f.settings:
                lines.append(f"      {f.run}: {', '.join(f'{kind}.{k}={v}' for k, v in f.settings.items())} chosen "
                             f"by the memory model ({f.est_gpu_mem_gb:.1f} GB; same effective batch)")
    return lines


def refusal_lines(fits: list[StepFit], plan: dict | None = None) -> list[str]:
    """One line per step that does not fit, naming the profile setting that would make it fit."""
    out = [f"{f.kind}/{f.run}: {'; '.join(f.why)} → {', '.join(f.fix)}" for f in fits if not f.fits]
    if plan and not plan["fits"]:
        out.append(f"plan: disk {plan['est_disk_gb']:,.0f} GB > disk_gb {plan['disk_gb']} → "
                   f"disk_gb={math.ceil(plan['est_disk_gb'])}")
    return out


# ------------------------------------------------------------------------------------------------ the command line
def applies(profile) -> bool:
    """The check runs for profiles that declare their GPUs' memory (``gpu_mem_gb``): the GPU profiles."""
    return profile is not None and any(profile.resources(k).get("gpu_mem_gb")
                                       for k in ("stage2", "stage1", "stage1_online"))


def dry_run_lines(nodes, profile, capture_disk) -> list[str]:
    fits = check_plan(nodes, profile, capture_disk)
    plan = plan_disk(fits, profile)
    bad = sum(not f.fits for f in fits)
    return ([f"feasibility (profile {profile.name}: est. peak GPU memory vs gpu_mem_gb, hours vs time limit, disk "
             f"vs disk_gb; sources measured/paper/assumed; --json for every step):"] + summary_lines(fits) +
            [f"  plan disk {plan['est_disk_gb']:,.0f} GB vs disk_gb {plan['disk_gb']}"
             f"{'' if plan['fits'] else ' — does not fit'}",
             f"  {len(fits) - bad} of {len(fits)} steps fit" + (f"; {bad} do not: a real launch refuses them"
                                                                   if bad else "")])


def dry_run_document(nodes, todo: set[str], profile, preset: str, capture_disk) -> dict:
    """``--dry-run --json``: every planned step with its estimates, the plan's disk, the assumed constants."""
    fits = check_plan(nodes, profile, capture_disk)
    steps = [{**f.to_dict(), "todo": n.key in todo} for f, n in zip(fits, nodes)]
    plan = plan_disk(fits, profile)
    return {"preset": preset, "profile": profile.name, "fits": all(f.fits for f in fits) and plan["fits"],
            "plan": plan, "steps": steps,
            "assumed": {**ASSUMED, **{k: v for f in families() for k, v in f.resource_constants.items()}},
            "measured_from": str(RESULTS.relative_to(RESULTS.parents[2])) if measured() else None}


def launch_refusal(nodes, profile, capture_disk) -> str | None:
    """The lines a real launch stops with (None: every step to launch fits)."""
    fits = check_plan(nodes, profile, capture_disk)
    lines = refusal_lines(fits, plan_disk(fits, profile))
    if not lines:
        return None
    return "\n".join(lines + [f"{sum(not f.fits for f in fits)} step(s) do not fit profile {profile.name}; "
                              f"nothing submitted (set the named keys with --slurm, see --dry-run)"])
