"""What each speed lever of the tiny Table-3 grid costs and what it does to the numbers the grid's conclusions rest on.

    python -m benchmarks.levers sampler   # DDIM 10 vs DPM-Solver++ k steps; FID spread over seeds per sample count
    python -m benchmarks.levers stage1    # validation-MSE curve per epoch: where early stopping would stop
    python -m benchmarks.levers stage1-batch   # held-out MSE and time of one layer per stage-1 batch size (16, 256)
    python -m benchmarks.levers stage2    # FID of the EMA weights after s stage-2 steps (control, 50 %, 100 % rows);
                                          # --ema-decay 0.99 / 0.95 --max-steps 100 --rows "hyena_x 50" is the EMA lever
    python -m benchmarks.levers threads   # one process with 2 threads vs two with 1 thread (stage-2 step, sampling)

Everything runs on the shipped tiny teacher and classifier through the engine's own functions (``graft_core``:
capture, ``distill_layer``, ``Finetune``, ``evaluate_model``), the same ones the driver's steps call, into a scratch
folder (``--workdir``). Each part writes ``benchmarks/results/levers-<part>.json``; the chosen tiny settings
(``graft_core.presets``) cite these files.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common

HYENA_LAYERS_50 = (1, 3, 5, 7)  # interleaved 50 % (benchmark.targets.common.RATIOS: every other layer)


def tiny():
    from graft_core.presets import get_preset

    return get_preset("tiny")


def teacher(p):
    from graft_core.models.teacher import load_teacher

    return load_teacher(p, train_if_missing=False, progress=False)


BATCH = {}


def with_eval(p, **changes):
    return p.replace(eval=dataclasses.replace(p.eval, **{**BATCH, **changes}))


def score(model, p, seed: int = 0) -> dict:
    from graft_core.evaluation.evaluate import evaluate_model

    t0 = time.perf_counter()
    m = evaluate_model(model, p, seed=seed)
    keep = ("fid", "fid_std", "class_acc", "precision", "recall", "sfid")
    return {**{k: round(float(m[k]), 4) for k in keep if k in m}, "seconds": round(time.perf_counter() - t0, 1)}


# ------------------------------------------------------------------------------------------------- stage-1 weights
def captures(p, work: Path):
    """The tiny teacher's (stage-1, held-out) captures in ``work`` (made once, reused by every part)."""
    from graft_core.stages.capture import capture_activations

    t = teacher(p)
    return (capture_activations(t, p, split="stage1", root=work / "capture"),
            capture_activations(t, p, split="heldout", root=work / "capture"))


def distill(p, caps, out_dir: Path, operator: str, layer: int, *, site: str = "attn", stage1=None) -> dict:
    """One layer's stage 1 as the driver's stage-1 runs call it (benchmark.steps.run_stage1), into ``out_dir``."""
    from graft_core.stages.distill import distill_layer

    return distill_layer(*caps, layer=layer, site=site, operator=operator, options={}, stage1=stage1 or p.stage1,
                         dim=p.teacher.hidden_size, num_heads=p.teacher.num_attention_heads,
                         seq_len=p.teacher.num_tokens, out_dir=out_dir, bf16=p.stage2.bf16)


def stage1_dirs(p, work: Path, operator: str, layers, *, stage1=None) -> dict[int, Path]:
    """Stage-1 results of ``operator`` for ``layers`` in ``work`` (trained once, reused by every part)."""
    caps = captures(p, work)
    tag = f"e{(stage1 or p.stage1).epochs}" + ("" if stage1 is None else "-custom")
    out = {}
    for layer in layers:
        out[layer] = work / "stage1" / f"{operator}-{tag}-{layer}"
        distill(p, caps, out[layer], operator, layer, stage1=stage1)
    return out


def grafted(p, dirs: dict[int, Path], operator: str):
    from graft_core.stages.distill import assemble
    from graft_core.grafting.plan import GraftPlan

    plan = GraftPlan.from_dict({"site": "attn", "operator": operator, "layers": sorted(dirs), "options": {}})
    return assemble(teacher(p), plan, dirs)


