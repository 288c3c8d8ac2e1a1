"""Shared helpers of the performance benchmarks: command line, machine record, interleaved timing, tables, JSON.

Timing protocol (used by every script):

* every call runs under ``torch.inference_mode()`` (the callers' job) and is bracketed by ``torch.cuda.synchronize``
  on a GPU, timed with ``time.perf_counter``;
* each case gets ``warmup`` untimed calls, then ``repeats`` timed calls where ``repeats`` is derived from the warm-up
  duration and a per-case time budget (``min_repeats`` ≤ repeats ≤ ``max_repeats``) so that long cases (MHA at 16k
  tokens: seconds per call) stay inside the script's budget and short ones get many samples;
* the cases being compared are timed **round-robin** (A, B, C, A, B, C, …) rather than one after the other, so that a
  change of machine load during the run hits all of them alike; the reported figure is the **median**;
* the JSON record holds every individual time, the machine (CPU model, cores, threads, torch version, device), the
  load average before and after, and the share of the cores the process actually got (``cpu_share``: process CPU
  time / (wall time × threads); well below 1 means other processes were competing for the cores).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from graft_core.config import plain
from graft_core.runtime.provenance import git_rev

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the benchmarks build every model from config; never touch the network


# ------------------------------------------------------------------------------------------------------ command line
def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark script shares."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds-scale settings (smoke test); writes <name>-quick.json")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"folder for the JSON record (default {RESULTS_DIR})")
    p.add_argument("--tag", default="", help="suffix of the JSON file name (<name>-<tag>.json), e.g. to keep a "
                                             "partial run beside the full one")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default, "
                                                             "normally the number of cores)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: fp32 on CPU, bf16 on a GPU")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="what the tables and ratios use: wall-clock (default; what a user waits for) or the "
                        "process CPU time of each call (CPU only, implies --threads 1 unless given: on a machine "
                        "shared with other jobs it measures the work done rather than the time spent waiting for "
                        "a core). Both are recorded in the JSON either way")
    return p


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclasses.dataclass
class Context:
    """What ``setup`` resolved: device, dtype, and the clocks that measure contention over the whole run."""

    args: argparse.Namespace
    device: Any
    dtype: Any
    dtype_name: str
    threads: int
    clock: str
    start_wall: float
    start_cpu: float
    load_before: tuple[float, float, float] | None

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize(self.device)


def setup(args: argparse.Namespace) -> Context:
    import torch

    clock = getattr(args, "clock", "wall")
    if clock == "cpu" and not args.threads:
        args.threads = 1  # CPU time of one thread = its work; several threads would add OpenMP spin-waiting
    if args.threads:
        torch.set_num_threads(args.threads)
    want = args.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch.cuda.is_available() is False")
    device = torch.device(want)
    if clock == "cpu" and device.type != "cpu":
        raise SystemExit("error: --clock cpu measures CPU work; use --clock wall on a GPU")
    name = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    return Context(args=args, device=device, dtype=getattr(torch, DTYPES[name]), dtype_name=name,
                   threads=torch.get_num_threads(), clock=clock, start_wall=time.perf_counter(),
                   start_cpu=time.process_time(), load_before=_loadavg())


# ------------------------------------------------------------------------------------------------------ machine
def _loadavg() -> tuple[float, float, float] | None:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:  # pragma: no cover
        pass
    return None


def machine_info(ctx: Context | None = None) -> dict:
    """CPU model, cores, threads, memory, torch / diffusers versions, device, git revision."""
    import torch

    try:
        import diffusers

        diffusers_version = diffusers.__version__
    except ImportError:  # pragma: no cover
        diffusers_version = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count()
    info = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "mem_total_gib": _mem_total_gib(),
        "torch": torch.__version__,
        "diffusers": diffusers_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git_rev": git_rev(),
        "cuda_available": torch.cuda.is_available(),
    }
    if ctx is not None:
        info["device"] = str(ctx.device)
        info["dtype"] = ctx.dtype_name
        if ctx.is_cuda:
            props = torch.cuda.get_device_properties(ctx.device)
            info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                           "cuda": torch.version.cuda}
    return info


def describe_machine(info: dict) -> str:
    """One line: 'Intel(R) Xeon(R) Processor, 2 cores, 2 threads, torch 2.14.1, cpu fp32'."""
    dev = info.get("gpu", {}).get("name") or info.get("device", "cpu")
    return (f"{info['cpu_model']}, {info['usable_cpus']} cores, {info['torch_threads']} threads, "
            f"torch {info['torch']}, {dev} {info.get('dtype', '')}").strip()


def contention(ctx: Context) -> dict:
    """Load average before/after and the share of ``threads`` cores the process got over the run."""
    wall = time.perf_counter() - ctx.start_wall
    cpu = time.process_time() - ctx.start_cpu
    share = cpu / (wall * ctx.threads) if wall > 0 and ctx.threads else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    before = ctx.load_before
    loaded = bool(before and before[0] > 0.75 * cores)
    return {"loadavg_before": before, "loadavg_after": _loadavg(), "wall_s": round(wall, 2),
            "process_cpu_s": round(cpu, 2), "cpu_share": None if share is None else round(share, 3),
            "machine_loaded": loaded,
            "note": ("other processes were using the cores (1-min load average "
                     f"{before[0] if before else '?'} on {cores} cores before the run): timings are noisy and "
                     "absolute figures pessimistic; ratios of round-robin timings are more robust") if loaded else
                    "machine looked idle at the start of the run"}


# ------------------------------------------------------------------------------------------------------ timing
@dataclasses.dataclass
class Timing:
    """Timed calls of one case (seconds). ``times`` are on the run's clock (``clock``); both clocks are kept."""

    times: list[float]
    warmup_times: list[float]
    wall_times: list[float] = dataclasses.field(default_factory=list)
    cpu_times: list[float] = dataclasses.field(default_factory=list)
    clock: str = "wall"

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    def to_dict(self) -> dict:
        t = self.times
        out = {"clock": self.clock, "median_s": self.median, "min_s": min(t), "max_s": max(t),
               "mean_s": statistics.fmean(t), "repeats": len(t), "times_s": [round(x, 6) for x in t],
               "warmup_s": [round(x, 6) for x in self.warmup_times]}
        if self.wall_times:
            out["wall_median_s"] = statistics.median(self.wall_times)
            out["wall_times_s"] = [round(x, 6) for x in self.wall_times]
        if self.cpu_times:
            out["cpu_median_s"] = statistics.median(self.cpu_times)
            out["cpu_times_s"] = [round(x, 6) for x in self.cpu_times]
        return out


