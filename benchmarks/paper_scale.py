"""Saved-activation bytes and seconds of one real block of each family and of each operator at the paper's width.

    python -m benchmarks.paper_scale            # width 1152, 16 heads: ~8 min on 2 CPU cores, < 8 GB of memory
    python -m benchmarks.paper_scale --quick    # width 64, 4 heads, tokens / 16: seconds (what the tests run)

Random weights, CPU, batch 1-2. For every probe (a DiT-XL/2 block, a PixArt-Σ block with 300 text tokens, and
MHA, Hyena-X/Y/SE, SWA, Mamba-2, MLP r=4/3/6 and MLP-Hyena-X as ``graft_core.operators.build`` makes them) one
forward records the bytes autograd saves for the backward (``benchmark.memory_model.saved_bytes``), then one backward
is timed (up to 4,096 tokens). The memory model (``benchmark.memory_model.fit``) is fitted per probe on the *fit* points (batch 1 at 1,024
and 4,096 tokens, batch 2 at 4,096) and must predict the *check* point (batch 2 at 16,384 tokens, PixArt-Σ 2K's token count) within
25 %; DiT's 256 tokens are measured at batch 1 and 2. Attention runs through SDPA (flash / memory-efficient path, as
on a GPU), so only sliding-window attention's ``[N, N]`` band mask grows with N². A bf16-autocast forward at batch 1,
4,096 tokens (DiT's block: 1,024; ``BF16_NOTE``) gives each probe's bf16/fp32 ratio of saved bytes (stage 2 trains
under bf16 autocast). ``--probes NAME ...`` re-measures some probes and keeps the others' records.

Training-state bytes (weights, gradients, AdamW, EMA) come from the parameter counts of the whole models, built on
the ``meta`` device (nothing allocated). The JSON (``benchmarks/results/paper_scale.json``) is rewritten after each
probe; ``benchmark.resources`` reads its per-token figures as the ``measured`` constants of the resource model.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/paper_scale.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmark.memory_model import fit, relative_error, saved_bytes
from benchmarks import common
from graft_core import operators

NAME = "paper_scale"
TOLERANCE = 0.25  # the fitted model must predict the check point within this relative error
OPERATOR_CASES = {"mha": {}, "hyena_x": {}, "hyena_y": {}, "hyena_se": {}, "swa": {"window": 4}, "mamba2": {},
                  "mlp": {}, "mlp_r3": {"ratio": 3}, "mlp_r6": {"ratio": 6}, "mlp_hyena_x": {}}
OPERATOR_OF = {"mlp_r3": "mlp", "mlp_r6": "mlp"}
TEXT_TOKENS = 300  # PixArt-Σ's T5 caption length
# CPU SDPA under bf16 autocast takes its math path at 256 tokens and keeps the attention matrix (MHA 53 KB/token vs
# 22 KB at 1,024 tokens, measured), which a GPU's flash kernel does not: bf16 ratios are measured at >= 1,024 tokens.
BF16_NOTE = "bf16 ratios at >= 1,024 tokens: CPU SDPA keeps the attention matrix in bf16 at 256 tokens, a GPU does not"
BACKWARD_MAX_TOKENS = 4096  # longer probes: forward only (their backward would double an ~8-minute run)


@dataclasses.dataclass(frozen=True)
class Scale:
    width: int
    heads: int
    fit: tuple[tuple[int, int], ...]  # (batch, tokens) the model is fitted on
    check: tuple[int, int]  # (batch, tokens) it must predict
    dit: tuple[tuple[int, int], ...]  # DiT-XL/2's 256 tokens
    text_tokens: int


FULL = Scale(width=1152, heads=16, fit=((1, 1024), (1, 4096), (2, 4096)), check=(2, 16384), dit=((1, 256), (2, 256)),
             text_tokens=TEXT_TOKENS)
QUICK = Scale(width=64, heads=4, fit=((1, 128), (1, 512), (2, 512)), check=(2, 2048), dit=((1, 16), (2, 16)), text_tokens=8)


# ------------------------------------------------------------------------------------------------------ probes
def dit_block(width: int, heads: int):
    """Block 0 of a DiT-XL/2-shaped DiT (adaLN-Zero), as ``graft_core.models.teacher.build_dit`` makes it."""
    from graft_core.presets import get_preset
    from graft_core.models.teacher import build_dit

    t = dataclasses.replace(get_preset("paper").teacher, num_layers=1, num_attention_heads=heads,
                            attention_head_dim=width // heads, pretrained=None)
    block = build_dit(t).transformer_blocks[0]

    def inputs(batch, tokens):
        return (torch.randn(batch, tokens, width, requires_grad=True),), {
            "timestep": torch.randint(0, 1000, (batch,)), "class_labels": torch.randint(0, 1000, (batch,))}
    return block, inputs


def pixart_block(width: int, heads: int, text_tokens: int = TEXT_TOKENS):
    """Block 0 of a PixArt-Σ-shaped transformer (adaLN-single, cross-attention to ``text_tokens`` caption tokens)."""
    from graft_core.text_to_image.pixart import PAPER_PIXART, build_pixart

    cfg = dataclasses.replace(PAPER_PIXART, num_layers=1, num_attention_heads=heads, attention_head_dim=width // heads,
                              pretrained=None, caption_channels=64)
    block = build_pixart(cfg).transformer_blocks[0]

    def inputs(batch, tokens):
        return (torch.randn(batch, tokens, width, requires_grad=True),), {
            "encoder_hidden_states": torch.randn(batch, text_tokens, width),
            "timestep": torch.randn(batch, 6 * width)}
    return block, inputs


def operator(name: str, width: int, heads: int, tokens: int):
    op = operators.build(OPERATOR_OF.get(name, name), width, num_heads=heads, seq_len=tokens, **OPERATOR_CASES[name])

    def inputs(batch, n):
        return (torch.randn(batch, n, width, requires_grad=True),), {}
    return op, inputs


def cases(scale: Scale) -> dict[str, tuple[str, callable]]:
    """Probe name → (kind, builder(tokens) -> (module, inputs))."""
    out = {"dit_block": ("block", lambda n: dit_block(scale.width, scale.heads)),
           "pixart_block": ("block", lambda n: pixart_block(scale.width, scale.heads, scale.text_tokens))}
    for name in OPERATOR_CASES:
        out[name] = ("operator", lambda n, name=name: operator(name, scale.width, scale.heads, n))
    return out


def points_of(name: str, scale: Scale) -> list[tuple[str, int, int, str]]:
    """(role, batch, tokens, dtype) probes of one case: fit / check / dit (fp32) and one bf16 point."""
    if name == "dit_block":  # DiT-XL/2's block sees 256 tokens; its bf16 ratio is taken at 1,024 (see BF16_NOTE)
        return [("dit", b, n, "fp32") for b, n in scale.dit] + [("ref", *scale.fit[0], "fp32"),
                                                                ("bf16", *scale.fit[0], "bf16")]
    pts = [("fit", b, n, "fp32") for b, n in scale.fit] + [("check", *scale.check, "fp32"),
                                                           ("bf16", *scale.fit[1], "bf16")]
    if name != "pixart_block":
        pts = [("dit", b, n, "fp32") for b, n in scale.dit] + pts
    return pts


def probe(build, batch: int, tokens: int, dtype: str) -> dict:
    torch.manual_seed(0)
    module, inputs = build(tokens)
    args, kwargs = inputs(batch, tokens)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
    with autocast:  # the backward is timed up to 4,096 tokens (the 16k check needs the saved bytes only)
        rec = saved_bytes(module, *args, backward=tokens <= BACKWARD_MAX_TOKENS, **kwargs)
    rec["params"] = sum(p.numel() for p in module.parameters())
    return rec


# ------------------------------------------------------------------------------------------------------ models
def model_params() -> dict:
    """Parameter counts of the whole paper models (built on the meta device: nothing allocated)."""
    from graft_core.text_to_image.pixart import PAPER_PIXART, build_pixart
    from graft_core.presets import get_preset
    from graft_core.models.teacher import build_dit

    with torch.device("meta"):
        dit = build_dit(dataclasses.replace(get_preset("paper").teacher, pretrained=None))
        pixart = build_pixart(dataclasses.replace(PAPER_PIXART, pretrained=None))
    return {"dit_xl_2": sum(p.numel() for p in dit.parameters()),
            "pixart_sigma": sum(p.numel() for p in pixart.parameters())}


def summarise(results: list[dict], scale: Scale) -> dict:
    """Per probe: the fitted model, its prediction of the check point and the error; bytes per token (fp32 at the
    largest fit point, at DiT's 256 tokens) and the bf16/fp32 ratio."""
    out = {}
    for name in dict.fromkeys(r["probe"] for r in results):
        rows = [r for r in results if r["probe"] == name]
        entry = {}
        fit_pts = [(r["batch"], r["tokens"], r["saved_bytes"]) for r in rows if r["role"] == "fit"]
        if fit_pts:
            model = fit(fit_pts)
            entry.update(per_token=round(model.per_token, 1), per_token2=round(model.per_token2, 5),
                         shared2=round(model.shared2, 5))
            check = next((r for r in rows if r["role"] == "check"), None)
            if check:
                pred = model.predict(check["batch"], check["tokens"])
                err = relative_error(pred, check["saved_bytes"])
                entry["check"] = {"batch": check["batch"], "tokens": check["tokens"], "predicted": int(pred),
                                  "measured": check["saved_bytes"], "relative_error": round(err, 4),
                                  "within": err <= TOLERANCE}
        dit = [r for r in rows if r["role"] == "dit"]
        if dit:
            r = dit[-1]
            entry["bytes_per_token_256"] = round(r["saved_bytes"] / (r["batch"] * r["tokens"]), 1)
        big = max((r for r in rows if r["role"] in ("fit", "dit")), key=lambda r: r["tokens"], default=None)
        bf16 = next((r for r in rows if r["role"] == "bf16"), None)
        if big and bf16:
            same = next((r for r in rows if r["role"] in ("fit", "dit", "ref") and r["batch"] == bf16["batch"]
                         and r["tokens"] == bf16["tokens"]), None)
            if same:
                entry["bf16_ratio"] = round(bf16["saved_bytes"] / same["saved_bytes"], 3)
        entry["bytes_per_token"] = round(big["saved_bytes"] / (big["batch"] * big["tokens"]), 1) if big else None
        entry["params"] = rows[0]["params"]
        out[name] = entry
    return out


def table(summary: dict) -> str:
    rows = []
    for name, e in summary.items():
        c = e.get("check") or {}
        rows.append([name, common.fmt_num((e.get("bytes_per_token") or 0) / 1e3, 1),
                     common.fmt_num((e.get("bytes_per_token_256") or 0) / 1e3, 1) if "bytes_per_token_256" in e
                     else "-", e.get("bf16_ratio", "-"),
                     common.fmt_num(c["measured"] / 2**30, 2) if c else "-",
                     common.fmt_num(c["predicted"] / 2**30, 2) if c else "-",
                     f"{100 * c['relative_error']:.1f} %" if c else "-"])
    return common.format_table(["probe", "KB/token (fit)", "KB/token (DiT tokens)", "bf16/fp32", "check GiB measured",
                                "check GiB predicted", "error"], rows)


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--probes", nargs="+", default=None, help="a subset of the probes (default: all); the other "
                                                            "probes' records of the same settings are kept")
    args = p.parse_args(argv)
    args.device, args.dtype = "cpu", "fp32"  # CPU probes; a GPU run belongs to benchmarks/gpu_smoke.py
    ctx = common.setup(args)
    scale = QUICK if args.quick else FULL
    common.header(ctx, f"Saved-activation bytes at width {scale.width} ({'quick' if args.quick else 'paper'})")
    all_cases = cases(scale)
    names = args.probes or list(all_cases)
    settings = {"width": scale.width, "heads": scale.heads, "fit": scale.fit, "check": scale.check,
                "dit": scale.dit, "text_tokens": scale.text_tokens, "tolerance": TOLERANCE, "probes": names}
    results: list[dict] = []
    params = model_params() if not args.quick else {}
    path = Path(args.out) / f"{NAME}{'-' + args.tag if args.tag else ''}{'-quick' if args.quick else ''}.json"
    if args.probes and path.exists():  # re-measure some probes: keep the others' records of the same settings
        old = json.loads(path.read_text())
        if {k: v for k, v in old["settings"].items() if k != "probes"} == json.loads(json.dumps(
                {k: v for k, v in settings.items() if k != "probes"})):
            results = [r for r in old["results"] if r["probe"] not in names]
            settings["probes"] = list(dict.fromkeys([r["probe"] for r in results] + names))
    path = None
    path = None
    for name in names:
        kind, build = all_cases[name]
        for role, batch, tokens, dtype in points_of(name, scale):
            rec = {"probe": name, "kind": kind, "role": role, "batch": batch, "tokens": tokens, "dtype": dtype,
                   **probe(build, batch, tokens, dtype)}
            results.append(rec)
            common.log(f"  {name:<13} {role:<5} batch {batch} × {tokens:>5} tokens {dtype}: saved "
                       f"{rec['saved_bytes'] / 2**20:9.1f} MiB ({rec['saved_bytes'] / (batch * tokens) / 1e3:6.1f} "
                       f"KB/token), fwd {rec['forward_s']:.2f} s, bwd {rec.get('backward_s', 0):.2f} s")
            summary = summarise(results, scale)
            checks = [e["check"]["within"] for e in summary.values() if "check" in e]
            path = common.write_result(ctx, NAME, settings=settings, results=results, table=table(summary),
                                       summary={"probes": summary, "model_params": params,
                                                "source": "measured (CPU, random weights)", "note": BF16_NOTE,
                                                "all_checks_within": all(checks) if checks else None})
    summary = summarise(results, scale)
    print()
    print(table(summary))
    if params:
        print(f"parameters: DiT-XL/2 {params['dit_xl_2'] / 1e6:.1f} M, PixArt-Σ {params['pixart_sigma'] / 1e6:.1f} M")
    common.footer(ctx, path)
    bad = [n for n, e in summary.items() if "check" in e and not e["check"]["within"]]
    if bad:
        print(f"memory model missed the check point by > {TOLERANCE:.0%} for: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
