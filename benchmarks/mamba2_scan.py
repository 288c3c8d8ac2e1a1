"""Mamba-2 scan: the pure-PyTorch chunked SSD (``ssd_chunked``) vs the sequential recurrence (``ssd_recurrent``).

    python -m benchmarks.mamba2_scan                        # default settings below
    python -m benchmarks.mamba2_scan --settings 1x256x144 4x1024x144
    python -m benchmarks.mamba2_scan --quick                # seconds

A setting ``BxNxH`` is batch × tokens × heads with headdim 16, d_state 64, one (B, C) group (the paper's Mamba-2:
d_model 1152, expand 2 → 144 heads; docs/paper-reference.md §3). The scan inputs are the real ones of a freshly
initialised ``graft_core`` ``Mamba2`` operator (d_model = H·headdim/2) on a unit-variance input — dt from its softplus
with the operator's dt_bias, A from its A_log, B/C/x after its conv — captured by wrapping ``Mamba2.scan``. Both scans
run in fp32 on the same inputs, timed round-robin; reported: speed-up of the chunked scan, max |Δ| between the two and
max |Δ| / max |y|. Targets (issue 9): speed-up ≥ 10×, max |Δ| ≤ 1e-4.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

import torch

from benchmarks import common
from graft_core.operators.mamba2 import Mamba2
from graft_core.operators.ssd import ssd_chunked, ssd_recurrent

NAME = "mamba2_scan"
DEFAULT_SETTINGS = ("1x256x144", "8x256x144", "1x1024x144", "1x4096x144", "1x4096x16")
QUICK_SETTINGS = ("1x64x8", "1x128x16")
PAPER_SETTING = "1x256x144"
TARGET_SPEEDUP, TARGET_ERR = 10.0, 1e-4


def parse_setting(text: str) -> tuple[int, int, int]:
    try:
        b, n, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: a setting is BxNxH (e.g. 1x256x144), got {text!r}") from None
    return b, n, h


def scan_inputs(batch: int, n: int, heads: int, *, headdim: int, d_state: int, chunk: int, seed: int = 0):
    """The (x, dt, A, B, C) a real Mamba2 operator passes to its scan for a random unit-variance input."""
    expand = 2
    dim = heads * headdim // expand
    torch.manual_seed(seed)
    op = Mamba2(dim, d_state=d_state, expand=expand, headdim=headdim, chunk_size=chunk).eval()
    captured = {}

    def spy(x, dt, a, b, c):
        captured.update(x=x, dt=dt, a=a, b=b, c=c)
        return ssd_chunked(x, dt, a, b, c, chunk_size=chunk)

    op.scan = spy  # instance attribute shadows the method
    with torch.inference_mode():
        op(torch.randn(batch, n, dim, generator=torch.Generator().manual_seed(seed)))
    return tuple(captured[k].float().contiguous() for k in ("x", "dt", "a", "b", "c"))


@contextlib.contextmanager
def clamped_exp(lowest: float = -80.0):
    """Diagnostic only: make ``torch.exp`` / ``Tensor.exp_`` clamp their argument at ``lowest`` (e^-80 ≈ 1.8e-35).

    torch's CPU ``exp`` is two orders of magnitude slower per element when the result underflows (argument below
    ≈ −87.3, including −inf) than otherwise; ``ssd_chunked`` exponentiates large negative decay sums and a −inf-masked
    triangle. Patching the two functions for the duration of a call shows what a clamp inside ``ssd_chunked`` would
    buy without copying its code. Not thread-safe; restored on exit.
    """
    exp, exp_ = torch.exp, torch.Tensor.exp_
    torch.exp = lambda t, *a, **k: exp(t.clamp(min=lowest), *a, **k)
    torch.Tensor.exp_ = lambda self: exp_(self.clamp_(min=lowest))
    try:
        yield
    finally:
        torch.exp, torch.Tensor.exp_ = exp, exp_


def diagnostics(text: str, args, ctx: common.Context) -> dict:
    """Where the chunked scan's time goes at one setting: chunk-size sweep, and the exp-underflow slow path."""
    b, n, h = parse_setting(text)
    inputs = scan_inputs(b, n, h, headdim=args.headdim, d_state=args.d_state, chunk=args.chunk)
    size = 2_000_000 if not args.quick else 200_000
    arrays = {f"exp({v:g})": torch.full((size,), v) for v in (-10.0, -100.0, float("-inf"))}
    cases = {name: (lambda x=x: torch.exp(x)) for name, x in arrays.items()}
    for q in args.sweep:
        cases[f"chunk {q}"] = (lambda q=q: ssd_chunked(*inputs, chunk_size=q))

    def clamped():
        with clamped_exp():
            ssd_chunked(*inputs, chunk_size=args.chunk)

    cases[f"chunk {args.chunk}, exp clamped at -80"] = clamped
    with torch.inference_mode():
        ref = ssd_recurrent(*inputs)
        with clamped_exp():
            err = (ssd_chunked(*inputs, chunk_size=args.chunk) - ref).abs().max().item()
        t = common.measure(cases, ctx, warmup=1, min_repeats=3, max_repeats=15, budget_s=args.budget / 2)
    return {"setting": text, "elements_per_exp_call": size, "timings": t,
            "exp_ns_per_element": {k: t[k].median / size * 1e9 for k in arrays},
            "clamped_max_abs_err": err,
            "clamped_speedup_over_chunked": t[f"chunk {args.chunk}"].median
            / t[f"chunk {args.chunk}, exp clamped at -80"].median if args.chunk in args.sweep else None}