# ------------------------------------------------------------------------------------------------- parts
def part_sampler(args, ctx, work: Path) -> dict:
    """DDIM 10 (the old setting) against DPM-Solver++(2M) at k steps, on the teacher and on a damaged model (Hyena-X
    in every layer after stage 1 only); then the seed-to-seed FID spread per sample count for the chosen sampler."""
    p = tiny()
    damaged = grafted(p, stage1_dirs(p, work, "hyena_x", range(p.teacher.num_layers)), "hyena_x")
    models = {"teacher": teacher(p), "hyena_x 100 % (stage 1 only)": damaged}
    configs = [("ddim", 10, n) for n in args.ddim_counts] + [("dpm", k, 1000) for k in args.dpm_steps]
    rows, results = [], []
    for name, model in models.items():
        for sched, steps, n in configs:
            r = score(model, with_eval(p, scheduler=sched, steps=steps, num_samples=n))
            results.append({"model": name, "scheduler": sched, "steps": steps, "num_samples": n, **r})
            rows.append([name, f"{sched} {steps}", n, r["fid"], r.get("fid_std"), r["class_acc"], r["seconds"]])
            common.log(" | ".join(map(str, rows[-1])))
    spread = []
    for n in args.spread_counts:
        for name, model in models.items():
            fids = [score(model, with_eval(p, scheduler=args.sched, steps=args.steps, num_samples=n), seed=s)["fid"]
                    for s in range(args.seeds)]
            import statistics

            spread.append({"model": name, "num_samples": n, "fids": fids, "mean": statistics.mean(fids),
                           "std": statistics.stdev(fids) if len(fids) > 1 else None})
            common.log(f"spread {name} n={n}: {fids}")
    table = common.format_table(["model", "sampler", "samples", "FID", "bootstrap std", "class acc", "seconds"], rows)
    table += "\n\n" + common.format_table(
        ["model", "samples", f"FID over {args.seeds} seeds ({args.sched} {args.steps})", "mean", "std"],
        [[s["model"], s["num_samples"], ", ".join(f"{f:.2f}" for f in s["fids"]), f"{s['mean']:.2f}",
          f"{s['std']:.2f}" if s["std"] is not None else "–"] for s in spread])
    return {"results": {"solvers": results, "spread": spread}, "table": table}


def part_stage1(args, ctx, work: Path) -> dict:
    """Validation MSE every ``eval_every`` epochs for two operators and two layers at the preset's 400 epochs."""
    from graft_core.stages.distill import read_metrics

    p = tiny()
    out, rows = [], []
    for operator in ("hyena_x", "mamba2"):
        t0 = time.perf_counter()
        dirs = stage1_dirs(p, work, operator, (1, 6))
        seconds = time.perf_counter() - t0
        for layer, d in dirs.items():
            m = read_metrics(d) or {}
            hist = m.get("history") or []
            out.append({"operator": operator, "layer": layer, "history": hist, "metrics": {k: v for k, v in m.items()
                                                                                          if k != "history"},
                        "seconds_both_layers": round(seconds, 1)})
            vals = [(h.get("epoch"), h.get("val_mse", h.get("train_mse"))) for h in hist]
            best = min(v for _, v in vals if v is not None) if vals else None
            first_within = {tol: next((e for e, v in vals if v is not None and v <= best * (1 + tol)), None)
                            for tol in (0.02, 0.05, 0.10)} if best else {}
            rows.append([operator, layer, len(hist), f"{best:.4g}" if best else "–",
                         first_within.get(0.02), first_within.get(0.05), first_within.get(0.10), f"{seconds:.0f} s"])
            common.log(" | ".join(map(str, rows[-1])))
    table = common.format_table(["operator", "layer", "checks", "best val MSE", "epoch ≤ best+2 %", "≤ +5 %",
                                 "≤ +10 %", "time (2 layers)"], rows)
    return {"results": out, "table": table}


