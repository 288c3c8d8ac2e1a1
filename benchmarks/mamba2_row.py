"""What a Mamba-2 grid row costs against a Hyena-X (and MHA) row at the tiny preset size, on CPU.

    python -m benchmarks.mamba2_row                 # the three workloads below, ~2 min
    python -m benchmarks.mamba2_row --quick         # seconds (small batches)

Tiny size: D = 128, 64 tokens (16×16 pixels, patch 2), Mamba-2 with d_state 64, expand 2, headdim 16 (16 heads),
one group, chunk 64 (the whole sequence is one chunk). The model is the tiny teacher architecture
(``get_preset("tiny").teacher``, random weights: timing only) with the operator grafted into 4 of its 8 attention
layers (``interleaved50``, as the grid's 50 % rows). Workloads, each timed round-robin over the rows:

* **stage2** — one stage-2 training step at batch 64 under ``torch.autocast("cpu", bfloat16)``: ε-MSE
  (``graft_core.models.diffusion.diffusion_loss``), backward, AdamW step;
* **sample** — one sampling forward at batch 1000 (CFG doubles a batch of 500), bf16 autocast, inference mode
  (1 warm-up + 2 timed calls per row: seconds each);
* **stage1** — the operator alone, forward + backward of an MSE at batch 256, fp32 (stage-1 distillation).

Rows: ``mamba2`` (the current operator), ``mamba2_ref`` (the same model and weights with the operator's forward as
it was before issue 19's rewrite — kept below as ``reference_mix`` / ``reference_ssd_chunked``, nowhere else),
``hyena_x`` and ``mha``. Reported: the median time per call and the ratios Mamba-2 / Hyena-X with the current and the
reference forward (target: ≤ 1.5 for a model-level row). The script checks that both forwards agree first.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import copy

import torch
import torch.nn.functional as F

from benchmarks import common

NAME = "mamba2_row"
ROWS = ("mamba2", "mamba2_ref", "hyena_x", "mha")
TARGET_RATIO = 1.5


def reference_ssd_chunked(x, dt, a, b, c, chunk_size: int = 64):
    """``graft_core.operators.ssd.ssd_chunked`` as it was before the single-chunk / no-denormal rewrite (reference
    for the before/after timing only): full [b, c, g, r, q, q] decay tensor with a −inf mask and no clamp (its exp
    reaches float32 denormals), steps 2–4 always run, einsum products (bf16 under autocast)."""
    dtype = x.dtype
    x, dt, a, b, c = (t.float() for t in (x, dt, a, b, c))
    bsz, length, heads, p = x.shape
    groups = b.shape[2]
    q = min(chunk_size, length)
    pad = (-length) % q
    if pad:
        x, dt, b, c = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, b, c))
    nc, r = (length + pad) // q, heads // groups
    xs = (x * dt[..., None]).view(bsz, nc, q, groups, r, p)
    bs, cs = b.view(bsz, nc, q, groups, -1), c.view(bsz, nc, q, groups, -1)
    a_cum = torch.cumsum((a * dt).view(bsz, nc, q, groups, r).permute(0, 1, 3, 4, 2), dim=-1)
    a_cum_t = a_cum.permute(0, 1, 4, 2, 3)[..., None]
    upper = torch.ones(q, q, dtype=torch.bool, device=x.device).triu(1)
    decay = (a_cum[..., :, None] - a_cum[..., None, :]).masked_fill_(upper, -torch.inf).exp_()
    weights = decay * torch.einsum("bcign,bcjgn->bcgij", cs, bs)[:, :, :, None]
    y_diag = torch.einsum("bcgrij,bcjgrp->bcigrp", weights, xs)
    decayed = xs * torch.exp(a_cum_t[:, :, -1:] - a_cum_t)
    chunk_states = torch.einsum("bcjgn,bcjgrp->bcgrpn", bs, decayed)
    chunk_decay = torch.exp(a_cum[..., -1])[..., None, None]
    state = torch.zeros_like(chunk_states[:, 0])
    entering = []
    for z in range(nc):
        entering.append(state)
        state = chunk_decay[:, z] * state + chunk_states[:, z]
    states = torch.stack(entering, dim=1)
    y_off = torch.einsum("bcign,bcgrpn->bcigrp", cs, states) * torch.exp(a_cum_t)
    y = (y_diag + y_off).reshape(bsz, nc * q, heads, p)[:, :length]
    return y.to(dtype)


def reference_mix(op, u: torch.Tensor) -> torch.Tensor:
    """``Mamba2.mix`` (with its gated RMSNorm) as it was before the rewrite: whole batch at once, scan output cast
    back to the input dtype, norm in float32 with autograd-style out-of-place ops, ``reference_ssd_chunked``."""
    bsz, n, _ = u.shape
    gn = op.ngroups * op.d_state
    z, xbc, dt = op.in_proj(u).split([op.d_inner, op.d_inner + 2 * gn, op.nheads], dim=-1)
    xbc = F.silu(op.conv1d.forward_tokens(xbc))
    x, b, c = xbc.split([op.d_inner, gn, gn], dim=-1)
    x = x.reshape(bsz, n, op.nheads, op.headdim)
    dt = F.softplus(dt.float() + op.dt_bias.float())
    a = -torch.exp(op.A_log.float())
    y = reference_ssd_chunked(x, dt, a, b.reshape(bsz, n, op.ngroups, -1), c.reshape(bsz, n, op.ngroups, -1),
                              chunk_size=op.chunk_size)
    y = y + x * op.D.to(x.dtype)[:, None]
    y = y.reshape(bsz, n, op.d_inner)
    norm, dtype = op.norm, y.dtype
    y = (y.float() * F.silu(z.float())).unflatten(-1, (-1, norm.group_size))
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + norm.eps)
    y = (y.flatten(-2) * norm.weight.float()).to(dtype)
    return op.out_proj(y)


def use_reference(model: torch.nn.Module) -> int:
    """Point every Mamba2 operator of ``model`` at ``reference_mix``; returns how many."""
    from graft_core.operators.mamba2 import Mamba2

    count = 0
    for m in model.modules():
        if isinstance(m, Mamba2):
            m.mix = (lambda u, m=m: reference_mix(m, u))  # instance attribute shadows the method
            count += 1
    return count


def build_rows(layers: str):
    from graft_core.grafting import surgery
    from graft_core.grafting.plan import make_plan
    from graft_core.presets import get_preset
    from graft_core.models.teacher import build_dit

    cfg = get_preset("tiny").teacher
    torch.manual_seed(0)
    teacher = build_dit(cfg)
    models, ops = {}, {}
    for row in ROWS:
        op = "mamba2" if row.startswith("mamba2") else row
        plan = make_plan("attn", op, layers, num_layers=cfg.num_layers)
        models[row] = surgery.graft(copy.deepcopy(teacher), plan, seed=0).train()
        torch.manual_seed(0)
        from graft_core import operators

        ops[row] = operators.build(op, cfg.hidden_size, num_heads=cfg.num_attention_heads, seq_len=cfg.num_tokens)
        if row == "mamba2_ref":
            assert use_reference(models[row]) == len(plan.layers) and use_reference(ops[row]) == 1
    return cfg, models, ops, plan.layers


def run(args) -> int:
    if args.threads is None:
        args.threads = 1
    args.device, args.dtype = "cpu", "fp32"
    ctx = common.setup(args)
    from graft_core.models.diffusion import diffusion_loss, make_train_scheduler, null_class_id

    common.header(ctx, "Mamba-2 vs Hyena-X vs MHA grid-row costs at the tiny size (CPU)")
    cfg, models, ops, layers = build_rows(args.layers)
    scheduler = make_train_scheduler(cfg)
    bs2, bsamp, bs1 = (8, 50, 16) if args.quick else (args.stage2_batch, args.sample_batch, args.stage1_batch)
    g = torch.Generator().manual_seed(0)
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    x0, noise = torch.randn(bs2, *shape, generator=g), torch.randn(bs2, *shape, generator=g)
    labels = torch.randint(0, cfg.num_classes, (bs2,), generator=g)
    t = torch.randint(0, cfg.num_train_timesteps, (bs2,), generator=g)
    xs, ts = torch.randn(bsamp, *shape, generator=g), torch.randint(0, cfg.num_train_timesteps, (bsamp,), generator=g)
    ys = torch.randint(0, cfg.num_classes, (bsamp,), generator=g)
    ys[bsamp // 2:] = null_class_id(models["mha"])
    u = torch.randn(bs1, cfg.num_tokens, cfg.hidden_size, generator=g)
    target = torch.randn(bs1, cfg.num_tokens, cfg.hidden_size, generator=g)
    with torch.no_grad():
        diff = (ops["mamba2"](u[:8]) - ops["mamba2_ref"](u[:8])).abs().max().item()
    common.log(f"operator alone, fp32: max |current - reference| = {diff:.2e}")
    assert diff < 1e-4, diff
    opts = {row: torch.optim.AdamW(m.parameters(), lr=1e-4) for row, m in models.items()}

    def stage2(row):
        model, opt = models[row], opts[row]
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = diffusion_loss(model, scheduler, x0, labels, t=t, noise=noise)
        loss.backward()
        opt.step()

    def sample(row):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            models[row](xs, timestep=ts, class_labels=ys, return_dict=False)

    def stage1(row):
        op = ops[row]
        op.zero_grad(set_to_none=True)
        F.mse_loss(op(u), target).backward()

    workloads = {"stage2": (stage2, f"stage-2 step, batch {bs2}, bf16 autocast, fwd+bwd+AdamW"),
                 "sample": (sample, f"sampling forward, batch {bsamp}, bf16 autocast, no grad"),
                 "stage1": (stage1, f"operator alone, batch {bs1}, fp32, fwd+bwd")}
    results, summary, table_rows = {}, {}, []
    for name in args.workloads:
        fn, what = workloads[name]
        common.log(f"\n{name}: {what}")
        reps = (2, 2) if name == "sample" and not args.quick else (args.min_repeats, args.max_repeats)  # ~35 s a round
        timings = common.measure({row: (lambda row=row: fn(row)) for row in ROWS}, ctx, warmup=1,
                                 min_repeats=reps[0], max_repeats=reps[1],
                                 budget_s=0.3 if args.quick else args.budget, log=common.log)
        med = {row: timings[row].median for row in ROWS}
        ratio, ratio_ref = med["mamba2"] / med["hyena_x"], med["mamba2_ref"] / med["hyena_x"]
        results[name] = {"what": what, "timings": timings, "ratio_mamba2_over_hyena_x": ratio,
                         "ratio_mamba2_ref_over_hyena_x": ratio_ref,
                         "speedup_mamba2_over_ref": med["mamba2_ref"] / med["mamba2"]}
        summary[name] = {"ratio_mamba2_over_hyena_x": ratio, "ratio_before": ratio_ref,
                         "speedup": med["mamba2_ref"] / med["mamba2"]}
        if name != "stage1":
            summary[name]["target"] = common.target(ratio, TARGET_RATIO, "<=")
        table_rows.append([name, *(common.fmt_time(med[r]) for r in ROWS), common.fmt_num(ratio_ref, 2, "×"),
                           common.fmt_num(ratio, 2, "×"), common.fmt_num(med["mamba2_ref"] / med["mamba2"], 2, "×")])
        common.log(f"  Mamba-2 / Hyena-X: {ratio:.2f}× (before {ratio_ref:.2f}×)")
    table = common.format_table(["workload", "mamba2", "mamba2 (before)", "hyena_x", "mha",
                                 "M2/HX before", "M2/HX after", "speed-up"], table_rows)
    print("\n" + table)
    path = common.write_result(
        ctx, NAME,
        settings={"preset": "tiny", "max_abs_diff_current_vs_reference_fp32": diff, "layers": list(layers),
                  "stage2_batch": bs2, "sample_batch": bsamp,
                  "stage1_batch": bs1, "threads": ctx.threads, "budget_s_per_case": args.budget,
                  "mamba2": {"d_state": 64, "expand": 2, "headdim": 16, "ngroups": 1, "chunk_size": 64}},
        results=results, summary=summary, table=table,
        notes=["mamba2_ref = the same model with reference_mix / reference_ssd_chunked (this script) as its forward",
               "model rows: the tiny teacher architecture, random weights, operator grafted into 4 of 8 layers"])
    common.footer(ctx, path)
    return 0


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--workloads", nargs="+", choices=("stage2", "sample", "stage1"),
                   default=["stage2", "sample", "stage1"])
    p.add_argument("--layers", default="interleaved50", help="graft strategy (default: 4 of 8 layers)")
    p.add_argument("--stage2-batch", type=int, default=64)
    p.add_argument("--sample-batch", type=int, default=1000)
    p.add_argument("--stage1-batch", type=int, default=256)
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per case")
    p.add_argument("--min-repeats", type=int, default=3)
    p.add_argument("--max-repeats", type=int, default=10)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
