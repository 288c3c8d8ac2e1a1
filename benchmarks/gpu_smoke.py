"""GPU check of the paper path at the paper's widths, one PASS/FAIL line per phase, in ≤ 6 minutes on one H100.

Why: CI has no GPU, so the CUDA side of the paper preset (models on the job's device, bf16 autocast, TF32, NCCL,
memory at DiT-XL/2 and PixArt-Σ width) is only proven when a GPU machine is lent, for a few minutes and without
network. Each phase records the device its tensors were actually on (a module's parameters after the phase, CUDA
peak memory > 0; for the rehearsal's runs, the device fields of each run's metrics and ``environment.json``'s
``cuda_peak_bytes``) and is judged by that, never by whether a GPU was visible. Random weights everywhere: Inception,
VAE and T5 weights cannot travel to such a machine. The JSON is rewritten after every measurement, so a run stopped
at its time limit still returns what it measured.

Phases (``--phases``; all by default, in this order):

- ``environment``: versions, ``nvidia-smi``, the GPU's properties.
- ``nccl``: a one-rank NCCL group, all-reduce of a CUDA tensor (what stage 2's DDP needs first).
- ``probes``: one block at real width (``benchmarks.paper_scale``'s builders: DiT-XL/2, width 1152 × 256 tokens;
  PixArt-Σ, width 1152 at 4,096 and 16,384 tokens, 300 caption tokens), batch 1 and 2, fp32 and bf16 autocast:
  CUDA peak memory, saved-activation bytes, seconds per forward+backward step.
- ``stage2``: ``graft_core.stages.finetune.Finetune`` on the whole DiT-XL/2 (28 blocks, width 1152, random weights,
  the teacher resident on the GPU as the driver keeps it) at 32 per GPU with the paper's settings (bf16, AdamW, EMA)
  for the control, Hyena-X in 50 % of the layers and Mamba-2 in all of them: peak memory, seconds per step (10 steps
  minus 1, so the first step's warm-up cancels) and the loss;
  an out-of-memory is recorded as ``fits: false`` and fails the line (the paper profile would fail the same way).
- ``table6``: fused vs eager parallel-pair DiT-XL/2 (``graft_core.stages.depth_width.measure_speedup``) with TF32 on
  and off: max |Δ| against the tolerance, speed-up.
- ``sampling``: DiT-XL/2 sampling throughput at batch 64 with CFG, bf16 vs fp32/TF32 (the recorded precision).
- ``rehearsal``: the paper-smoke rehearsal of one table3 row through ``python -m benchmark.run --executor local``
  (fake prerequisites made by ``benchmark.fakes.prerequisites``), every run judged by the device it recorded.

Budget (FLOPs, H100 at ~400 TFLOP/s bf16 and ~50 TFLOP/s fp32): the largest probe (PixArt-Σ block, 2 × 16,384
tokens) is ~3.7 TFLOP forward (28·d² linear + 4·N·d attention FLOPs per token), ~11 TFLOP a step, 0.2 s in fp32;
a DiT-XL/2 stage-2 step at 32 images is 32 × 118 GFLOP × 3 ≈ 11 TFLOP (< 0.1 s; Mamba-2's PyTorch scan a few times
that); sampling is 128 × 118 GFLOP ≈ 15 TFLOP per step × 10 steps × 2 precisions. The GPU arithmetic is under a
minute; model building, the rehearsal's subprocesses and imports take the rest (~3-4 minutes in all: the rehearsal
alone took 124 s on a 2-core CPU, 37 s of it making the fakes; ``--quick --allow-cpu`` without it, 5-7 s).
``benchmarks/gpu_wheels.sh`` gathers the wheels this needs beyond the lent machine's image.

    python -m benchmarks.gpu_smoke                                   # writes benchmarks/results/gpu_smoke.json
    python -m benchmarks.gpu_smoke --quick --allow-cpu               # reduced widths on a CPU (what the test runs)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark.store import Store  # noqa: E402
from benchmarks.common import RESULTS_DIR, machine_info  # noqa: E402
from graft_core.config import plain  # noqa: E402

ROW = "attn-hyena_x-interleaved50"
GPU_KINDS = ("teacher", "capture", "stage1", "stage2", "sample", "eval", "latency")  # when the launcher gave a GPU
TARGET_SECONDS = 360


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one smoke: the paper's (``FULL``) or a reduced one that runs on a CPU in seconds (``QUICK``)."""

    width: int
    heads: int
    dit_layers: int
    dit_sample_size: int  # latent side: 32 → 256 tokens at patch 2
    dit_points: tuple[tuple[int, int], ...]  # (batch, tokens) of the DiT block probes
    pixart_points: tuple[tuple[int, int], ...]
    text_tokens: int
    stage2_batch: int
    stage2_steps: int  # timed steps after the first; 1 + 9 = 10 gives one loss-history entry (finetune.LOG_EVERY)
    sample_batch: int
    sample_steps: int
    timed_steps: int  # timed forward+backward steps per probe (after one warm-up)
    latency_repeats: int


