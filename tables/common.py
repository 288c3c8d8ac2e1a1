"""Shared pieces of the table builders: metric registry, number formatting, LaTeX escaping, the Styler renderer.

Every table is a pure function ``rows -> str``. The rows come from ``tables.loader`` (registry order, each with its
reproduced values and the paper's published values under ``row["paper"]``). Numbers are rounded to the displayed
precision *before* any comparison (highlighting) and before they reach the Styler, so a bold cell is always decided on
what is printed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd

# --------------------------------------------------------------------------------------------------------------------
# Metric registry (direction, label, precision) — table code never hard-codes a direction
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # LaTeX
    higher_is_better: bool
    decimals: int

    @property
    def header(self) -> str:
        return f"{self.label}~{arrow(self.higher_is_better)}"


def arrow(higher_is_better: bool) -> str:
    return r"$\uparrow$" if higher_is_better else r"$\downarrow$"


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("is", "IS", True, 2),
        Metric("fid", "FID", False, 2),
        Metric("sfid", "sFID", False, 2),
        Metric("precision", "Prec.", True, 2),
        Metric("recall", "Rec.", True, 2),
        Metric("kid", "KID", False, 4),
        Metric("class_acc", "Acc.", True, 3),
    )
}
PAPER_METRICS = ("is", "fid", "sfid", "precision", "recall")  # the five the paper reports
EXTRA_METRICS = ("kid", "class_acc")  # tiny-preset extras: a column appears only when some reproduced row has it

EFFICIENCY: dict[str, str] = {  # key -> header under a "Δ vs baseline (%)" super-header (paper §4.8)
    "d_flops_op": "FLOPs op.",
    "d_flops_ft": "FLOPs ft.",
    "d_param": "Param",
}

# --------------------------------------------------------------------------------------------------------------------
# Placeholders and markers
# --------------------------------------------------------------------------------------------------------------------

DASH = "--"  # a missing / UNKNOWN / not-applicable cell (prints as an en dash)
POOR = r"\ding{55}"  # ✗ (pifont): poor generation, FID above the poor threshold
STATUS_MARKS = {"missing": r"\dag", "pending": r"\dag", "running": r"\ddag", "failed": r"\S"}
STATUS_NOTES = {r"\dag": "not yet run", r"\ddag": "running", r"\S": "failed"}
STATUSES = ("done", "running", "pending", "failed", "missing")
LATEX_PACKAGES = ("booktabs", "multirow", "amssymb", "pifont")

PAPER_BASELINE_FID = 2.27  # Table 4 baseline DiT-XL/2
PAPER_POOR_FID = 50.0  # Table 4: ✗ = FID > 50
PAPER_HIGHLIGHT_TOL = 0.5  # Table 4: "within 0.5 FID of the baseline"

# --------------------------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------------------------


def as_number(value: Any) -> float | None:
    """A finite float, or None for anything else (None, "", NaN, inf, non-numeric strings)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def rounded(value: Any, decimals: int) -> float | None:
    x = as_number(value)
    if x is None:
        return None
    r = round(x, decimals)
    return 0.0 if r == 0 else r  # no "-0.00"


def fmt(value: Any, decimals: int = 2, signed: bool = False) -> str:
    """Rounded number as LaTeX text; None → ``DASH``. Negative numbers get a real minus sign."""
    x = rounded(value, decimals)
    if x is None:
        return DASH
    text = f"{abs(x):.{decimals}f}"
    if x < 0:
        return f"$-${text}"
    if signed and x > 0:
        return f"+{text}"
    return text


def fmt_speedup(value: Any) -> str:
    """``1.43$\\times$``; None → ``DASH``."""
    x = as_number(value)
    return DASH if x is None else fmt(x, 2) + r"$\times$"


def fmt_params(value: Any) -> str:
    """Millions of parameters: whole numbers as the paper prints them, two decimals below 100M (tiny models)."""
    x = as_number(value)
    if x is None:
        return DASH
    return f"{x:.0f}" if x >= 100 else f"{x:.2f}"


def fmt_metric(key: str, value: Any) -> str:
    if key == "class_acc":
        x = as_number(value)
        if x is not None and x > 1.0:  # given in percent
            return fmt(x, 1)
    return fmt(value, METRICS[key].decimals)


def fmt_pct(value: Any) -> str:
    """A data fraction in percent as the paper prints it: "0.63\\%", "5.0\\%", "10.0\\%"."""
    x = as_number(value)
    if x is None:
        return DASH
    return f"{x:.2f}\\%" if x < 1 else f"{x:.1f}\\%"


def ratio_text(ratio: Any) -> str:
    x = as_number(ratio)
    return DASH if x is None else f"{x:.0f}\\%"


