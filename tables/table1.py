"""Table 1 (iii/iv): stage-1 regression objective (L2 / L1 / Huber) for self-grafted MHA and MLP, FID without
finetuning. Per operator and source, the best objective is bold (ties included). Panels (i)/(ii), the per-layer
activation statistics of MHA and MLP outputs, follow as a second float in the same file (ours only)."""
from __future__ import annotations

import math
from typing import Sequence

from .common import (DASH, METRICS, OURS, PAPER, Body, as_number, fmt_metric, header_comment, latex_escape,
                     placeholder, preset_note, rounded, sanitize_label, status_notes, best_positions, render,
                     values_of)

OBJECTIVES = (("l2", "L2"), ("l1", "L1"), ("huber", r"Huber ($\delta$=1)"))


def _baseline_note(baseline: dict | None) -> str:
    if baseline is None:
        return ""
    ours = fmt_metric("fid", values_of(baseline, OURS, "metrics").get("fid"))
    if baseline["status"] != "done":
        ours = placeholder(baseline["status"])
    paper = fmt_metric("fid", values_of(baseline, PAPER, "metrics").get("fid"))
    return f"Baseline FID (nothing replaced): ours {ours}, paper {paper}."


def render_table1(rows: Sequence[dict], *, preset: str = "tiny", git_rev: str = "unknown",
                  results_rev: str | None = None, source: str = "", target: str = "table1") -> str:
    """LaTeX for Table 1 from loader rows (``load_summary(..., "table1")``)."""
    fid = METRICS["fid"]
    body = Body.empty()
    statuses = []
    sites = []
    baseline = next((r for r in rows if r["row"] == "baseline"), None)
    stats_ids = {rid for _, rid, _ in STATS_ROWS}
    rows_in = rows
    rows = [r for r in rows if r["row"] not in stats_ids or r.get("origin") == "unmatched"]  # panels (i)/(ii)
    for r in rows:
        if r.get("origin") == "unmatched" or r["row"] == "baseline":
            continue  # unknown rows have no cell here (the builder lists them on stderr); the baseline is a note
        if r["site"] not in sites:
            sites.append(r["site"])
    for site in sites:
        by_obj = {str(r["extra"].get("objective")): r for r in rows
                  if r["site"] == site and r.get("origin") != "unmatched"}
        label = next(iter(by_obj.values()))["label"]
        for src in (OURS, PAPER):
            cells, values = [], []
            for obj, _ in OBJECTIVES:
                r = by_obj.get(obj)
                if r is None:
                    cells.append(placeholder("missing") if src == OURS else "--")
                    values.append(None)
                    continue
                v = rounded(values_of(r, src, "metrics").get("fid"), fid.decimals)
                values.append(v)
                if src == OURS and r["status"] != "done":
                    cells.append(placeholder(r["status"]))
                    statuses.append(r["status"])
                else:
                    cells.append(fmt_metric("fid", v))
            best = best_positions(values, fid.higher_is_better)
            body.add((label, src), cells, [i in best for i in range(len(cells))])
    extra = [r" & & \multicolumn{3}{c}{FID~$\downarrow$ (stage 1 only, no finetuning)} \\", r"\cmidrule(lr){3-5}"]
    notes = [
        "Self-grafting with each stage-1 objective at the Table-1 layers, inserted into the pretrained model without "
        "stage 2. \\emph{ours} = reproduced, \\emph{paper} = published (Table 1). \\textbf{Bold}: best objective per "
        "operator and source. --: not published (UNKNOWN).",
        _baseline_note(baseline),
        status_notes(statuses + ([baseline["status"]] if baseline else [])),
        preset_note(preset),
    ]
    caption = f"Stage-1 regression objective, preset \\texttt{{{latex_escape(preset)}}}: reproduced vs paper."
    tex = render(body, [h for _, h in OBJECTIVES], ["Operator", ""], caption=caption,
                 label=sanitize_label(f"tab:{target}-{preset}"),
                 comment=header_comment(target, preset, source, results_rev, git_rev),
                 notes=[n for n in notes if n], extra_header_lines=extra)
    if has_activation_stats(rows_in):
        tex += render_activation_stats(rows_in, preset=preset, target=target)
    return tex


# --------------------------------------------------------------------------------------------------------------------
# Panels (i)/(ii): per-layer activation statistics of the teacher's MHA and MLP outputs
# --------------------------------------------------------------------------------------------------------------------

STATS_ROWS = (("attn", "attn-activation_stats", "(i) MHA outputs"),
              ("mlp", "mlp-activation_stats", "(ii) MLP outputs"))  # (site, row id, panel title)
STATS_COLUMNS = (("variance", "Var.", 1.0), ("max_abs", r"$\max|x|$", 1.0), ("outlier_frac", r"Outl.\ (\%)", 100.0))


