"""The numbers behind Fig. 4 as small tables: (a) stage-2 data 10 % vs 20 %, (b) layer selection for Hyena-X 50 %."""
from __future__ import annotations

from typing import Sequence

from .common import (DASH, METRICS, OURS, Body, as_number, best_positions, fmt_metric, header_comment, latex_escape,
                     placeholder, preset_note, render, rounded, sanitize_label, status_notes, values_of)

BORROWED = r"$^{\ast}$"


def _ours(r: dict | None) -> str:
    if r is None:
        return placeholder("missing")
    if r["status"] != "done":
        return placeholder(r["status"])
    text = fmt_metric("fid", values_of(r, OURS, "metrics").get("fid"))
    return text + (BORROWED if r.get("origin") == "table3" else "")


def _paper(r: dict | None) -> str:
    if r is None or not r.get("paper"):
        return DASH
    text = fmt_metric("fid", r["paper"]["metrics"].get("fid"))
    alts = r["paper"].get("alternatives") or []
    if alts:
        text += "$^{a}$"
    elif "checkpoint name only" in (r["paper"].get("note") or ""):
        text += "$^{c}$"
    return text


def render_fig4a(rows: Sequence[dict], *, preset: str = "tiny", git_rev: str = "unknown",
                 results_rev: str | None = None, source: str = "", target: str = "fig4a") -> str:
    """FID of the 50 %-interleaved MHA hybrids with 10 % vs 20 % stage-2 data (Fig. 4a)."""
    body = Body.empty()
    ops: list[str] = []
    for r in rows:
        if r.get("origin") != "unmatched" and r["operator"] not in ops:
            ops.append(r["operator"])
    statuses, alt_texts = [], []
    for op in ops:
        by_data = {as_number(r["extra"].get("stage2_data")): r for r in rows
                   if r["operator"] == op and r.get("origin") != "unmatched"}
        cells, label = [], None
        for data in (10.0, 20.0):
            r = by_data.get(data)
            label = label or (r["label"] if r else op)
            cells += [_ours(r), _paper(r)]
            if r is not None:
                statuses.append(r["status"])
                for alt in (r.get("paper") or {}).get("alternatives") or []:
                    alt_texts.append(f"{r['label']} 20\\,\\%: "
                                     f"{fmt_metric('fid', alt['metrics'].get('fid'))} "
                                     f"({latex_escape(alt.get('note') or '')})")
        body.add((label,), cells)
    extra = [r" & \multicolumn{2}{c}{10\,\% data} & \multicolumn{2}{c}{20\,\% data} \\",
             r"\cmidrule(lr){2-3} \cmidrule(lr){4-5}"]
    headers = ["ours", "paper", "ours", "paper"]
    notes = [
        "FID~$\\downarrow$ of the 50\\,\\% interleaved MHA hybrids after stage 2 with 10\\,\\% vs 20\\,\\% data.",
        f"{BORROWED}\\,taken from Table 4's 50\\,\\% row (this target has not written its own)."
        if any(r.get("origin") == "table3" for r in rows) else "",
        "$^{c}$\\,value known only from a released checkpoint's name, not from the paper text.",
        ("$^{a}$\\,conflicting published value: " + "; ".join(alt_texts) + ".") if alt_texts else "",
        status_notes(statuses),
        preset_note(preset),
    ]
    caption = f"Data-scale ablation (Fig.~4a), preset \\texttt{{{latex_escape(preset)}}}: reproduced vs paper."
    return render(body, headers, ["Operator"], caption=caption, label=sanitize_label(f"tab:{target}-{preset}"),
                  comment=header_comment(target, preset, source, results_rev, git_rev),
                  notes=[n for n in notes if n], extra_header_lines=extra)


def render_fig4b(rows: Sequence[dict], *, preset: str = "tiny", git_rev: str = "unknown",
                 results_rev: str | None = None, source: str = "", target: str = "fig4b") -> str:
    """FID of Hyena-X at 50 % with different layer selections (Fig. 4b). Bold: best per column."""
    fid = METRICS["fid"]
    body = Body.empty()
    statuses = []
    ours_vals = [rounded(values_of(r, OURS, "metrics").get("fid"), 2) for r in rows]
    paper_vals = [rounded(((r.get("paper") or {}).get("metrics") or {}).get("fid"), 2) for r in rows]
    ours_vals = [v if r["status"] == "done" else None for v, r in zip(ours_vals, rows)]
    best_o = best_positions(ours_vals, fid.higher_is_better)
    best_p = best_positions(paper_vals, fid.higher_is_better)
    for i, r in enumerate(rows):
        statuses.append(r["status"])
        body.add((r["label"],), [_ours(r), _paper(r)], [i in best_o, i in best_p])
    notes = [
        "FID~$\\downarrow$ of Hyena-X replacing half of the MHA layers, chosen by: every second layer "
        "(interleaved), the most / least local layers by band-$k$ locality (Fig.~2), or the last half (deep). "
        "The paper's top-/low-local layer lists are UNKNOWN. \\textbf{Bold}: best per column.",
        status_notes(statuses),
        preset_note(preset),
    ]
    caption = f"Layer-selection ablation (Fig.~4b), preset \\texttt{{{latex_escape(preset)}}}: reproduced vs paper."
    return render(body, [f"ours {fid.header}", f"paper {fid.header}"], ["Selection"], caption=caption,
                  label=sanitize_label(f"tab:{target}-{preset}"),
                  comment=header_comment(target, preset, source, results_rev, git_rev),
                  notes=[n for n in notes if n])