def run(args) -> int:
    if args.quick:
        args.budget = min(args.budget, 0.3)
        if args.threads is None:
            args.threads = 1  # smoke test: do not fight other processes for the cores
    ctx = common.setup(args)
    settings = args.settings or (QUICK_SETTINGS if args.quick else DEFAULT_SETTINGS)
    common.header(ctx, f"Mamba-2 chunked SSD (chunk {args.chunk}) vs sequential recurrence "
                       f"(headdim {args.headdim}, d_state {args.d_state}, fp32, CPU)")
    rows = []
    for text in settings:
        b, n, h = parse_setting(text)
        common.log(f"\n{text}: batch {b}, {n} tokens, {h} heads")
        inputs = scan_inputs(b, n, h, headdim=args.headdim, d_state=args.d_state, chunk=args.chunk)
        with torch.inference_mode():
            y_chunk = ssd_chunked(*inputs, chunk_size=args.chunk)
            y_rec = ssd_recurrent(*inputs)
        err = (y_chunk - y_rec).abs().max().item()
        scale = y_rec.abs().max().item()

        def chunked():
            with torch.inference_mode():
                ssd_chunked(*inputs, chunk_size=args.chunk)

        def recurrent():
            with torch.inference_mode():
                ssd_recurrent(*inputs)

        t = common.measure({"chunked": chunked, "recurrent": recurrent}, ctx, warmup=1,
                           min_repeats=args.min_repeats, max_repeats=args.max_repeats, budget_s=args.budget,
                           log=common.log)
        speedup = t["recurrent"].median / t["chunked"].median
        rows.append({"setting": text, "batch": b, "n": n, "heads": h, "headdim": args.headdim,
                     "d_state": args.d_state, "chunk": args.chunk, "paper_setting": text == PAPER_SETTING,
                     "chunked": t["chunked"], "recurrent": t["recurrent"], "speedup": speedup,
                     "max_abs_err": err, "max_abs_y": scale, "rel_err": err / scale if scale else None,
                     "targets": {"speedup": common.target(speedup, TARGET_SPEEDUP),
                                 "max_abs_err": common.target(err, TARGET_ERR, "<=")}})
        common.log(f"  chunked {common.fmt_time(t['chunked'].median)}, recurrent "
                   f"{common.fmt_time(t['recurrent'].median)}: {speedup:.1f}×, max |Δ| {err:.2e}")
    headers = ["B×N×H", "chunked", "recurrent", "speed-up", "max abs err", "max abs y", "err / max abs y", "targets"]
    table = common.format_table(headers, [
        [r["setting"] + (" (paper)" if r["paper_setting"] else ""), common.fmt_time(r["chunked"].median),
         common.fmt_time(r["recurrent"].median), common.fmt_num(r["speedup"], 1, "×"), f"{r['max_abs_err']:.1e}",
         f"{r['max_abs_y']:.2f}", f"{r['rel_err']:.1e}" if r["rel_err"] is not None else "–",
         "met" if all(t["met"] for t in r["targets"].values()) else "MISSED"] for r in rows])
    print("\n" + table)
    summary = {"all_targets_met": all(all(t["met"] for t in r["targets"].values()) for r in rows),
               "min_speedup": min(r["speedup"] for r in rows), "max_abs_err": max(r["max_abs_err"] for r in rows),
               "targets": {"speedup": f">= {TARGET_SPEEDUP:g}", "max_abs_err": f"<= {TARGET_ERR:g}"}}
    paper = next((r for r in rows if r["paper_setting"]), None)
    if paper:
        summary["paper_setting"] = {"speedup": paper["speedup"], "max_abs_err": paper["max_abs_err"]}
    print(f"min speed-up {summary['min_speedup']:.1f}× (goal ≥ {TARGET_SPEEDUP:g}×), max |Δ| "
          f"{summary['max_abs_err']:.1e} (goal ≤ {TARGET_ERR:g}) → {'met' if summary['all_targets_met'] else 'MISSED'}")
    diag = None
    if not args.no_diagnostics:
        where = PAPER_SETTING if PAPER_SETTING in settings else settings[0]
        common.log(f"\ndiagnostics at {where}: chunk sizes, torch.exp underflow")
        diag = diagnostics(where, args, ctx)
        dt = common.format_table(["case", "median"], [[k, common.fmt_time(v.median)] for k, v in diag["timings"].items()])
        print(dt)
        print("torch.exp per element: " + ", ".join(f"{k} {v:.2f} ns" for k, v in diag["exp_ns_per_element"].items())
              + f"; clamped scan max |Δ| vs recurrence {diag['clamped_max_abs_err']:.1e}")
        table += "\n\n" + dt
    path = common.write_result(
        ctx, NAME, settings={"settings": list(settings), "headdim": args.headdim, "d_state": args.d_state,
                             "chunk": args.chunk, "ngroups": 1, "dtype": "fp32", "device": "cpu",
                             "budget_s_per_case": args.budget},
        results={"rows": rows, "diagnostics": diag}, summary=summary, table=table,
        notes=["inputs: a fresh graft_core Mamba2 operator's scan arguments for a N(0,1) input",
               "the chunked scan is graft_core.operators.ssd.ssd_chunked (the one Mamba2 uses on CPU); the "
               "reference is ssd_recurrent (token-by-token loop)"])
    common.footer(ctx, path)
    return 0


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--settings", nargs="+", help=f"BxNxH list (default {' '.join(DEFAULT_SETTINGS)})")
    p.add_argument("--headdim", type=int, default=16)
    p.add_argument("--d-state", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64, help="SSD chunk length (Mamba2's default 64)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per case")
    p.add_argument("--sweep", type=int, nargs="+", default=[16, 32, 64, 128], help="chunk sizes for the diagnostics")
    p.add_argument("--no-diagnostics", action="store_true", help="skip the chunk-size sweep and exp-underflow timing")
    p.add_argument("--min-repeats", type=int, default=3)
    p.add_argument("--max-repeats", type=int, default=20)
    args = p.parse_args(argv)
    if args.device == "cuda":
        raise SystemExit("error: this benchmark times the pure-PyTorch CPU scan; use --device cpu/auto")
    args.device, args.dtype = "cpu", "fp32"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
