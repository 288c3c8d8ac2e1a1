"""GPU check of the paper path: the paper-smoke rehearsal of one table3 row on one GPU, one pass/fail line per step.

Why: CI has no GPU, so the CUDA side of the paper preset (models on the job's device, bf16 autocast, TF32, NCCL) is
only proven when a GPU machine is at hand. This script makes the fake prerequisites (``benchmark.fakes.prerequisites``; or uses
real ones when ``--real`` and the environment point at them), prepares the latents with ``benchmark.prepare``, runs
``python -m benchmark.run table3 --preset paper-smoke --rows <row> --executor local`` and reports every step run
with the device it actually used (``environment.json``'s ``cuda_peak_bytes`` > 0: it put tensors on the GPU; seeing
one is not enough) and its seconds, after a one-GPU NCCL process-group check; the JSON is rewritten after every step.
Budget: under 8 minutes on one H100/H200. ``benchmarks/gpu_wheels.sh`` gathers the wheels it needs beyond a bare
torch image (for a GPU machine without network).

    python -m benchmarks.gpu_smoke                       # writes benchmarks/results/gpu_smoke.json
    python -m benchmarks.gpu_smoke --allow-cpu           # the same on a CPU (device checks reported, not failed)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark.fakes.prerequisites import prepare_rehearsal  # noqa: E402
from benchmark.store import Store  # noqa: E402
from benchmarks.common import RESULTS_DIR, machine_info  # noqa: E402
from graft_core.config import plain  # noqa: E402

ROW = "attn-hyena_x-interleaved50"


def nccl_check() -> dict:
    """A one-process NCCL group: init, all-reduce a CUDA tensor, destroy (what stage 2's DDP needs first)."""
    import torch
    import torch.distributed as dist

    t0 = time.time()
    if not torch.cuda.is_available():
        return {"step": "nccl", "ok": False, "device": "cpu", "seconds": 0.0, "error": "no CUDA device"}
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    try:
        dist.init_process_group("nccl", rank=0, world_size=1)
        x = torch.ones(4, device="cuda:0")
        dist.all_reduce(x)
        ok = bool(x.sum().item() == 4)
        dist.destroy_process_group()
        return {"step": "nccl", "ok": ok, "device": "cuda:0", "seconds": round(time.time() - t0, 2)}
    except Exception as err:  # noqa: BLE001 — reported as a failed step
        return {"step": "nccl", "ok": False, "device": "cuda:0", "seconds": round(time.time() - t0, 2),
                "error": f"{type(err).__name__}: {err}"}


def step_lines(results: Path) -> list[dict]:
    """One record per run of the rehearsal: kind, device (from the run's environment.json), seconds, state."""
    out = []
    store = Store(results, "paper-smoke")
    for run in (r for kind in store.kinds() for r in store.runs(kind) if r.status.exists()):
        status = store.read_status(run)
        dev = store.read_environment(run).get("device") or {}
        metrics = store.read_metrics(run) or {}
        used = dev.get("cuda_peak_bytes", 0) > 0  # the step put tensors on the GPU (seeing one is not enough)
        out.append({"step": f"{run.kind}/{run.run_id}", "kind": run.kind,
                    "ok": status.get("state") == "done", "device": dev.get("name", "?") if used else "cpu",
                    "peak_gpu_gb": round(dev.get("cuda_peak_bytes", 0) / 1e9, 3),
                    "seconds": metrics.get("seconds_step"), "error": status.get("error")})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--row", default=ROW, help=f"table3 row to rehearse (default {ROW})")
    parser.add_argument("--workdir", type=Path, help="where fakes and results go (default: a new temporary folder)")
    parser.add_argument("--real", action="store_true", help="use the prerequisites the environment points at "
                                                            "(HF_HOME, GRAFTBENCH_IMAGENET, ...) instead of fakes")
    parser.add_argument("--allow-cpu", action="store_true", help="do not fail steps for running on the CPU")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu_smoke.json")
    args = parser.parse_args(argv)
    start = time.time()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="graftbench-gpu-smoke-"))
    records = [nccl_check()]

    def save(passed=None) -> None:  # after every step: a smoke cut short by its time limit still leaves its record
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(plain({"machine": machine_info(), "row": args.row, "passed": passed,
                                              "seconds": round(time.time() - start, 1), "steps": records},
                                             finite=True), indent=2))

    save()
    t0 = time.time()
    env = dict(os.environ) if args.real else prepare_rehearsal(work)
    records.append({"step": "prerequisites", "ok": True, "device": "-", "seconds": round(time.time() - t0, 2),
                    "what": "real (environment)" if args.real else "fakes + benchmark.prepare"})
    save()
    results = work / "results"
    cmd = [sys.executable, "-m", "benchmark.run", "table3", "--preset", "paper-smoke", "--rows", args.row,
           "--executor", "local", "--jobs", "1", "--results-dir", str(results), "--quiet"]
    if args.allow_cpu:  # the profile's GPUs would stop every real step on a machine without one
        cmd += ["--slurm", "gpus_per_node=0"]
    t0 = time.time()
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    records.append({"step": "benchmark.run", "ok": run.returncode == 0, "device": "-",
                    "seconds": round(time.time() - t0, 2), "error": run.stderr[-2000:] if run.returncode else None})
    save()
    for r in step_lines(results):
        if not args.allow_cpu and r["kind"] in ("capture", "stage1", "stage2", "sample", "eval") and r["device"] == "cpu":
            r["ok"], r["error"] = False, (r.get("error") or "ran on the CPU")
        records.append(r)
    passed = all(r["ok"] for r in records if r["step"] != "nccl" or not args.allow_cpu)
    for r in records:
        secs = "-" if r.get("seconds") is None else f"{r['seconds']:.1f} s"
        print(f"{'PASS' if r['ok'] else 'FAIL'} {r['step']:<32} {r['device']:<28} {secs}"
              + (f"  {str(r['error']).splitlines()[-1][:160]}" if r.get("error") and not r["ok"] else ""))
    total = time.time() - start
    print(f"{'PASS' if passed else 'FAIL'} gpu smoke: {len(records)} checks in {total:.0f} s (target < 480 s)")
    save(passed)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
