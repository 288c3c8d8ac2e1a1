"""Table 5: PixArt-Σ text-to-image grafting (GenEval overall, speed-up). The tiny preset reports its own
text-conditioned accuracy in the same column (``extra.geneval_or_acc``), plus FID, parameters, the speed-up at a long
token count (``extra.speedup_long`` at ``extra.long_tokens``), the grafted model before stage 2 (``extra.stage1_only``)
and the "teacher + the identical LoRA stage 2" control (``extra.control_teacher_lora``) when the row recorded them."""
from __future__ import annotations

from typing import Sequence

from .common import (OURS, PAPER, Body, arrow, fmt, fmt_metric, fmt_params, fmt_speedup, has_paper,
                     header_comment, latex_escape, preset_note, render, sanitize_label, src_label, status_notes)
from .registry import is_diagnostic, skipped





def _cells(score, metrics: dict, params=None, speedup=None, speedup_long=None, long_col: bool = False) -> list[str]:
    cells = [fmt(score, 2), fmt_metric("fid", (metrics or {}).get("fid")), fmt_params(params), fmt_speedup(speedup)]
    return cells + [fmt_speedup(speedup_long)] if long_col else cells


def render_table5(rows: Sequence[dict], *, preset: str = "tiny", git_rev: str = "unknown",
                  results_rev: str | None = None, source: str = "", target: str = "table5") -> str:
    """LaTeX for Table 5 from loader rows (``load_summary(..., "table5")``)."""
    score = "GenEval" if preset == "paper" else "GenEval / acc."
    done_extras = [r.get("extra", {}) for r in rows if r["status"] == "done"]
    long_tokens = next((e["long_tokens"] for e in done_extras if e.get("long_tokens")), None)
    headers = [f"{score}~{arrow(True)}", f"FID~{arrow(False)}", "Params (M)", f"Speed-up~{arrow(True)}"]
    if long_tokens:
        headers.append(f"Speed-up @{int(long_tokens)}~{arrow(True)}")
    body = Body.empty()
    for r in rows:
        if skipped(r):
            continue  # planned on the small presets only
        for src in ([OURS, PAPER] if has_paper(r) else [OURS]):
            if src == PAPER:
                extra, metrics = r["paper"]["extra"], r["paper"].get("metrics") or {}
            else:
                done = r["status"] == "done"
                extra = r.get("extra", {}) if done else {}
                metrics = (r.get("metrics") or {}) if done else {}
            long = extra.get("speedup_long")
            if src == OURS and long is None and extra.get("speedup") == 1.0 and long_tokens:
                long = 1.0  # the teacher (baseline, control) is its own reference at any token count
            body.add((r["label"], src_label(r, src)),
                     _cells(extra.get("geneval_or_acc"), metrics, extra.get("params_m"), extra.get("speedup"),
                            long, bool(long_tokens)))
        body.statuses.append(r["status"])
    diagnostics = any(is_diagnostic(r) and r["status"] != "missing" for r in rows)
    notes = [
        "\\emph{ours} = reproduced, \\emph{paper} = published (Table 5; GenEval overall, 2048$\\times$2048). "
        "Speed-up: one forward pass relative to the baseline. --: not available (UNKNOWN).",
        (f"Speed-up @{int(long_tokens)}: the same models' blocks timed at {int(long_tokens)} tokens."
         if long_tokens else ""),
        ("Stage 1 only: the grafted model before its LoRA stage 2. The control row is the teacher put through the "
         "identical LoRA stage 2 on the same synthetic pairs." if diagnostics else ""),
        status_notes(body.statuses),
        preset_note(preset),
    ]
    caption = f"Text-to-image grafting, preset \\texttt{{{latex_escape(preset)}}}: reproduced vs paper."
    return render(body, headers, ["Model", ""], caption=caption, label=sanitize_label(f"tab:{target}-{preset}"),
                  comment=header_comment(target, preset, source, results_rev, git_rev),
                  notes=[n for n in notes if n])
