"""Table 2: full self-grafting (every MHA, or every MLP, replaced) vs stage-1 / stage-2 data."""
from __future__ import annotations

from typing import Sequence

from .common import (DASH, METRICS, OURS, PAPER, PAPER_METRICS, Body, fmt_metric, fmt_pct, has_paper,
                     header_comment, latex_escape, present_extra_metrics, preset_note, render,
                     sanitize_label, src_label, status_notes, values_of)


def _data_cells(row: dict, source: str) -> list[str]:
    extra = (row.get("paper") or {}).get("extra", {}) if source == PAPER else row.get("extra", {})
    return [fmt_pct(extra.get("stage1_data")), fmt_pct(extra.get("stage2_data"))]


def render_table2(rows: Sequence[dict], *, preset: str = "tiny", git_rev: str = "unknown",
                  results_rev: str | None = None, source: str = "", target: str = "table2") -> str:
    """LaTeX for Table 2 from loader rows (``load_summary(..., "table2")``)."""
    metric_keys = list(PAPER_METRICS) + present_extra_metrics(rows)
    headers = ["Stage 1", "Stage 2"] + [METRICS[k].header for k in metric_keys]
    body = Body.empty()
    group = None
    for r in rows:
        if r["group"] != group and r["row"] != "baseline":
            group = r["group"]
            body.group(group, 2, len(headers))
        for src in ([OURS, PAPER] if has_paper(r) else [OURS]):
            vals = values_of(r, src, "metrics")
            if src == OURS and r["status"] != "done":
                metrics = [DASH] * len(metric_keys)
            else:
                metrics = [fmt_metric(k, vals.get(k)) for k in metric_keys]
            data = _data_cells(r, src)
            if r["row"] == "baseline" or r.get("operator") == "random_init":
                data = [DASH, DASH]
            body.add((r["label"], src_label(r, src)), data + metrics)
        body.statuses.append(r["status"])
    notes = [
        "Stage 1 / Stage 2: share of the training set used by each stage (\\% of ImageNet-1K for the paper); "
        "--: stage not run. \\emph{ours} = reproduced, \\emph{paper} = published (Table 2).",
        status_notes(body.statuses),
        preset_note(preset),
    ]
    caption = (f"Full self-grafting vs data, preset \\texttt{{{latex_escape(preset)}}}: reproduced vs paper.")
    return render(body, headers, ["Setting", ""], caption=caption, label=sanitize_label(f"tab:{target}-{preset}"),
                  comment=header_comment(target, preset, source, results_rev, git_rev),
                  notes=[n for n in notes if n])
