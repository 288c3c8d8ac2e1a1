"""The ``search`` target (beyond the paper): searched layer selections vs the paper's interleaved and locality-ranked
choices at equal cost — FID ± its spread, ΔFLOPs (Table 4's columns) and the chosen layers; and FID against ΔFLOPs,
one line per strategy (``tables.figures.plot_search``)."""
from __future__ import annotations

from typing import Sequence

from .common import (DASH, EFFICIENCY, METRICS, OURS, Body, as_number, best_positions, fmt, fmt_metric,
                     header_comment, latex_escape, placeholder, preset_note, render, rounded, sanitize_label,
                     status_notes, values_of)

STRATEGIES = {"interleaved": "Interleaved", "top_local": "Top-local (Fig.~4b)", "stage1_error": "Stage-1 error",
              "greedy": "Greedy validation", "cost_aware": "Cost-aware"}
PLAIN = {"interleaved": "interleaved", "top_local": "top-local", "stage1_error": "stage-1 error",
         "greedy": "greedy validation", "cost_aware": "cost-aware"}
SITES = {"attn": "MHA: Hyena-X", "mlp": "MLP: r=3"}
SHORT_OPS = {"hyena_x": "X", "swa": "S", "mamba2": "M", "hyena_y": "Y", "hyena_se": "E", "mlp": "r"}


def fid_std(row: dict) -> float | None:
    """Our FID's bootstrap spread over the generated set, when the evaluation recorded it."""
    return as_number(((row.get("extra") or {}).get("other_metrics") or {}).get("fid_std"))


def layers_text(row: dict) -> str:
    """The chosen 0-based layers; for a per-layer choice of operators each layer tagged by its operator."""
    extra = row.get("extra") or {}
    layers = extra.get("layers")
    if not layers:
        return DASH if row["status"] == "done" else placeholder(row["status"])
    ops = extra.get("operators") or {}
    return ",".join(f"{layer}" + (f"{SHORT_OPS.get(ops[str(layer)], ops[str(layer)])}" if ops else "")
                    for layer in layers)


def _fid(row: dict) -> str:
    if row["status"] != "done":
        return placeholder(row["status"])
    value = values_of(row, OURS, "metrics").get("fid")
    spread = fid_std(row)
    text = fmt_metric("fid", value)
    return text + (f"\\,{{\\scriptsize$\\pm${fmt_metric('fid', spread)}}}" if spread is not None and value is not None
                   else "")


def render_search(rows: Sequence[dict], *, preset: str = "tiny", git_rev: str = "unknown",
                  results_rev: str | None = None, source: str = "", target: str = "search") -> str:
    """One block per site, a line per (budget, strategy); bold: the best FID of each (site, budget)."""
    body = Body.empty()
    statuses = []
    headers = [f"{METRICS['fid'].header}", *(EFFICIENCY[k] for k in ("d_flops_op", "d_flops_ft")), "Layers"]
    for site in SITES:
        part = [r for r in rows if r.get("site") == site and r.get("origin") != "unmatched"]
        if not part:
            continue
        body.group(SITES[site], 2, len(headers))
        for budget in sorted({r.get("ratio") for r in part if r.get("ratio") is not None}):
            block = [r for r in part if r.get("ratio") == budget]
            fids = [rounded(values_of(r, OURS, "metrics").get("fid"), 2) if r["status"] == "done" else None
                    for r in block]
            best = best_positions(fids, METRICS["fid"].higher_is_better)
            for i, r in enumerate(block):
                statuses.append(r["status"])
                strategy = (r.get("extra") or {}).get("strategy") or r.get("strategy")
                eff = values_of(r, OURS, "efficiency")
                cells = [_fid(r), fmt(eff.get("d_flops_op"), 2, signed=True),
                         fmt(eff.get("d_flops_ft"), 2, signed=True), layers_text(r)]
                body.add((f"{budget}\\,\\%", STRATEGIES.get(strategy, latex_escape(strategy))), cells,
                         [i in best, False, False, False])
    notes = [
        "Beyond the paper. FID~$\\downarrow$ ($\\pm$ its bootstrap spread over the generated set, where recorded) "
        "after the same stage~2 and evaluation; $\\Delta$FLOPs in \\% of the teacher's operators (Table~4's "
        "columns). Layers are 0-based; \\emph{interleaved} and \\emph{top-local} are the paper's choices (the "
        "table3 and fig4b runs), \\emph{stage-1 error} ranks layers by the stage-1 held-out error, \\emph{greedy "
        "validation} adds one layer at a time by the least rise of a held-out diffusion loss (fixed noise, "
        "timesteps and labels; no stage~2 inside), \\emph{cost-aware} chooses per layer among Hyena-X (X), SWA (S) "
        "and Mamba-2 (M, when it saves FLOPs) by loss rise per FLOP saved, until it saves as many FLOPs (op+ft) as "
        "Hyena-X in that many layers. \\textbf{Bold}: best FID per site and budget.",
        status_notes(statuses),
        preset_note(preset),
    ]
    caption = f"Where to graft: searched vs fixed layer selections, preset \\texttt{{{latex_escape(preset)}}}."
    return render(body, headers, ["Budget", "Selection"], caption=caption,
                  label=sanitize_label(f"tab:{target}-{preset}"),
                  comment=header_comment(target, preset, source, results_rev, git_rev),
                  notes=[n for n in notes if n])