FULL = Scale(width=1152, heads=16, dit_layers=28, dit_sample_size=32, dit_points=((1, 256), (2, 256)),
             pixart_points=((1, 4096), (2, 4096), (1, 16384), (2, 16384)), text_tokens=300, stage2_batch=32,
             stage2_steps=9, sample_batch=64, sample_steps=10, timed_steps=3, latency_repeats=10)
QUICK = Scale(width=64, heads=4, dit_layers=2, dit_sample_size=8, dit_points=((1, 16), (2, 16)),
              pixart_points=((1, 64), (2, 256)), text_tokens=8, stage2_batch=2, stage2_steps=9, sample_batch=2,
              sample_steps=2, timed_steps=1, latency_repeats=2)
STAGE2_VARIANTS = {"control": None, "hyena_x-interleaved50": ("attn", "hyena_x", "interleaved50"),
                   "mamba2-full": ("attn", "mamba2", "full")}


@dataclasses.dataclass
class Smoke:
    scale: Scale
    device: "torch.device"  # noqa: F821
    work: Path
    row: str
    real: bool
    allow_cpu: bool
    dit: tuple | None = None  # (preset, teacher) built once: a DiT-XL/2 takes seconds to initialise


# ------------------------------------------------------------------------------------------------------ devices
def gpu_peak() -> int:
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() and torch.cuda.is_initialized() else 0


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def used(module) -> str:
    """The device a module's tensors were on: what a phase used, not what it could see."""
    return str(next(module.parameters()).device)


def release() -> None:
    """Give the memory of the tensors just dropped (``del``) back, so that the next measurement's peak is its own."""
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def on_gpu(device: str, peak_bytes: int) -> bool:
    """A phase ran on the GPU when its tensors were on a CUDA device and it allocated GPU memory."""
    return device.startswith("cuda") and peak_bytes > 0


@contextlib.contextmanager
def tf32(enabled: bool):
    import torch

    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# ------------------------------------------------------------------------------------------------------ phases
def phase_environment(s: Smoke) -> Iterator[dict]:
    import torch

    rec = {"device": str(s.device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available()}
    for name in ("torchvision", "diffusers", "submitit", "torch_fidelity", "cleanfid", "peft", "transformers",
                 "huggingface_hub", "numpy", "scipy", "pandas"):
        try:
            rec[name] = getattr(__import__(name), "__version__", "?")
        except ImportError as err:
            rec[name] = f"missing ({err})"
    if s.device.type == "cuda":
        props = torch.cuda.get_device_properties(s.device)
        rec.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count)
        torch.ones(1, device=s.device)  # the phase touches the GPU it describes
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        rec["nvidia_smi"] = (out.stdout or out.stderr).strip()
    rec["peak_gpu_bytes"] = gpu_peak()
    yield rec


def phase_nccl(s: Smoke) -> Iterator[dict]:
    """A one-process NCCL group: init, all-reduce a CUDA tensor, destroy."""
    import torch
    import torch.distributed as dist

    if s.device.type != "cuda":
        yield {"device": "cpu", "skipped": "NCCL needs a CUDA device"}
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        x = torch.ones(4, device=s.device)
        dist.all_reduce(x)
        if x.sum().item() != 4:
            raise RuntimeError(f"all_reduce gave {x.tolist()}")
    finally:
        dist.destroy_process_group()
    yield {"device": str(x.device), "peak_gpu_bytes": gpu_peak()}


