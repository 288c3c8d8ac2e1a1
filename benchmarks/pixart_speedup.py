"""PixArt-Σ at 2048² (16,384 tokens): forward speed-up of the paper's Hyena-X graft (14 of 28 MHA layers).

    python -m benchmarks.pixart_speedup                 # CPU: per-block timing at full size, composed (see below)
    python -m benchmarks.pixart_speedup --mode full     # the whole 28-layer model, grafted vs not (GPU default)
    python -m benchmarks.pixart_speedup --quick         # seconds: a narrow 28-layer model at 256 tokens, both modes

Model: diffusers ``PixArtTransformer2DModel`` from config, random weights, with PixArt-Σ-XL-2-2K's transformer config
(28 layers, 16 heads × 72 = 1152, in 4 / out 8 channels, sample 256 → 128×128 patches of 2 = 16,384 tokens,
caption_channels 4096 (T5-XXL), cross_attention_dim 1152, ``ada_norm_single``, ``use_additional_conditions=False``,
interpolation_scale 4, 300 caption tokens). Graft: self-attention ``attn1`` → Hyena-X in the 0-based layers
8, 10, 12, 14, 16, 18, 20–27 (docs/paper-reference.md §4) via ``graft_core.grafting.surgery.graft``; the cross-attention is
unchanged. The paper reports 1.43× on an H100 for one forward pass.

Modes:

* ``compose`` (CPU default — the full model at 16k tokens is minutes per forward on 2 cores): a 2-block model at full
  size whose block 0 keeps MHA and block 1 gets Hyena-X. Timed round-robin: one full-size MHA block, one full-size
  Hyena-X block (each called with the exact inputs the model passes it), the non-block parts (patch embedding,
  timestep and caption embedders, output head: the model run with no blocks) and, for the latency share, the two
  ``attn1`` modules alone. Then ungrafted = non-block + 28 × MHA block and grafted = non-block + 14 × MHA block +
  14 × Hyena-X block. Blocks of one kind have identical shapes and cost, so this is the model's forward up to the
  block-to-block cache effects it cannot see.
* ``full`` (GPU default): the whole 28-layer model, ungrafted and grafted copies, timed round-robin.

Also printed: the analytic FLOP speed-up (FLOPs = 2 × MACs of every matmul/conv; elementwise work not counted).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks import common
from graft_core.grafting.accounting import operator_cost
from graft_core.grafting.plan import make_plan
from graft_core.grafting.surgery import graft

NAME = "pixart_speedup"
PAPER_SPEEDUP = 1.43
PAPER_LAYERS = (8, 10, 12, 14, 16, 18, 20, 21, 22, 23, 24, 25, 26, 27)
# PixArt-Σ-XL-2-2K-MS transformer config (diffusers); num_layers is set per use.
SIGMA_2K = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, sample_size=256,
                patch_size=2, caption_channels=4096, cross_attention_dim=1152, num_embeds_ada_norm=1000,
                norm_type="ada_norm_single", use_additional_conditions=False, interpolation_scale=4,
                attention_bias=True, activation_fn="gelu-approximate", norm_elementwise_affine=False, norm_eps=1e-6)
TEXT_TOKENS = 300  # PixArt-Σ's T5 max_sequence_length
QUICK = dict(SIGMA_2K, num_attention_heads=4, attention_head_dim=32, sample_size=32, caption_channels=64,
             cross_attention_dim=128, interpolation_scale=1)
QUICK_TEXT_TOKENS = 16


def build(config: dict, num_layers: int, ctx: common.Context) -> nn.Module:
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    model = PixArtTransformer2DModel(**config, num_layers=num_layers).to(ctx.device).eval()
    return model if ctx.dtype == torch.float32 else model.to(ctx.dtype)


def model_inputs(config: dict, text_tokens: int, batch: int, ctx: common.Context) -> dict:
    g = torch.Generator().manual_seed(0)
    size = config["sample_size"]
    return {"hidden_states": torch.randn(batch, config["in_channels"], size, size, generator=g).to(ctx.device, ctx.dtype),
            "encoder_hidden_states": torch.randn(batch, text_tokens, config["caption_channels"], generator=g)
            .to(ctx.device, ctx.dtype),
            "encoder_attention_mask": torch.ones(batch, text_tokens, device=ctx.device),
            "timestep": torch.full((batch,), 500, device=ctx.device, dtype=torch.long),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}, "return_dict": False}


# ----------------------------------------------------------------------------------------------------------- FLOPs
def analytic_flops(config: dict, text_tokens: int, layers: tuple[int, ...], num_layers: int = 28) -> dict:
    """FLOPs (2 × MACs) of one forward at batch 1: non-block parts, one MHA block, one Hyena-X block, both models."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    heads, p = config["num_attention_heads"], config["patch_size"]
    n = (config["sample_size"] // p) ** 2
    L, cc = text_tokens, config["caption_channels"]

    def attn1(op):
        c = operator_cost(op, d, num_heads=heads, seq_len=n)
        return c.flops_op + c.flops_ft

    cross = 4 * n * d * d + 4 * L * config["cross_attention_dim"] * d + 4 * n * L * d  # q,out + k,v + QKᵀ,AV
    mlp = 16 * n * d * d  # Linear(D→4D) + Linear(4D→D)
    rest = 2 * n * d * (config["in_channels"] * p * p) + 2 * n * d * (p * p * config["out_channels"])  # patch in/out
    rest += 2 * L * (cc * d + d * d)  # caption projection (2 linears)
    rest += 2 * (256 * d + d * d) + 2 * d * 6 * d  # adaLN-single timestep MLP + 6D modulation
    block = {"mha": attn1("mha") + cross + mlp, "hyena_x": attn1("hyena_x") + cross + mlp}
    k = len(layers)
    base = rest + num_layers * block["mha"]
    grafted = rest + (num_layers - k) * block["mha"] + k * block["hyena_x"]
    return {"tokens": n, "non_block": rest, "block_mha": block["mha"], "block_hyena_x": block["hyena_x"],
            "attn1_mha": attn1("mha"), "attn1_hyena_x": attn1("hyena_x"), "ungrafted": base, "grafted": grafted,
            "speedup": base / grafted, "mha_share_of_flops": num_layers * attn1("mha") / base}


# ----------------------------------------------------------------------------------------------------------- timing
class _Capture:
    """Forward pre-hooks that keep the (args, kwargs) a module was last called with."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.calls: dict[str, tuple[tuple, dict]] = {}
        self.handles = [m.register_forward_pre_hook(self._hook(name), with_kwargs=True)
                        for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, args, kwargs):
            self.calls[name] = (args, dict(kwargs))
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def compose(config: dict, text_tokens: int, batch: int, ctx: common.Context, args) -> dict:
    model = build(config, 2, ctx)
    graft(model, make_plan("attn", "hyena_x", [1], num_layers=2))
    blocks = model.transformer_blocks
    modules = {"mha_block": blocks[0], "hyena_x_block": blocks[1], "mha_attn1": blocks[0].attn1,
               "hyena_x_attn1": blocks[1].attn1}
    inputs = model_inputs(config, text_tokens, batch, ctx)
    cap = _Capture(modules)
    with torch.inference_mode():
        model(**inputs)
    cap.remove()
    bare = copy.copy(model)  # shallow: shares every submodule; only its own block list is emptied
    bare._modules = dict(model._modules)
    bare.transformer_blocks = nn.ModuleList()

    def call(module, name):
        a, kw = cap.calls[name]

        def fn():
            with torch.inference_mode():
                module(*a, **kw)
        return fn

    def non_block():
        with torch.inference_mode():
            bare(**inputs)

    cases = {"non_block": non_block, **{name: call(m, name) for name, m in modules.items()}}
    t = common.measure(cases, ctx, warmup=1, min_repeats=args.min_repeats, max_repeats=args.max_repeats,
                       budget_s=args.budget, log=common.log)
    med = {k: v.median for k, v in t.items()}
    k = len(PAPER_LAYERS)
    base = med["non_block"] + 28 * med["mha_block"]
    grafted = med["non_block"] + (28 - k) * med["mha_block"] + k * med["hyena_x_block"]
    return {"timings": t, "ungrafted_s": base, "grafted_s": grafted, "speedup": base / grafted,
            "block_speedup": med["mha_block"] / med["hyena_x_block"],
            "attn1_speedup": med["mha_attn1"] / med["hyena_x_attn1"],
            "mha_share_of_latency": 28 * med["mha_attn1"] / base}


def full(config: dict, text_tokens: int, batch: int, ctx: common.Context, args) -> dict:
    base = build(config, 28, ctx)
    grafted = graft(copy.deepcopy(base), make_plan("attn", "hyena_x", PAPER_LAYERS, num_layers=28))
    inputs = model_inputs(config, text_tokens, batch, ctx)

    def call(model):
        def fn():
            with torch.inference_mode():
                model(**inputs)
        return fn

    t = common.measure({"ungrafted": call(base), "grafted": call(grafted)}, ctx, warmup=args.full_warmup,
                       min_repeats=args.min_repeats, max_repeats=args.max_repeats, budget_s=args.budget,
                       log=common.log)
    return {"timings": t, "ungrafted_s": t["ungrafted"].median, "grafted_s": t["grafted"].median,
            "speedup": t["ungrafted"].median / t["grafted"].median}


def run(args) -> int:
    if args.quick:
        args.budget = min(args.budget, 0.5)
        if args.threads is None:
            args.threads = 1
    ctx = common.setup(args)
    config = dict(QUICK if args.quick else SIGMA_2K)
    if args.sample_size:
        config["sample_size"] = args.sample_size
    text_tokens = args.text_tokens or (QUICK_TEXT_TOKENS if args.quick else TEXT_TOKENS)
    modes = {"auto": ["both"] if args.quick else (["full"] if ctx.is_cuda else ["compose"]),
             "both": ["compose", "full"]}.get(args.mode, [args.mode])
    if modes == ["both"]:
        modes = ["compose", "full"]
    flops = analytic_flops(config, text_tokens, PAPER_LAYERS)
    common.header(ctx, f"PixArt-Σ transformer, {flops['tokens']} tokens, batch {args.batch}, {ctx.dtype_name}: "
                       f"Hyena-X in layers {list(PAPER_LAYERS)} vs ungrafted")
    results = {"analytic_flops": flops}
    for mode in modes:
        common.log(f"\nmode {mode}")
        results[mode] = (compose if mode == "compose" else full)(config, text_tokens, args.batch, ctx, args)
    rows = []
    for mode in modes:
        r = results[mode]
        how = ("composed: non-block + 28 MHA blocks vs non-block + 14 MHA + 14 Hyena-X blocks (each block timed at "
               "full size)" if mode == "compose" else "whole 28-layer model, measured end to end")
        rows.append([mode, common.fmt_time(r["ungrafted_s"]), common.fmt_time(r["grafted_s"]),
                     common.fmt_num(r["speedup"], 2, "×"), how])
    rows.append(["analytic FLOPs", common.fmt_flops(flops["ungrafted"]), common.fmt_flops(flops["grafted"]),
                 common.fmt_num(flops["speedup"], 2, "×"), "2 × MACs of matmuls/convs"])
    rows.append(["paper (H100)", "–", "–", f"{PAPER_SPEEDUP:.2f}×", "one forward pass, wall clock [paper §8]"])
    table = common.format_table(["", "ungrafted", "grafted", "speed-up", "how"], rows)
    print("\n" + table)
    if "compose" in results:
        c = results["compose"]
        tm = c["timings"]
        detail = common.format_table(
            ["part", "median", "per-block speed-up"],
            [["non-block parts", common.fmt_time(tm["non_block"].median), ""],
             ["MHA block", common.fmt_time(tm["mha_block"].median), ""],
             ["Hyena-X block", common.fmt_time(tm["hyena_x_block"].median), common.fmt_num(c["block_speedup"], 2, "×")],
             ["MHA attn1 alone", common.fmt_time(tm["mha_attn1"].median), ""],
             ["Hyena-X attn1 alone", common.fmt_time(tm["hyena_x_attn1"].median),
              common.fmt_num(c["attn1_speedup"], 2, "×")]])
        print("\n" + detail)
        print(f"self-attention share of the ungrafted forward: measured {c['mha_share_of_latency']:.0%} "
              f"(FLOPs {flops['mha_share_of_flops']:.0%}; paper: > 62 % of generation latency)")
        table += "\n\n" + detail
    mode = "full" if "full" in results and ("compose" not in results or ctx.is_cuda) else "compose"
    headline = results[mode]
    summary = {"speedup": headline["speedup"], "mode": mode,
               "analytic_flop_speedup": flops["speedup"], "paper_speedup": PAPER_SPEEDUP,
               "fraction_of_flop_speedup": headline["speedup"] / flops["speedup"]}
    if "compose" in results:
        summary["mha_share_of_latency"] = results["compose"]["mha_share_of_latency"]
    if "compose" in results and "full" in results:
        summary["compose_vs_full"] = results["compose"]["speedup"] / results["full"]["speedup"]
    notes = ["random weights (timing does not depend on them); batch 1; one forward pass of the transformer only "
             "(no VAE, no text encoder)"]
    if "compose" in modes:
        notes.append("compose mode: the 28-layer forward is composed from per-block timings at full size "
                     "(non-block + 28 × MHA block vs non-block + 14 × MHA + 14 × Hyena-X block); it is not a "
                     "measurement of the whole model")
    settings = {"config": config, "text_tokens": text_tokens, "batch": args.batch, "graft_layers": list(PAPER_LAYERS),
                "modes": modes, "dtype": ctx.dtype_name, "budget_s_per_case": args.budget,
                "min_repeats": args.min_repeats}
    path = common.write_result(ctx, NAME, settings=settings, results=results, summary=summary, table=table,
                               notes=notes)
    common.footer(ctx, path)
    return 0


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--mode", default="auto", choices=("auto", "compose", "full", "both"),
                   help="auto: full on a GPU, compose on CPU (both under --quick)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--sample-size", type=int, default=None,
                   help="latent size (default 256 = 2048² image = 16,384 tokens; e.g. 128 → 4,096 tokens)")
    p.add_argument("--text-tokens", type=int, default=None, help=f"caption tokens (default {TEXT_TOKENS})")
    p.add_argument("--budget", type=float, default=10.0, help="seconds of timed calls per case")
    p.add_argument("--min-repeats", type=int, default=2)
    p.add_argument("--max-repeats", type=int, default=10)
    p.add_argument("--full-warmup", type=int, default=1, help="warm-up calls per model in full mode")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