def fmt_sig(value, digits: int = 3) -> str:
    """``digits`` significant digits: plain decimals for magnitudes in [0.01, 1e4), else ``m\\cdot10^{e}`` (the
    statistics span orders of magnitude across layers, so a fixed number of decimals would print zeros)."""
    x = as_number(value)
    if x is None:
        return DASH
    if x == 0:
        return "0"
    e = math.floor(math.log10(abs(x)))
    if -2 <= e < 4:
        text = f"{abs(x):.{max(0, digits - 1 - e)}f}"
    else:
        m = abs(x) / 10 ** e
        if round(m, digits - 1) >= 10:
            m, e = m / 10, e + 1
        text = f"${m:.{digits - 1}f}{{\\cdot}}10^{{{e}}}$"
    return f"$-${text}" if x < 0 else text


def _stats_of(row: dict | None) -> dict[int, dict]:
    """``{layer: statistics}`` of a done activation_stats row (``extra.activation_stats.layers``), else {}."""
    if row is None or row["status"] != "done":
        return {}
    stats = (row.get("extra") or {}).get("activation_stats")
    if not isinstance(stats, dict) or not isinstance(stats.get("layers"), list):
        return {}
    return {int(s["layer"]): s for s in stats["layers"] if isinstance(s, dict) and as_number(s.get("layer")) is not None}


def has_activation_stats(rows: Sequence[dict]) -> bool:
    ids = {rid for _, rid, _ in STATS_ROWS}
    return any(r["row"] in ids and r.get("origin") != "unmatched" for r in rows)


def render_activation_stats(rows: Sequence[dict], *, preset: str, target: str = "table1") -> str:
    """Panels (i)/(ii) as their own float: one line per layer (1-based, as the paper numbers layers), variance,
    max |x| and 6σ-outlier share of each site's outputs. Ours only: the paper's panel values are not published."""
    by_id = {r["row"]: r for r in rows if r.get("origin") != "unmatched"}
    per_site = {site: _stats_of(by_id.get(rid)) for site, rid, _ in STATS_ROWS}
    layers = sorted(set().union(*per_site.values()))
    statuses = [by_id[rid]["status"] if rid in by_id else "missing" for site, rid, _ in STATS_ROWS
                if not per_site[site]]
    body = Body.empty()
    for index in [str(layer + 1) for layer in layers] or ["all"]:
        cells = []
        for site, rid, _ in STATS_ROWS:
            row, stats = by_id.get(rid), per_site[site]
            for key, _, scale in STATS_COLUMNS:
                if not stats:
                    cells.append(placeholder(row["status"] if row else "missing"))
                    continue
                s = stats.get(int(index) - 1, {})
                v = as_number(s.get(key))
                cells.append(fmt_sig(None if v is None else v * scale))
        body.add((index,), cells)
    sigma = next((as_number((r.get("extra") or {}).get("activation_stats", {}).get("outlier_sigma"))
                  for r in by_id.values() if _stats_of(r)), None)
    samples = next((as_number((r.get("extra") or {}).get("activation_stats", {}).get("num_samples"))
                    for r in by_id.values() if _stats_of(r)), None)
    sigma_text = f"{sigma:g}" if sigma is not None else "6"
    over = f"{samples:.0f} stage-1 images" if samples is not None else "the stage-1 images"
    n = len(STATS_COLUMNS)
    extra = [" & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{title}}}" for _, _, title in STATS_ROWS) + r" \\",
             " ".join(rf"\cmidrule(lr){{{2 + i * n}-{1 + (i + 1) * n}}}" for i in range(len(STATS_ROWS)))]
    notes = [
        "Per-layer statistics of the pretrained teacher's MHA (i) and MLP (ii) outputs (before their gates) over "
        f"its stage-1 capture: {over}, one uniform timestep each, all tokens and channels. Var.: variance; "
        f"$\\max|x|$: largest magnitude; Outl.: share of elements with $|x-\\mu|>{sigma_text}\\sigma$. The paper "
        "shows these panels without saying which statistic they plot, and its values are not published (UNKNOWN): "
        "the statistics are our choice and only ours are printed (std, 99.9th-percentile $|x|$, excess kurtosis and "
        "the input variance are in the summary). Layers numbered from 1, as in the paper.",
        status_notes(statuses),
        preset_note(preset),
    ]
    caption = (f"Activation statistics of the teacher's MHA and MLP outputs per layer (Table~1 (i)/(ii)), preset "
               f"\\texttt{{{latex_escape(preset)}}}: reproduced only.")
    return render(body, [h for _ in STATS_ROWS for _, h, _ in STATS_COLUMNS], ["Layer"], caption=caption,
                  label=sanitize_label(f"tab:{target}-{preset}-activation-stats"),
                  comment="% Table 1 (i)/(ii): per-layer activation statistics", notes=[x for x in notes if x],
                  extra_header_lines=extra, size=r"\footnotesize")
