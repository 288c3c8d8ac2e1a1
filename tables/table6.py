"""Table 6: depth → width via parallel blocks. The comparison rows are the paper's (copied there from TinyFusion
Table 1) and are printed as paper-only lines; the grafted rows carry ours + paper lines."""
from __future__ import annotations

from typing import Sequence

from .common import (DASH, METRICS, OURS, PAPER, PAPER_METRICS, Body, arrow, as_number, fmt_metric, fmt_params,
                     fmt_speedup, has_paper, header_comment, latex_escape, preset_note, render, sanitize_label,
                     src_label, status_notes, values_of)
from .paper import table6_baselines
from .registry import is_diagnostic, skipped


def _iters(value) -> str:
    x = as_number(value)
    if x is None:
        return DASH
    if x >= 1000:
        return f"{x / 1000:.0f}K" if x % 1000 == 0 else f"{x / 1000:.1f}K"
    return f"{x:.0f}"


def _int(value) -> str:
    x = as_number(value)
    return DASH if x is None else f"{x:.0f}"




def _cells(metrics: dict, extra: dict, show_extra: bool = True) -> list[str]:
    extra = extra if show_extra else {}
    return ([_int(extra.get("depth")), fmt_params(extra.get("params_m")), _iters(extra.get("iters"))]
            + [fmt_metric(k, metrics.get(k)) for k in PAPER_METRICS] + [fmt_speedup(extra.get("speedup"))])


def render_table6(rows: Sequence[dict], *, preset: str = "tiny", git_rev: str = "unknown",
                  results_rev: str | None = None, source: str = "", target: str = "table6") -> str:
    """LaTeX for Table 6 from loader rows (``load_summary(..., "table6")``) plus the paper's comparison rows."""
    headers = ["Depth", "Params (M)", "Iters"] + [METRICS[k].header for k in PAPER_METRICS] + \
        [f"Speed-up~{arrow(True)}"]
    body = Body.empty()
    body.group("Comparison rows (paper only; from TinyFusion Table 1)", 2, len(headers))
    for b in table6_baselines():
        body.add((latex_escape(b["label"]), PAPER), _cells(b["metrics"], b["extra"]))
    teacher_params = next((as_number(r.get("extra", {}).get("teacher_params_m")) for r in rows
                           if r["status"] == "done" and r.get("extra", {}).get("teacher_params_m")), None)
    group = None
    for r in rows:
        if skipped(r):
            continue  # planned on the small presets only
        if r["group"] != group:
            group = r["group"]
            body.group(group, 2, len(headers))
        for src in ([OURS, PAPER] if has_paper(r) else [OURS]):
            if src == PAPER:
                cells = _cells(r["paper"]["metrics"], r["paper"]["extra"])
            else:
                extra = dict(r.get("extra", {}))
                if extra.get("params_m") is None and r.get("operator") != "parallel_stage1":
                    extra["params_m"] = teacher_params  # the teacher's and the control's: the sequential model
                cells = _cells(values_of(r, OURS, "metrics"), extra)
                if r["status"] != "done":  # keep the planned depth, blank everything measured
                    cells = cells[:1] + [DASH] * (len(cells) - 1)
            body.add((r["label"], src_label(r, src)), cells)
        body.statuses.append(r["status"])
    notes = [
        "Speed-up: one forward pass relative to DiT-XL/2 (paper: H100, batch 2). The paper's comparison rows are "
        "copied from TinyFusion Table 1 (TinyDiT-D14 appears at 100K and 500K iterations; which one the paper used "
        "is UNKNOWN). \\emph{ours} = reproduced, \\emph{paper} = published. --: not published (UNKNOWN).",
        ("Stage 1 only: the parallel-pair model before stage 2. The control row is the sequential teacher put "
         "through the identical stage 2." if any(is_diagnostic(r) and r["status"] != "missing"
                                                   for r in rows) else ""),
        status_notes(body.statuses),
        preset_note(preset),
    ]
    caption = f"Depth$\\to$width via parallel blocks, preset \\texttt{{{latex_escape(preset)}}}: reproduced vs paper."
    return render(body, headers, ["Method", ""], caption=caption, label=sanitize_label(f"tab:{target}-{preset}"),
                  comment=header_comment(target, preset, source, results_rev, git_rev),
                  notes=[n for n in notes if n])
