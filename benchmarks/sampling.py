"""Sampling throughput: the suite's sampler (``graft_core.evaluation.sampler.sample``) vs diffusers ``DiTPipeline``.

    python -m benchmarks.sampling                      # 500 samples, batch 250, DDIM 10, CFG 1.5; fp32 and bf16
    python -m benchmarks.sampling --precision fp32     # one precision
    python -m benchmarks.sampling --quick              # seconds

Same work on both sides:

* the same model object: the tiny preset's DiT architecture (8 layers, 4 heads × 32, 16×16 pixels, patch 2 → 64
  tokens, 1 channel) built from config with ``num_embeds_ada_norm=1000`` (random weights), because ``DiTPipeline``
  hard-codes the CFG null class 1000 ; the suite's sampler reads the null id (1000) from the config;
* the same scheduler config (``make_sampling_scheduler("ddim", ...)``: 1000-step linear β, DDIM, η=0), steps,
  guidance scale, labels and batch size; the same initial noise (the pipeline is called once per batch with a CPU
  generator seeded like the suite's sampler seeds that batch), so the outputs are compared, not just timed;
* ``DiTPipeline`` always decodes with a VAE: it gets an identity "VAE" (scaling factor 1, ``decode(z) = z``), so no
  decoder cost is counted on either side, and ``output_type="pt"``; the suite's output gets the same
  ``(x / 2 + 0.5).clamp(0, 1)`` before the comparison;
* bf16: the suite's ``bf16=True`` (autocast around the model call) vs the pipeline called inside the same
  ``torch.autocast("cpu", bfloat16)``.

Timed round-robin (suite, pipeline, suite, …); reported: samples/s and the ratio suite / pipeline (target ≥ 1×).
"""
from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks import common

NAME = "sampling"
TARGET_RATIO = 1.0


def identity_vae():
    """A stand-in for ``AutoencoderKL`` that ``DiTPipeline`` accepts: ``config.scaling_factor`` 1, ``decode`` = id."""
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.modeling_utils import ModelMixin

    class IdentityVAE(ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, scaling_factor: float = 1.0):
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(1))  # gives the pipeline a device and dtype to read

        def decode(self, z, return_dict=True):
            return types.SimpleNamespace(sample=z)

    return IdentityVAE()


def make_models(ctx: common.Context, quick: bool):
    from diffusers import DiTPipeline

    from graft_core.presets import TeacherConfig
    from graft_core.evaluation.sampler import make_sampling_scheduler
    from graft_core.models.teacher import build_dit

    cfg = TeacherConfig(num_classes=1000)  # tiny-preset architecture; 1000 classes for DiTPipeline's null id
    if quick:
        cfg = TeacherConfig(num_classes=1000, num_layers=2, num_attention_heads=2, attention_head_dim=8,
                            sample_size=8)
    torch.manual_seed(0)
    dit = build_dit(cfg).to(ctx.device).eval()
    pipe = DiTPipeline(transformer=dit, vae=identity_vae().to(ctx.device),
                       scheduler=make_sampling_scheduler("ddim", cfg))
    pipe.set_progress_bar_config(disable=True)
    return cfg, dit, pipe


def run_suite(dit, cfg, labels, args, bf16: bool, ctx) -> torch.Tensor:
    from graft_core.evaluation.sampler import sample

    return sample(dit, labels, teacher=cfg, scheduler="ddim", steps=args.steps, guidance_scale=args.guidance,
                  seed=args.seed, batch_size=args.batch_size, bf16=bf16, device=ctx.device)


def run_pipeline(pipe, labels, args, bf16: bool, ctx) -> torch.Tensor:
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    outs = []
    with autocast:
        for i, y in enumerate(torch.split(labels, args.batch_size)):
            gen = torch.Generator(device="cpu").manual_seed(args.seed + i)  # as graft_core.evaluation.sampler seeds batch i
            out = pipe(class_labels=y.tolist(), guidance_scale=args.guidance, num_inference_steps=args.steps,
                       generator=gen, output_type="pt").images
            outs.append(out.float().cpu())
    return torch.cat(outs)