def time_once(fn: Callable[[], Any], ctx: Context | None = None) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    if ctx is not None:
        ctx.sync()
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    if ctx is not None:
        ctx.sync()
    return time.perf_counter() - start, time.process_time() - cpu


def measure(cases: dict[str, Callable[[], Any]], ctx: Context | None = None, *, warmup: int = 1,
            min_repeats: int = 2, max_repeats: int = 15, budget_s: float = 4.0,
            log: Callable[[str], None] | None = None) -> dict[str, Timing]:
    """Round-robin timing of ``cases`` (name → zero-argument callable); see the module docstring.

    ``repeats`` per case = clamp(ceil(budget_s / last warm-up wall time), min_repeats, max_repeats) (the budget is
    wall-clock whatever ``ctx.clock``). Cases with fewer repeats drop out of the rotation first.
    """
    clock = ctx.clock if ctx is not None else "wall"
    warm: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for i in range(max(1, warmup)):
        for name, fn in cases.items():
            wall, cpu = time_once(fn, ctx)
            warm[name].append((wall, cpu))
            if log and i == 0:
                log(f"  warm-up {name}: {fmt_time(wall)} wall, {fmt_time(cpu)} cpu")
    reps = {name: int(min(max_repeats, max(min_repeats, math.ceil(budget_s / max(w[-1][0], 1e-9)))))
            for name, w in warm.items()}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for r in range(max(reps.values())):
        for name, fn in cases.items():
            if r < reps[name]:
                times[name].append(time_once(fn, ctx))
    pick = 1 if clock == "cpu" else 0
    return {name: Timing(times=[t[pick] for t in times[name]], warmup_times=[t[pick] for t in warm[name]],
                         wall_times=[t[0] for t in times[name]], cpu_times=[t[1] for t in times[name]], clock=clock)
            for name in cases}


