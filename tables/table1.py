"""Table 1 (iii/iv): stage-1 regression objective (L2 / L1 / Huber) for self-grafted MHA and MLP, FID without
finetuning. Per operator and source, the best objective is bold (ties included)."""
from __future__ import annotations

from typing import Sequence

from .common import (METRICS, OURS, PAPER, Body, fmt_metric, header_comment, latex_escape, placeholder,
                     preset_note, rounded, sanitize_label, status_notes, best_positions, render, values_of)

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
    return render(body, [h for _, h in OBJECTIVES], ["Operator", ""], caption=caption,
                  label=sanitize_label(f"tab:{target}-{preset}"),
                  comment=header_comment(target, preset, source, results_rev, git_rev),
                  notes=[n for n in notes if n], extra_header_lines=extra)