# --------------------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------------------

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_UNICODE = {
    "Σ": r"$\Sigma$", "Δ": r"$\Delta$", "δ": r"$\delta$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
    "×": r"$\times$", "–": "--", "—": "---", "−": "-", "✗": POOR, "⇒": r"$\Rightarrow$", "≤": r"$\le$",
    "≥": r"$\ge$", "±": r"$\pm$", "·": r"$\cdot$", "’": "'", "“": "``", "”": "''",
}


def latex_escape(text: Any) -> str:
    """Escape arbitrary text (e.g. a label read from disk) for LaTeX text mode; unmapped non-ASCII becomes '?'."""
    out = []
    for ch in str(text):
        if ch in _LATEX_SPECIALS:
            out.append(_LATEX_SPECIALS[ch])
        elif ch in _UNICODE:
            out.append(_UNICODE[ch])
        elif ord(ch) < 128:
            out.append(ch if ch.isprintable() else " ")
        else:
            out.append("?")
    return "".join(out)


def mark(status: str) -> str:
    """Superscript marker for a row that is not done ("" when done)."""
    sym = STATUS_MARKS.get(status)
    return f"$^{{{sym}}}$" if sym else ""


def status_notes(statuses: Iterable[str]) -> str:
    """Footnote text for the markers that occur, in a fixed order."""
    used = {STATUS_MARKS[s] for s in statuses if s in STATUS_MARKS}
    parts = [f"$^{{{sym}}}$\\,{note}" for sym, note in STATUS_NOTES.items() if sym in used]
    return "; ".join(parts) + "." if parts else ""


def header_comment(target: str, preset: str, source: str, results_rev: str | None, build_rev: str) -> str:
    """The comment block that opens every generated .tex (no timestamps: the output must be reproducible)."""
    return "\n".join(
        [
            f"% generated by `python -m tables.build --preset {preset} --target {target}`; do not edit",
            f"% built from graftbench @ {build_rev}; results: {source} @ {results_rev or 'unknown'}",
            f"% needs \\usepackage{{{','.join(LATEX_PACKAGES)}}}",
        ]
    )


# --------------------------------------------------------------------------------------------------------------------
# Rendering through pandas Styler.to_latex
# --------------------------------------------------------------------------------------------------------------------

GROUP_SENTINEL = "@@group@@"


@dataclass
class Body:
    """A table body under construction: one entry per printed line (data rows and group header rows)."""

    index: list[tuple]
    cells: list[list[str]]
    bold: list[list[bool]]
    statuses: list[str]

    @classmethod
    def empty(cls) -> "Body":
        return cls([], [], [], [])

    def group(self, title: str, nlevels: int, ncols: int) -> None:
        self.index.append((GROUP_SENTINEL + title,) + ("",) * (nlevels - 1))
        self.cells.append([""] * ncols)
        self.bold.append([False] * ncols)

    def add(self, index: tuple, cells: Sequence[str], bold: Sequence[bool] | None = None) -> None:
        self.index.append(tuple(index))
        self.cells.append(list(cells))
        self.bold.append(list(bold) if bold is not None else [False] * len(cells))


def render(
    body: Body,
    headers: Sequence[str],
    index_headers: Sequence[str],
    *,
    caption: str,
    label: str,
    comment: str,
    notes: Sequence[str] = (),
    column_format: str | None = None,
    extra_header_lines: Sequence[str] = (),
    block_starts: Iterable[int] = (),
    size: str = r"\small",
    tabcolsep: str = "4pt",
) -> str:
    """Render a ``Body`` with ``Styler.to_latex`` (booktabs rules, ``\\multirow`` index, bold through Styler props).

    Cell strings are final LaTeX (numbers pre-rounded, text pre-escaped), so the Styler gets ``escape=None``.
    ``extra_header_lines`` go above the column header line (e.g. a ``\\multicolumn`` super-header + ``\\cmidrule``);
    ``block_starts`` are data-line positions that get a little vertical space above them.
    ``Styler.to_latex`` supplies the float, caption, booktabs rules and the ``\\multirow`` index; the column header
    line is written here (the Styler's would put index names on a second line).
    """
    nlev = len(index_headers)
    ncols = len(headers)
    index = pd.MultiIndex.from_tuples(body.index) if nlev > 1 else pd.Index([t[0] for t in body.index])
    cells = [[f"\\textbf{{{c}}}" if b and c not in ("", DASH) else c for c, b in zip(row, bold)]
             for row, bold in zip(body.cells, body.bold)]
    frame = pd.DataFrame(cells, index=index, columns=[f"c{i}" for i in range(ncols)])
    # Bold is applied above on the already-rounded strings: the index may repeat (e.g. "Random init" under MHA and
    # under MLP), which Styler.apply refuses.
    styler = frame.style.format(escape=None).format_index(escape=None, axis=0).hide(names=True, axis="index")
    latex = styler.to_latex(
        hrules=True,
        multirow_align="c",
        column_format=column_format or ("l" * nlev + "r" * ncols),
        caption=caption,
        label=label,
        position="tbp",
        position_float="centering",
    )
    return _postprocess(latex, body, headers, index_headers, comment, notes, extra_header_lines, set(block_starts),
                        size, tabcolsep)