def train_step_probe(module, inputs: Callable, batch: int, tokens: int, dtype: str, device, steps: int) -> dict:
    """Saved-activation bytes of one forward, then ``steps`` timed forward+backward steps after one warm-up; CUDA
    peak memory over them (weights and inputs included) and the activation peak above what was resident before."""
    import torch

    from benchmark.memory_model import saved_bytes

    torch.manual_seed(0)
    args, kwargs = inputs(batch, tokens)
    args = tuple(a.detach().to(device).requires_grad_(a.requires_grad) for a in args)
    kwargs = {k: v.to(device) for k, v in kwargs.items()}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    reset_peak()
    resident = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    with autocast:
        rec = saved_bytes(module, *args, backward=True, **kwargs)  # the warm-up step
    times = []
    for _ in range(steps):
        module.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        with autocast:
            out = module(*args, **kwargs)
        (out[0] if isinstance(out, tuple) else out).float().sum().backward()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = gpu_peak()
    module.zero_grad(set_to_none=True)
    return {"saved_bytes": rec["saved_bytes"], "seconds_per_step": round(sorted(times)[len(times) // 2], 4),
            "peak_gpu_bytes": peak, "activation_peak_bytes": max(0, peak - resident) if peak else 0,
            "device": used(module)}


def phase_probes(s: Smoke) -> Iterator[dict]:
    from benchmarks import paper_scale

    sc = s.scale
    blocks = {"dit_block": (lambda: paper_scale.dit_block(sc.width, sc.heads), sc.dit_points),
              "pixart_block": (lambda: paper_scale.pixart_block(sc.width, sc.heads, sc.text_tokens),
                               sc.pixart_points)}
    for name, (build, points) in blocks.items():
        module, inputs = build()
        module = module.to(s.device)
        for batch, tokens in points:
            for dtype in ("fp32", "bf16"):
                t0 = time.time()
                with tf32(False):  # fp32 is fp32 here; bf16 autocast is what stage 2 trains in
                    rec = train_step_probe(module, inputs, batch, tokens, dtype, s.device, sc.timed_steps)
                yield {"probe": name, "width": sc.width, "batch": batch, "tokens": tokens, "dtype": dtype,
                       "params": sum(p.numel() for p in module.parameters()), **rec,
                       "seconds": round(time.time() - t0, 2)}
        del module
        release()


def dit_setup(s: Smoke):
    """The paper preset with a random-weight DiT-XL/2-shaped teacher (reduced in ``QUICK``) on the smoke's device,
    behind the fast attention the jobs use; built once per smoke and kept resident, as the driver keeps its teacher."""
    if s.dit is not None:
        return s.dit
    from graft_core.models.teacher import build_dit, use_fast_attention
    from graft_core.presets import get_preset

    preset = get_preset("paper")
    sc = s.scale
    changes = {"pretrained": None}
    if sc is not FULL:
        changes.update(num_layers=sc.dit_layers, num_attention_heads=sc.heads, attention_head_dim=sc.width // sc.heads,
                       sample_size=sc.dit_sample_size)
    preset = dataclasses.replace(preset, teacher=dataclasses.replace(preset.teacher, **changes))
    teacher = use_fast_attention(build_dit(preset.teacher).to(s.device).eval(), s.device)
    s.dit = preset, teacher
    return s.dit


def phase_stage2(s: Smoke) -> Iterator[dict]:
    import numpy as np
    import torch

    from benchmark.families.dit import build_student
    from graft_core.grafting.plan import make_plan
    from graft_core.stages.finetune import Finetune

    preset, teacher = dit_setup(s)
    cfg, sc = preset.teacher, s.scale
    gen = torch.Generator().manual_seed(0)
    n = 2 * sc.stage2_batch
    data = (torch.randn(n, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen),
            torch.randint(0, cfg.num_classes, (n,), generator=gen), np.arange(n))
    # stop_after < steps: no checkpoint or final weights are written (10.8 GB each at DiT-XL/2)
    stage2 = dataclasses.replace(preset.stage2, batch_size=sc.stage2_batch, steps=sc.stage2_steps + 2,
                                 checkpoint_every=10**9, warmup_steps=1)
    for name, plan in STAGE2_VARIANTS.items():
        t0 = time.time()
        rec = {"variant": name, "batch_per_gpu": sc.stage2_batch, "bf16": stage2.bf16, "steps": sc.stage2_steps,
               "layers": cfg.num_layers, "width": cfg.num_attention_heads * cfg.attention_head_dim}
        plan_dict = None if plan is None else make_plan(plan[0], plan[1], plan[2], num_layers=cfg.num_layers).to_dict()
        student = build_student(teacher, plan_dict, None)
        reset_peak()
        try:
            # seconds per step = (time of 1 + k steps − time of 1 step) / k: the first step's warm-up (kernel
            # selection, allocator growth) cancels out
            seconds = {}
            for stop in (1, 1 + sc.stage2_steps):
                ema_model, metrics = Finetune(student, preset, out_dir=s.work / "stage2" / f"{name}-{stop}",
                                              stage2=stage2, progress=False, device=str(s.device), stop_after=stop,
                                              data=data)()
                seconds[stop] = metrics["seconds_this_call"]
                del ema_model
                release()
            rec.update(fits=True, device=metrics["device"], final_loss=metrics["final_loss"],
                       seconds_per_step=round((seconds[1 + sc.stage2_steps] - seconds[1]) / sc.stage2_steps, 4),
                       first_step_seconds=round(seconds[1], 3), trainable_params=metrics["trainable_params"])
        except torch.cuda.OutOfMemoryError as err:  # a finding (the variant does not fit at this batch), not a crash
            rec.update(fits=False, device=str(s.device), error=f"OutOfMemoryError: {str(err).splitlines()[0][:300]}")
        rec.update(peak_gpu_bytes=gpu_peak(), seconds=round(time.time() - t0, 2))
        del student
        release()
        yield rec


def phase_table6(s: Smoke) -> Iterator[dict]:
    from graft_core.stages.depth_width import FUSED_RTOL, assemble_pairs, measure_speedup

    preset, teacher = dit_setup(s)
    student = assemble_pairs(teacher, None).to(s.device)
    for on in (True, False):
        t0 = time.time()
        reset_peak()
        rec = {"tf32": on and s.device.type == "cuda", "batch": 2, "rtol": FUSED_RTOL["tf32" if on else "fp32"]}
        with tf32(on):
            try:
                out = measure_speedup(teacher, student, preset.teacher, batch=2, repeats=s.scale.latency_repeats)
                rec.update(within_tolerance=True, fused_max_abs_diff=out["fused_max_abs_diff"],
                           speedup=round(out["speedup"], 3), device=out["device"])
            except RuntimeError as err:  # measure_speedup refuses a difference above the tolerance: the finding
                if "fused pairs disagree" not in str(err):
                    raise
                rec.update(within_tolerance=False, error=str(err), device=used(student))
        rec.update(peak_gpu_bytes=gpu_peak(), seconds=round(time.time() - t0, 2))
        yield rec
    del student
    release()


def phase_sampling(s: Smoke) -> Iterator[dict]:
    import torch

    from graft_core.evaluation.sampler import precision, sample

    preset, teacher = dit_setup(s)
    sc = s.scale
    labels = torch.arange(sc.sample_batch) % preset.teacher.num_classes
    for bf16 in (True, False):
        with tf32(True):  # the official DiT sampler's fp32 setting
            sample(teacher, labels[:2], teacher=preset.teacher, scheduler="ddim", steps=1, batch_size=2,
                   bf16=bf16, device=s.device)  # warm-up (kernels, autotuning)
            reset_peak()
            sync(s.device)
            t0 = time.perf_counter()
            out = sample(teacher, labels, teacher=preset.teacher, scheduler="ddim", steps=sc.sample_steps,
                         guidance_scale=1.5, batch_size=sc.sample_batch, bf16=bf16, device=s.device)
            sync(s.device)
            seconds = time.perf_counter() - t0
            yield {"sampling_precision": precision(bf16, s.device), "batch": sc.sample_batch, "cfg": True,
                   "steps": sc.sample_steps, "seconds": round(seconds, 3),
                   "images_per_second_per_step": round(sc.sample_batch * sc.sample_steps / seconds, 2),
                   "finite": bool(torch.isfinite(out).all()), "device": used(teacher), "peak_gpu_bytes": gpu_peak()}


def step_lines(results: Path) -> list[dict]:
    """One record per run of the rehearsal: kind, the device it used, seconds, state. The device comes from what the
    run recorded: every ``device`` field of its metrics (each phase it ran) and ``environment.json``'s
    ``cuda_peak_bytes`` (> 0: it put tensors on the GPU; seeing one is not enough)."""
    out = []
    store = Store(results, "paper-smoke")
    for run in (r for kind in store.kinds() for r in store.runs(kind) if r.status.exists()):
        status = store.read_status(run)
        env = store.read_environment(run)
        dev = env.get("device") or {}
        metrics = store.read_metrics(run) or {}
        phases = recorded_devices(metrics)
        peak = dev.get("cuda_peak_bytes", 0)
        gpu = peak > 0 and all(d.startswith("cuda") for d in phases.values())
        out.append({"step": f"{run.kind}/{run.run_id}", "kind": run.kind, "ok": status.get("state") == "done",
                    "device": dev.get("name", "?") if gpu else "cpu", "peak_gpu_gb": round(peak / 1e9, 3),
                    "given_gpu": bool(env.get("cuda_visible_devices")), "phases": phases,
                    "sampling_precision": metrics.get("sampling_precision"),
                    "seconds": metrics.get("seconds_step"), "error": status.get("error")})
    return out


def recorded_devices(metrics, prefix: str = "") -> dict[str, str]:
    """``{path: device}`` of every ``device`` field in a run's metrics (e.g. ``device``, ``capture.device``)."""
    out = {}
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            path = f"{prefix}{key}"
            if key == "device" and isinstance(value, str):
                out[path] = value
            else:
                out.update(recorded_devices(value, f"{path}."))
    return out


def phase_rehearsal(s: Smoke) -> Iterator[dict]:
    from benchmark.fakes.prerequisites import prepare_rehearsal

    t0 = time.time()
    env = dict(os.environ) if s.real else prepare_rehearsal(s.work / "fakes")
    yield {"what": "real prerequisites (environment)" if s.real else "fakes + benchmark.prepare", "device": "-",
           "seconds": round(time.time() - t0, 2), "gpu_required": False}
    results = s.work / "results"
    cmd = [sys.executable, "-m", "benchmark.run", "table3", "--preset", "paper-smoke", "--rows", s.row,
           "--executor", "local", "--jobs", "1", "--results-dir", str(results), "--quiet"]
    if s.device.type != "cuda":  # the profile's GPUs would stop every real step on a machine without one
        cmd += ["--slurm", "gpus_per_node=0"]
    t0 = time.time()
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    yield {"what": "benchmark.run", "ok": run.returncode == 0, "device": "-", "seconds": round(time.time() - t0, 2),
           "gpu_required": False, "error": run.stderr[-2000:] if run.returncode else None}
    for r in step_lines(results):
        given = r.pop("given_gpu")  # the launcher handed this run a GPU (its profile asked for one)
        r["gpu_required"] = given and r["kind"] in GPU_KINDS
        yield r


PHASES: dict[str, Callable[[Smoke], Iterator[dict]]] = {
    "environment": phase_environment, "nccl": phase_nccl, "probes": phase_probes, "stage2": phase_stage2,
    "table6": phase_table6, "sampling": phase_sampling, "rehearsal": phase_rehearsal}


# ------------------------------------------------------------------------------------------------------ judging
def judge(rec: dict, allow_cpu: bool) -> dict:
    """``ok`` of one record: no error, and (unless ``allow_cpu``) a phase that needs the GPU ran on it."""
    # an out-of-memory or a fused-vs-eager miss fails too: the paper run at these settings would fail the same way
    ok = rec.get("ok", True) and not rec.get("error")
    if rec.get("gpu_required", True) and not rec.get("skipped") and not allow_cpu:
        device = rec.get("device", "cpu")
        if rec.get("step", "").count("/"):  # a rehearsal run: judged by what it recorded (step_lines)
            gpu = device != "cpu"
        else:
            gpu = on_gpu(device, rec.get("peak_gpu_bytes", 0))
        if not gpu:
            ok = False
            rec["error"] = rec.get("error") or f"ran on {device}, not the GPU"
    if rec.get("skipped") and not allow_cpu:
        ok = False
    rec["ok"] = bool(ok)
    return rec


def line(rec: dict) -> str:
    keys = ("phase", "probe", "variant", "batch", "tokens", "dtype", "tf32", "sampling_precision", "what")
    what = rec.get("step") or " ".join(f"{k}={rec[k]}" if isinstance(rec[k], bool) else str(rec[k])
                                       for k in keys if k in rec)
    extra = []
    if rec.get("peak_gpu_bytes"):
        extra.append(f"peak {rec['peak_gpu_bytes'] / 2**30:.2f} GiB")
    if rec.get("seconds_per_step") is not None:
        extra.append(f"{rec['seconds_per_step']:.3f} s/step")
    if rec.get("fits") is False:
        extra.append("does not fit")
    if rec.get("error") and not rec["ok"]:
        extra.append(str(rec["error"]).strip().splitlines()[-1][:160])
    secs = "-" if rec.get("seconds") is None else f"{rec['seconds']:.1f} s"
    return f"{'PASS' if rec['ok'] else 'FAIL'} {what[:58]:<58} {str(rec.get('device', '-'))[:12]:<12} {secs:>8}  " \
           + "; ".join(extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", nargs="+", choices=list(PHASES), default=list(PHASES),
                        help="phases to run, in the order given (default: all)")
    parser.add_argument("--quick", action="store_true", help="reduced widths and token counts (CPU, seconds)")
    parser.add_argument("--row", default=ROW, help=f"table3 row to rehearse (default {ROW})")
    parser.add_argument("--workdir", type=Path, help="where fakes and results go (default: a new temporary folder)")
    parser.add_argument("--real", action="store_true", help="rehearse with the prerequisites the environment points "
                                                            "at (HF_HOME, GRAFTBENCH_IMAGENET, ...) instead of fakes")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU where no GPU is found and do not "
                                                                 "fail phases for it")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu_smoke.json",
                        help="JSON record, rewritten after every measurement")
    args = parser.parse_args(argv)
    import torch

    start = time.time()
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_smoke: no CUDA device here; run it on a GPU machine, or add --allow-cpu --quick to run it on the "
              "CPU", file=sys.stderr)
        return 2
    smoke = Smoke(scale=QUICK if args.quick else FULL, device=torch.device("cuda:0" if cuda else "cpu"),
                  work=args.workdir or Path(tempfile.mkdtemp(prefix="graftbench-gpu-smoke-")), row=args.row,
                  real=args.real, allow_cpu=args.allow_cpu)
    records: list[dict] = []
    machine = machine_info()

    def save(passed=None) -> None:  # after every record: a smoke cut short by its time limit still leaves its JSON
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(plain({
            "machine": machine, "scale": dataclasses.asdict(smoke.scale), "quick": args.quick,
            "row": args.row, "phases": args.phases, "passed": passed, "seconds": round(time.time() - start, 1),
            "target_seconds": TARGET_SECONDS, "records": records}, finite=True), indent=2))
        tmp.replace(args.out)

    save()
    for name in args.phases:
        t0 = time.time()
        try:
            for rec in PHASES[name](smoke):
                rec = judge({"phase": name, **rec, "seconds": rec.get("seconds", round(time.time() - t0, 2))},
                            args.allow_cpu)
                records.append(rec)
                print(line(rec), flush=True)
                save()
                t0 = time.time()
        except Exception as err:  # noqa: BLE001 — reported as a failed phase; the next phase still runs
            rec = {"phase": name, "ok": False, "device": "-", "seconds": round(time.time() - t0, 2),
                   "error": f"{type(err).__name__}: {err}"}
            records.append(rec)
            print(line(rec), flush=True)
            save()
    passed = all(r["ok"] for r in records)
    total = time.time() - start
    print(f"{'PASS' if passed else 'FAIL'} gpu smoke: {len(records)} checks in {total:.0f} s "
          f"(target ≤ {TARGET_SECONDS} s) → {args.out}")
    save(passed)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
