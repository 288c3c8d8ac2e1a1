"""Table 3/4: the Table-3 design grid with Table-4 columns (quality + efficiency of MHA / MLP grafting).

Paper §6 Table 4 and §11: baseline, then MHA grafting (random init, self-grafting, 5 operators × 50/75/100 %), then
MLP grafting (random init, self-grafting, 3 operators × 50/75/100 %). Each configuration prints an ``ours`` line (the
reproduced numbers) and a ``paper`` line (the published DiT-XL/2 numbers).
"""
from __future__ import annotations

from typing import Sequence

from .common import (DASH, EFFICIENCY, METRICS, OURS, PAPER, PAPER_HIGHLIGHT_TOL, PAPER_METRICS, PAPER_POOR_FID,
                     POOR, Body, as_number, fmt, fmt_metric, has_paper, header_comment, latex_escape, preset_note,
                     present_extra_metrics, ratio_text, render, rounded, sanitize_label, scaled_threshold, src_label,
                     status_notes, values_of)
from .registry import is_grafted

EFF_KEYS = tuple(EFFICIENCY)


def baseline_fid(rows: Sequence[dict], source: str) -> float | None:
    base = next((r for r in rows if r["row"] == "baseline"), None)
    if base is None:
        return None
    return rounded(values_of(base, source, "metrics").get("fid"), METRICS["fid"].decimals)


def highlight_tolerance(preset: str, base_fid: float | None) -> float:
    """0.5 FID for the paper preset; for other presets the same fraction of the (reproduced) baseline FID."""
    return scaled_threshold(PAPER_HIGHLIGHT_TOL, preset, base_fid)


def poor_threshold(preset: str, base_fid: float | None) -> float:
    """FID above which a grafted row counts as a poor generation (✗): 50 for the paper preset, scaled otherwise."""
    return scaled_threshold(PAPER_POOR_FID, preset, base_fid)


def highlight_rule(rows: Sequence[dict], source: str = OURS, tolerance: float | None = None,
                   poor_fid: float | None = None) -> set[str]:
    """Row ids the paper's Table-4 rule bolds, applied to ``source`` ("ours" or "paper") numbers.

    Per operator (site + operator), among its settings whose FID is within ``tolerance`` of that source's baseline
    FID, the one with the largest FLOP reduction — or the smallest increase — in ΔFLOPs op (ties broken by ΔFLOPs ft;
    exact ties on the printed values are all selected). FIDs and FLOPs are compared as printed (rounded). Rows
    without an FID or a ΔFLOPs op value, poor rows and rows not done are never selected.
    """
    base = baseline_fid(rows, source)
    if base is None:
        return set()
    tol = PAPER_HIGHLIGHT_TOL if tolerance is None else tolerance
    groups: dict[tuple, list[tuple]] = {}
    for r in rows:
        if not is_grafted(r):
            continue
        if source == PAPER and (r.get("paper") or {}).get("poor"):
            continue
        fid = rounded(values_of(r, source, "metrics").get("fid"), 2)
        eff = values_of(r, source, "efficiency")
        op = rounded(eff.get("d_flops_op"), 2)
        ft = rounded(eff.get("d_flops_ft"), 2)
        if fid is None or op is None:
            continue
        if poor_fid is not None and fid > poor_fid:
            continue
        if round(fid - base, 6) <= tol + 1e-9:
            groups.setdefault((r.get("site"), r.get("operator")), []).append((op, ft if ft is not None else 0.0,
                                                                               r["row"]))
    chosen: set[str] = set()
    for cands in groups.values():
        best = min((op, ft) for op, ft, _ in cands)
        chosen.update(rid for op, ft, rid in cands if (op, ft) == best)
    return chosen


def paper_highlights() -> set[str]:
    """The Table-4 rule applied to the paper's own numbers (no results needed)."""
    from .paper import paper_values
    from .registry import registry_rows

    pv = paper_values("table3")
    rows = [dict(s.as_row(), status="missing", metrics={}, efficiency={}, paper=pv.get(s.row))
            for s in registry_rows("table3")]
    return highlight_rule(rows, PAPER)


def _metric_cells(row: dict, source: str, keys: Sequence[str], poor: bool) -> list[str]:
    vals = values_of(row, source, "metrics")
    cells = []
    for k in keys:
        if poor and k in PAPER_METRICS:
            if source == OURS and k == "fid":
                cells.append(f"{POOR}\\,{{\\scriptsize({fmt_metric(k, vals.get(k))})}}")
            else:
                cells.append(POOR)
        elif source == OURS and k == "fid" and _fid_std(row) is not None and vals.get(k) is not None:
            cells.append(f"{fmt_metric(k, vals.get(k))}\\,{{\\scriptsize$\\pm${fmt_metric(k, _fid_std(row))}}}")
        else:
            cells.append(fmt_metric(k, vals.get(k)))
    return cells