# (operator, site, layer) of the stage-1 batch lever: both sites, an early and a late layer, and the two operators
# whose per-layer cost differs most
STAGE1_BATCH_CASES = (("mlp", "mlp", 1), ("mlp", "mlp", 4), ("mha", "attn", 1), ("mha", "attn", 4),
                      ("hyena_x", "attn", 1), ("mamba2", "attn", 1))


def part_stage1_batch(args, ctx, work: Path) -> dict:
    """Best held-out MSE, epochs and time of one layer's stage 1 per batch size, all else at the preset's settings
    (80 captured samples: batch 256 is one optimizer step per epoch)."""
    p = tiny()
    caps = captures(p, work)
    out, rows = [], []
    cases = STAGE1_BATCH_CASES[-2:-1] if args.quick else STAGE1_BATCH_CASES  # --quick: Hyena-X, 2 epochs
    for operator, site, layer in cases:
        for batch in args.stage1_batches:
            st1 = dataclasses.replace(p.stage1, batch_size=batch)
            if args.quick:
                st1 = dataclasses.replace(st1, epochs=2, eval_every=1)
            t0 = time.perf_counter()
            m = distill(p, caps, work / "stage1-batch" / f"{operator}-{layer}-b{batch}", operator, layer, site=site,
                        stage1=st1)
            wall = time.perf_counter() - t0
            epochs = m["history"][-1]["epoch"]
            out.append({"operator": operator, "site": site, "layer": layer, "batch_size": batch,
                        "best_val_mse": m["val_mse"], "best_epoch": m["best_epoch"], "epochs_run": epochs,
                        "train_seconds": m["seconds"], "wall_seconds": round(wall, 1)})
            rows.append([operator, layer, batch, f"{m['val_mse']:.3g}", m["best_epoch"], epochs, f"{m['seconds']:.1f} s"])
            common.log(" | ".join(map(str, rows[-1])))
    table = common.format_table(["operator", "layer", "batch", "best held-out MSE", "best epoch", "epochs run",
                                 "train time"], rows)
    return {"results": out, "table": table}


def part_stage2(args, ctx, work: Path) -> dict:
    """FID of the EMA weights after s stage-2 steps, for the control (teacher), Hyena-X 50 % and 100 %."""
    import torch

    from graft_core.models.ema import EMA
    from graft_core.stages.finetune import Finetune, checkpoint_path

    p = tiny()
    p_eval = with_eval(p, scheduler=args.sched, steps=args.steps, num_samples=args.samples)
    all_dirs = stage1_dirs(p, work, "hyena_x", range(p.teacher.num_layers))
    students = {"control (teacher + stage 2)": lambda: teacher(p),
                "hyena_x 50 %": lambda: grafted(p, {i: all_dirs[i] for i in HYENA_LAYERS_50}, "hyena_x"),
                "hyena_x 100 %": lambda: grafted(p, all_dirs, "hyena_x")}
    every = args.every
    st2 = dataclasses.replace(p.stage2, steps=args.max_steps, checkpoint_every=every,
                              ema_decay=args.ema_decay or p.stage2.ema_decay)
    results, rows = [], []
    for name, build in students.items():
        if args.rows and not any(r in name for r in args.rows):
            continue
        out = work / "stage2" / f"{name.replace(' ', '_').replace('%', 'pct').replace('(', '').replace(')', '')}"
        base = build()
        curve = [{"steps": 0, **score(base, p_eval)}]
        train_s = 0.0
        for step in range(every, args.max_steps + 1, every):
            # stop at each checkpoint and resume from it (Finetune keeps only the newest checkpoints)
            t0 = time.perf_counter()
            Finetune(build(), p, out_dir=out, stage2=st2, progress=False, stop_after=step)()
            train_s += time.perf_counter() - t0
            ckpt = torch.load(checkpoint_path(out, step), map_location="cpu", weights_only=False)
            model = build()
            ema = EMA(model, st2.ema_decay)
            ema.load_state_dict(ckpt["ema"])
            curve.append({"steps": step, **score(ema.model.eval(), p_eval)})
            common.log(f"{name} step {step}: {curve[-1]}")
        results.append({"row": name, "ema_decay": st2.ema_decay, "train_seconds": round(train_s, 1), "curve": curve})
        rows += [[name, st2.ema_decay, c["steps"], c["fid"], c.get("fid_std"), c["class_acc"]] for c in curve]
    table = common.format_table(["row", "EMA decay", "stage-2 steps", "FID", "bootstrap std", "class acc"], rows)
    return {"results": results, "table": table}


