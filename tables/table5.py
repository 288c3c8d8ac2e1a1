"""Table 5: PixArt-Σ text-to-image grafting (GenEval overall, speed-up). The tiny preset reports its own
text-conditioned accuracy in the same column (``extra.geneval_or_acc``), plus FID, parameters, the speed-up at a long
token count (``extra.speedup_long`` at ``extra.long_tokens``), the grafted model before stage 2 (``extra.stage1_only``)
and the "teacher + the identical LoRA stage 2" control (``extra.control_teacher_lora``) when the row recorded them."""
from __future__ import annotations

from typing import Sequence

from .common import (OURS, PAPER, Body, arrow, fmt, fmt_metric, fmt_params, fmt_speedup, has_paper,
                     header_comment, latex_escape, preset_note, render, sanitize_label, src_label, status_notes)

CONTROL_LABEL = "Teacher + same LoRA stage 2 (control)"




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
    control = None
    for r in rows:
        for src in ([OURS, PAPER] if has_paper(r) else [OURS]):
            if src == PAPER:
                extra, metrics = r["paper"]["extra"], r["paper"].get("metrics") or {}
            else:
                done = r["status"] == "done"
                extra = r.get("extra", {}) if done else {}
                metrics = (r.get("metrics") or {}) if done else {}
            body.add((r["label"], src_label(r, src)),
                     _cells(extra.get("geneval_or_acc"), metrics, extra.get("params_m"), extra.get("speedup"),
                            extra.get("speedup_long"), bool(long_tokens)))
            stage1 = extra.get("stage1_only") if src == OURS else None
            if stage1:
                body.add((r["label"], "ours, stage 1 only"),
                         _cells(stage1.get("geneval_or_acc"), stage1.get("metrics"), long_col=bool(long_tokens)))
            if src == OURS and extra.get("control_teacher_lora"):
                control = (extra["control_teacher_lora"], extra.get("teacher_params_m"))
        body.statuses.append(r["status"])
    if control:
        record, params = control
        body.add((CONTROL_LABEL, OURS), _cells(record.get("geneval_or_acc"), record.get("metrics"), params, 1.0,
                                               1.0 if long_tokens else None, bool(long_tokens)))
    notes = [
        "\\emph{ours} = reproduced, \\emph{paper} = published (Table 5; GenEval overall, 2048$\\times$2048). "
        "Speed-up: one forward pass relative to the baseline. --: not available (UNKNOWN).",
        (f"Speed-up @{int(long_tokens)}: the same models' blocks timed at {int(long_tokens)} tokens."
         if long_tokens else ""),
        ("\\emph{stage 1 only}: the grafted model before its LoRA stage 2. The control row is the teacher put "
         "through the identical LoRA stage 2 on the same synthetic pairs." if control else ""),
        status_notes(body.statuses),
        preset_note(preset),
    ]
    caption = f"Text-to-image grafting, preset \\texttt{{{latex_escape(preset)}}}: reproduced vs paper."
    return render(body, headers, ["Model", ""], caption=caption, label=sanitize_label(f"tab:{target}-{preset}"),
                  comment=header_comment(target, preset, source, results_rev, git_rev),
                  notes=[n for n in notes if n])
