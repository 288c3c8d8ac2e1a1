"""Table 5: PixArt-Σ text-to-image grafting (GenEval overall, speed-up). The tiny preset reports its own
text-conditioned accuracy in the same column (``extra.geneval_or_acc``)."""
from __future__ import annotations

from typing import Sequence

from .common import (DASH, OURS, PAPER, Body, as_number, arrow, fmt, has_paper, header_comment, latex_escape,
                     preset_note, render, sanitize_label, src_label, status_notes)


def _speedup(value) -> str:
    x = as_number(value)
    return DASH if x is None else fmt(x, 2) + r"$\times$"


def render_table5(rows: Sequence[dict], *, preset: str = "tiny", git_rev: str = "unknown",
                  results_rev: str | None = None, source: str = "", target: str = "table5") -> str:
    """LaTeX for Table 5 from loader rows (``load_summary(..., "table5")``)."""
    score = "GenEval" if preset == "paper" else "GenEval / acc."
    headers = [f"{score}~{arrow(True)}", f"Speed-up~{arrow(True)}"]
    body = Body.empty()
    for r in rows:
        for src in ([OURS, PAPER] if has_paper(r) else [OURS]):
            if src == PAPER:
                extra = r["paper"]["extra"]
            else:
                extra = r.get("extra", {}) if r["status"] == "done" else {}
            cells = [fmt(extra.get("geneval_or_acc"), 2), _speedup(extra.get("speedup"))]
            body.add((r["label"], src_label(r, src)), cells)
        body.statuses.append(r["status"])
    notes = [
        "\\emph{ours} = reproduced, \\emph{paper} = published (Table 5; GenEval overall, 2048$\\times$2048). "
        "Speed-up: one forward pass relative to the baseline. --: not available (UNKNOWN).",
        status_notes(body.statuses),
        preset_note(preset),
    ]
    caption = f"Text-to-image grafting, preset \\texttt{{{latex_escape(preset)}}}: reproduced vs paper."
    return render(body, headers, ["Model", ""], caption=caption, label=sanitize_label(f"tab:{target}-{preset}"),
                  comment=header_comment(target, preset, source, results_rev, git_rev),
                  notes=[n for n in notes if n])