def run(args) -> int:
    if args.quick:
        args.num_samples, args.batch_size, args.steps, args.budget = 16, 8, 3, 0.3
        if args.threads is None:
            args.threads = 1
    ctx = common.setup(args)
    if ctx.dtype_name != "fp32":
        raise SystemExit("error: use --precision for bf16 (the models stay in fp32, as the suite's sampler runs)")
    cfg, dit, pipe = make_models(ctx, args.quick)
    labels = torch.arange(args.num_samples) % 1000
    precisions = args.precision or ["fp32", "bf16"]
    common.header(ctx, f"sampling throughput: graft_core.evaluation.sampler.sample vs DiTPipeline ({args.num_samples} samples, "
                       f"batch {args.batch_size}, DDIM {args.steps}, CFG {args.guidance}, "
                       f"{cfg.num_tokens} tokens, {cfg.num_layers} layers × {cfg.hidden_size})")
    rows = []
    for prec in precisions:
        bf16 = prec == "bf16"
        common.log(f"\n{prec}")
        check = labels[: min(len(labels), 8)]
        a = (run_suite(dit, cfg, check, args, bf16, ctx) / 2 + 0.5).clamp(0, 1)
        b = run_pipeline(pipe, check, args, bf16, ctx)
        diff = (a - b).abs().max().item()
        common.log(f"  same outputs? max |suite − pipeline| over {len(check)} samples: {diff:.2e}")
        t = common.measure({"suite": lambda: run_suite(dit, cfg, labels, args, bf16, ctx),
                            "pipeline": lambda: run_pipeline(pipe, labels, args, bf16, ctx)}, ctx, warmup=1,
                           min_repeats=args.min_repeats, max_repeats=args.max_repeats, budget_s=args.budget,
                           log=common.log)
        suite_rate = args.num_samples / t["suite"].median
        pipe_rate = args.num_samples / t["pipeline"].median
        rows.append({"precision": prec, "suite": t["suite"], "pipeline": t["pipeline"],
                     "suite_samples_per_s": suite_rate, "pipeline_samples_per_s": pipe_rate,
                     "ratio": suite_rate / pipe_rate, "max_abs_output_diff": diff,
                     "target": common.target(suite_rate / pipe_rate, TARGET_RATIO)})
    table = common.format_table(
        ["precision", "suite sampler", "DiTPipeline", "suite samples/s", "pipeline samples/s", "ratio",
         "max output diff"],
        [[r["precision"], common.fmt_time(r["suite"].median), common.fmt_time(r["pipeline"].median),
          common.fmt_num(r["suite_samples_per_s"], 1), common.fmt_num(r["pipeline_samples_per_s"], 1),
          common.fmt_num(r["ratio"], 2, "×"), f"{r['max_abs_output_diff']:.1e}"] for r in rows])
    print("\n" + table)
    summary = {"ratios": {r["precision"]: r["ratio"] for r in rows}, "target": f">= {TARGET_RATIO:g}",
               "all_met": all(r["target"]["met"] for r in rows)}
    print(f"suite / pipeline: " + ", ".join(f"{p} {v:.2f}×" for p, v in summary["ratios"].items())
          + f" (goal ≥ {TARGET_RATIO:g}×) → {'met' if summary['all_met'] else 'MISSED'}")
    settings = {"num_samples": args.num_samples, "batch_size": args.batch_size, "steps": args.steps,
                "guidance_scale": args.guidance, "scheduler": "ddim", "seed": args.seed, "precisions": precisions,
                "model": {"num_layers": cfg.num_layers, "heads": cfg.num_attention_heads,
                          "head_dim": cfg.attention_head_dim, "sample_size": cfg.sample_size,
                          "patch_size": cfg.patch_size, "in_channels": cfg.in_channels,
                          "out_channels": cfg.out_channels, "num_classes": cfg.num_classes,
                          "tokens": cfg.num_tokens},
                "budget_s_per_case": args.budget, "min_repeats": args.min_repeats}
    path = common.write_result(
        ctx, NAME, settings=settings, results=rows, summary=summary, table=table,
        notes=["random weights; same model object, scheduler config, labels, steps, guidance, batches and initial "
               "noise on both sides; the pipeline decodes with an identity VAE (no decoder cost)",
               "max output diff: max |(suite/2+0.5).clamp(0,1) − pipeline| on the first 8 samples"])
    common.footer(ctx, path)
    return 0


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), help="default: fp32 and bf16")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls per case")
    p.add_argument("--min-repeats", type=int, default=2)
    p.add_argument("--max-repeats", type=int, default=5)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