THREADS_CHILD = r"""
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from graft_core.presets import get_preset
from graft_core.models.teacher import load_teacher
from graft_core.models.diffusion import diffusion_loss
p = get_preset("tiny"); m = load_teacher(p, train_if_missing=False, progress=False).train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
x = torch.randn(64, 1, 16, 16); y = torch.randint(0, 10, (64,)); t = torch.randint(0, 1000, (64,))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, timestep=t, class_labels=y, return_dict=False)[0]
    loss = (out.float() - x).pow(2).mean(); loss.backward(); opt.step(); opt.zero_grad()
m.eval()
xs = torch.randn(1000, 1, 16, 16); ys = torch.randint(0, 10, (1000,)); ts = torch.full((1000,), 500)
def fwd():
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        m(xs, timestep=ts, class_labels=ys, return_dict=False)
m.train(); step(); step()
t0 = time.perf_counter(); [step() for _ in range(int(sys.argv[2]))]; a = (time.perf_counter() - t0) / int(sys.argv[2])
m.eval(); fwd()
t0 = time.perf_counter(); [fwd() for _ in range(int(sys.argv[3]))]; b = (time.perf_counter() - t0) / int(sys.argv[3])
print(f"{a} {b}")
"""


def part_threads(args, ctx, work: Path) -> dict:
    """Throughput of the two layouts of 2 cores: one process × 2 threads, two concurrent processes × 1 thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = lambda threads: [sys.executable, "-c", THREADS_CHILD, str(threads), "20", "6"]  # noqa: E731

    def run(n_proc: int, threads: int) -> list[tuple[float, float]]:
        procs = [subprocess.Popen(cmd(threads), cwd=common.REPO_ROOT, env={**env, "OMP_NUM_THREADS": str(threads)},
                                  stdout=subprocess.PIPE, text=True) for _ in range(n_proc)]
        return [tuple(map(float, pr.communicate()[0].split()[-2:])) for pr in procs]

    one = run(1, 2)
    two = run(2, 1)
    solo = run(1, 1)
    per = {"1 × 2 threads": one[0], "2 × 1 thread (each)": tuple(sum(v) / 2 for v in zip(*two)),
           "1 × 1 thread (alone)": solo[0]}
    thr = {"1 × 2 threads": (1 / one[0][0], 1000 / one[0][1]),
           "2 × 1 thread (each)": (sum(1 / a for a, _ in two), sum(1000 / b for _, b in two)),
           "1 × 1 thread (alone)": (1 / solo[0][0], 1000 / solo[0][1])}
    rows = [[k, f"{per[k][0] * 1e3:.0f} ms", f"{thr[k][0]:.2f}", f"{per[k][1] * 1e3:.0f} ms", f"{thr[k][1]:.0f}"]
            for k in per]
    table = common.format_table(["layout", "stage-2 step (b 64)", "machine steps/s", "forward b 1000 (bf16)",
                                 "machine samples·steps/s"], rows)
    return {"results": {"per_process": per, "throughput": thr}, "table": table}


def part_attention(args, ctx, work: Path) -> dict:
    """The tiny teacher's stage-2 step (batch 64) and sampling forward (batch 200) with diffusers' fused-SDPA
    processor vs its classic one (``graft_core.models.teacher.use_fast_attention``), timed round-robin; plus the largest
    output difference of the two at the same weights."""
    import copy

    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    p = tiny()
    base = teacher(p)
    models = {}
    for name, proc in (("fused SDPA (AttnProcessor2_0)", AttnProcessor2_0), ("classic (AttnProcessor)", AttnProcessor)):
        m = copy.deepcopy(base)
        for mod in m.modules():
            if hasattr(mod, "set_processor"):
                mod.set_processor(proc())
        models[name] = m
    g = torch.Generator().manual_seed(0)
    x, y, t = torch.randn(64, 1, 16, 16, generator=g), torch.randint(0, 10, (64,), generator=g), \
        torch.randint(0, 1000, (64,), generator=g)
    xs, ys, ts = torch.randn(200, 1, 16, 16, generator=g), torch.randint(0, 10, (200,), generator=g), \
        torch.full((200,), 500)

    def train_step(m):
        m.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x, timestep=t, class_labels=y, return_dict=False)[0]
        (out.float() - x).pow(2).mean().backward()
        m.zero_grad(set_to_none=True)

    def forward(m):
        m.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return m(xs, timestep=ts, class_labels=ys, return_dict=False)[0].float()

    cases = {}
    for name, m in models.items():
        cases[f"{name}: stage-2 step"] = (lambda m=m: train_step(m))
        cases[f"{name}: forward b 200"] = (lambda m=m: forward(m))
    timed = common.measure(cases, ctx, warmup=1, budget_s=4.0, max_repeats=8)
    outs = [forward(m) for m in models.values()]
    diff = float((outs[0] - outs[1]).abs().max())
    rows = [[k, common.fmt_time(v.median)] for k, v in timed.items()]
    table = common.format_table(["case", "median"], rows) + f"\n\nmax |output difference| (bf16): {diff:.3g}"
    return {"results": {"timings": {k: v.median for k, v in timed.items()}, "max_abs_diff_bf16": diff}, "table": table}


PARTS = {"attention": part_attention, "sampler": part_sampler, "stage1": part_stage1, "stage1-batch": part_stage1_batch,
         "stage2": part_stage2, "threads": part_threads}


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("part", choices=sorted(PARTS))
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "graftbench-levers",
                   help="scratch folder (captures, stage-1 and stage-2 runs are reused between parts)")
    p.add_argument("--dpm-steps", type=int, nargs="+", default=[4, 5, 6, 8])
    p.add_argument("--ddim-counts", type=int, nargs="+", default=[2000, 1000], help="sample counts of the DDIM 10 "
                                                                                 "reference rows")
    p.add_argument("--batch", type=int, default=None, help="sampler batch size (default: the preset's)")
    p.add_argument("--sched", default="dpm", help="sampler of the spread and stage-2 parts")
    p.add_argument("--steps", type=int, default=5, help="sampler steps of the spread and stage-2 parts")
    p.add_argument("--samples", type=int, default=1000, help="samples per eval in the stage-2 part")
    p.add_argument("--spread-counts", type=int, nargs="+", default=[1000])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--ema-decay", type=float, default=None, help="stage2 part: EMA decay (default: the preset's)")
    p.add_argument("--rows", nargs="+", help="stage2 part: only the rows whose name contains one of these")
    p.add_argument("--stage1-batches", type=int, nargs="+", default=[16, 256], help="stage1-batch part: batch sizes")
    args = p.parse_args(argv)
    ctx = common.setup(args)
    if args.batch:
        BATCH["batch_size"] = args.batch
    common.header(ctx, f"tiny-grid lever: {args.part}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = PARTS[args.part](args, ctx, args.workdir)
    print("\n" + out["table"])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out",)}
    path = common.write_result(ctx, f"levers-{args.part}", settings=settings, results=out["results"],
                               table=out["table"])
    common.footer(ctx, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