# ------------------------------------------------------------------------------------------------------ output
def fmt_time(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_flops(flops: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f} FLOP"


def fmt_num(x: float | None, digits: int = 2, suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "–"
    return f"{x:.{digits}f}{suffix}"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-markdown table (also readable in a terminal)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def target(value: float | None, threshold: float, op: str = ">=") -> dict:
    """``{"value", "target", "met"}`` — a measured figure against its goal (``>=`` or ``<=``)."""
    met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
    return {"value": value, "target": f"{op} {threshold:g}", "met": met}


def write_result(ctx: Context, name: str, *, settings: dict, results: Any, summary: dict | None = None,
                 table: str | None = None, notes: Sequence[str] = ()) -> Path:
    """``<out>/<name>.json`` (``<name>-quick.json`` under ``--quick``), written atomically; returns the path."""
    payload = {
        "benchmark": name,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": bool(ctx.args.quick),
        "machine": machine_info(ctx),
        "contention": contention(ctx),
        "clock": ctx.clock,
        "settings": settings,
        "summary": summary or {},
        "results": results,
        "notes": list(notes),
        "table": table,
    }
    out = Path(ctx.args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = getattr(ctx.args, "tag", "")
    path = out / f"{name}{'-' + tag if tag else ''}{'-quick' if ctx.args.quick else ''}.json"
    from graft_core.runtime.paths import atomic_write_bytes  # the project's one atomic writer (fsync, 0644)

    atomic_write_bytes(path, (json.dumps(plain(payload, finite=True), indent=2, allow_nan=False) + "\n").encode())
    return path


def header(ctx: Context, title: str) -> None:
    info = machine_info(ctx)
    print(f"# {title}")
    print(f"machine: {describe_machine(info)}; load average {ctx.load_before}; clock: {ctx.clock}"
          + (" (process CPU time per call)" if ctx.clock == "cpu" else ""), flush=True)


def footer(ctx: Context, path: Path) -> None:
    c = contention(ctx)
    print(f"\nwall {c['wall_s']:.1f} s; cpu share {c['cpu_share']}; load average {c['loadavg_before']} → "
          f"{c['loadavg_after']}" + ("  [machine was loaded: timings are noisy]" if c["machine_loaded"] else ""))
    print(f"wrote {path}", flush=True)


def log(msg: str) -> None:
    print(msg, flush=True)


def splice(text: str, block: str, begin: str, end: str) -> str:
    """``text`` with the lines from ``begin`` to ``end`` (markers included) replaced by ``block``."""
    if begin not in text or end not in text:
        raise SystemExit(f"no '{begin}' … '{end}' block to replace: add the two markers where the section goes")
    head, rest = text.split(begin, 1)
    return head + block + rest.split(end, 1)[1]


def generated_block_main(argv, *, doc: str, render: Callable[[Path | None], str], results: Path | None, begin: str,
                         end: str, target: str) -> int:
    """The command line of a script that renders a generated markdown block (from stored results when ``results``
    is a folder): print it, or ``--write FILE`` to replace the block between ``begin`` and ``end`` in FILE
    (``target`` names the usual one)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if results is not None:
        p.add_argument("--results", type=Path, default=results,
                       help=f"folder of the stored results (default {results})")
    p.add_argument("--write", type=Path, help=f"a markdown file whose marked block is replaced ({target})")
    args = p.parse_args(argv)
    block = render(getattr(args, "results", None))
    if args.write:
        args.write.write_text(splice(args.write.read_text(), block, begin, end))
        print(f"wrote {args.write}")
    else:
        print(block)
    return 0