def _postprocess(latex, body, headers, index_headers, comment, notes, extra_header_lines, block_starts,
                 size, tabcolsep) -> str:
    lines = latex.rstrip("\n").split("\n")
    top = lines.index(r"\toprule")
    mid = lines.index(r"\midrule", top)
    bottom = lines.index(r"\bottomrule", mid)
    header = " & ".join(list(index_headers) + list(headers)) + r" \\"
    data = lines[mid + 1 : bottom]
    if len(data) != len(body.index):
        raise AssertionError(f"Styler produced {len(data)} body lines for {len(body.index)} rows")
    width = len(index_headers) + len(headers)
    new_body: list[str] = []
    previous_rule = True  # right after the header's \midrule
    for i, line in enumerate(data):
        first = body.index[i][0]
        if isinstance(first, str) and first.startswith(GROUP_SENTINEL):
            title = first[len(GROUP_SENTINEL) :]
            if not previous_rule:
                new_body.append(r"\midrule")
            new_body.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{title}}}}} \\")
            previous_rule = False
            continue
        if i in block_starts and not previous_rule and not _after_group(body, i):
            new_body.append(r"\addlinespace[1pt]")
        new_body.append(line)
        previous_rule = False
    head_lines = lines[:top + 1]
    centering = head_lines.index(r"\centering")
    head_lines[centering + 1 : centering + 1] = [size, rf"\setlength{{\tabcolsep}}{{{tabcolsep}}}"]
    out = [comment] + head_lines + list(extra_header_lines) + [header, r"\midrule"] + new_body + lines[bottom:]
    if notes:
        end = out.index(r"\end{tabular}")
        text = " ".join(n for n in notes if n)
        out[end + 1 : end + 1] = [r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize " + text + "}"]
    return "\n".join(out) + "\n"


def _after_group(body: Body, i: int) -> bool:
    if i == 0:
        return True
    first = body.index[i - 1][0]
    return isinstance(first, str) and first.startswith(GROUP_SENTINEL)


def present_extra_metrics(rows: Sequence[dict]) -> list[str]:
    """Tiny-preset extras (KID, class accuracy) that at least one done reproduced row carries."""
    keys = []
    for key in EXTRA_METRICS:
        if any(r["status"] == "done" and as_number(r["metrics"].get(key)) is not None for r in rows):
            keys.append(key)
    return keys


def sanitize_label(text: str) -> str:
    """A ``\\label`` key: letters, digits, ':' and '-' only."""
    return re.sub(r"[^A-Za-z0-9:-]+", "-", text)


# --------------------------------------------------------------------------------------------------------------------
# "ours" / "paper" sub-rows
# --------------------------------------------------------------------------------------------------------------------

OURS, PAPER = "ours", "paper"


def src_label(row: dict, source: str) -> str:
    return PAPER if source == PAPER else OURS + mark(row["status"])


def values_of(row: dict, source: str, section: str) -> dict:
    """``row[section]`` (ours; only when done for metrics) or ``row["paper"][section]`` ({} when unpublished)."""
    if source == PAPER:
        return (row.get("paper") or {}).get(section) or {}
    if section == "metrics" and row["status"] != "done":
        return {}
    return row.get(section) or {}


def has_paper(row: dict) -> bool:
    return row.get("paper") is not None


def scaled_threshold(paper_value: float, preset: str, baseline_fid: float | None) -> float:
    """A paper FID threshold as is (paper preset), or scaled by our baseline FID / the paper's baseline FID (other
    presets, whose FID scale differs: e.g. the tiny preset's digits-classifier FID)."""
    if preset == "paper" or baseline_fid is None or baseline_fid <= 0:
        return paper_value
    return paper_value * baseline_fid / PAPER_BASELINE_FID


def preset_note(preset: str) -> str:
    if preset == "paper":
        return ""
    return (f"Preset \\texttt{{{latex_escape(preset)}}}: ``ours'' numbers come from the scaled-down testbed and are "
            "comparable with the paper's DiT-XL/2 numbers in trend only, not in value.")


def placeholder(status: str) -> str:
    """The cell of a reproduced value that does not exist yet: "--" plus the status marker."""
    return DASH + mark(status)


def best_positions(values: Sequence[float | None], higher_is_better: bool) -> set[int]:
    """Indices of the best (already rounded) values; every tie is included."""
    present = [v for v in values if v is not None]
    if not present:
        return set()
    best = max(present) if higher_is_better else min(present)
    return {i for i, v in enumerate(values) if v is not None and v == best}