def _fid_std(row: dict) -> float | None:
    """Our FID's bootstrap spread over the generated set (``metrics.frechet.bootstrap_frechet``), when recorded."""
    return as_number(((row.get("extra") or {}).get("other_metrics") or {}).get("fid_std"))


def _eff_cells(row: dict, source: str) -> list[str]:
    vals = values_of(row, source, "efficiency")
    return [fmt(vals.get(k), 2, signed=True) for k in EFF_KEYS]


def render_table3(rows: Sequence[dict], *, preset: str = "tiny", git_rev: str = "unknown",
                  results_rev: str | None = None, source: str = "", target: str = "table3",
                  highlight_paper: bool = True) -> str:
    """LaTeX for Table 3/4 from loader rows (``tables.loader.load_summary(..., "table3")``)."""
    metric_keys = list(PAPER_METRICS) + present_extra_metrics(rows)
    ours_base = baseline_fid(rows, OURS)
    tol = highlight_tolerance(preset, ours_base)
    poor_fid = poor_threshold(preset, ours_base)
    bold_ours = highlight_rule(rows, OURS, tol, poor_fid)
    bold_paper = highlight_rule(rows, PAPER) if highlight_paper else set()
    bold_cols = {metric_keys.index("fid"), len(metric_keys)}  # FID and ΔFLOPs op

    headers = [METRICS[k].header for k in metric_keys] + list(EFFICIENCY.values())
    body = Body.empty()
    block_starts = []
    group = None
    for r in rows:
        if r["group"] != group and r["row"] != "baseline":
            group = r["group"]
            body.group(group, 3, len(headers))  # unmatched rows: escaped by the loader
        label = r["label"]
        if not body.index or body.index[-1][0] != label:
            block_starts.append(len(body.index))  # a little space between operators
        ratio = ratio_text(r.get("ratio")) if r["row"] != "baseline" else DASH
        sources = [OURS, PAPER] if has_paper(r) else [OURS]
        for src in sources:
            if src == OURS:
                ours_fid = as_number(values_of(r, OURS, "metrics").get("fid"))
                poor = is_grafted(r) and ours_fid is not None and ours_fid > poor_fid
                chosen = r["row"] in bold_ours
            else:
                poor = bool(r["paper"].get("poor"))
                chosen = r["row"] in bold_paper
            cells = _metric_cells(r, src, metric_keys, poor) + _eff_cells(r, src)
            bold = [chosen and i in bold_cols for i in range(len(cells))]
            body.add((label, ratio, src_label(r, src)), cells, bold)
        body.statuses.append(r["status"])

    formulas = []
    for r in rows:
        src_text = (r.get("extra") or {}).get("flops_source")
        if r["status"] == "done" and src_text and not str(src_text).startswith("paper"):
            item = f"{r['label']} {ratio_text(r.get('ratio'))}: {latex_escape(src_text)}"
            formulas.append(item)
    notes = [
        "Each configuration: \\emph{ours} = reproduced, \\emph{paper} = published DiT-XL/2 value (Table 4).",
        f"\\textbf{{Bold}} (FID, $\\Delta$FLOPs op.): per operator, the setting within {tol:.2f} FID of the "
        "baseline with the largest FLOP reduction (or smallest increase), applied to our numbers against our "
        "baseline" + (" and, separately, to the paper's numbers (0.5 FID)." if highlight_paper else "."),
        f"{POOR}: poor generation, FID $>$ {poor_fid:.1f} (the paper does not publish these values).",
        "50/75\\,\\% = interleaved, 100\\,\\% = all layers. --: not available / not published (UNKNOWN).",
        ("Our $\\Delta$FLOPs not from the paper's formulas: " + "; ".join(formulas) + ".") if formulas else "",
        status_notes(body.statuses),
        preset_note(preset),
    ]
    caption = (f"Generation quality and efficiency of MHA / MLP grafting (the Table-3 grid with Table-4 columns), "
               f"preset \\texttt{{{latex_escape(preset)}}}: reproduced vs paper.")
    comment = header_comment(target, preset, source, results_rev, git_rev)
    nm = len(metric_keys)
    super_header = [
        rf" & & & \multicolumn{{{nm}}}{{c}}{{Generation quality}} & "
        rf"\multicolumn{{3}}{{c}}{{$\Delta$ vs baseline (\%)}} \\",
        rf"\cmidrule(lr){{4-{3 + nm}}} \cmidrule(lr){{{4 + nm}-{6 + nm}}}",
    ]
    return render(body, headers, ["Operator", "Ratio", ""], caption=caption,
                  label=sanitize_label(f"tab:{target}-{preset}"), comment=comment, notes=[n for n in notes if n],
                  block_starts=block_starts, extra_header_lines=super_header, size=r"\footnotesize",
                  tabcolsep="3pt")
