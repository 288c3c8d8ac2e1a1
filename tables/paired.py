"""Paired FID differences (a summary's ``comparisons`` section): a LaTeX float after the target's table and a
forest plot (each difference with its interval).

A difference whose interval excludes 0 is marked (bold, $^\\ast$): at the evaluation's sample count the two rows'
FIDs are told apart *for these trained weights*. The interval is a paired bootstrap over the generated samples (the
reference set fixed): it covers sampling noise only, not training-seed variance, and the captions say so.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .common import Body, as_number, fmt, latex_escape, render, sanitize_label

NOTE = ("$a-b$: FID of row $a$ minus FID of row $b$, on the same generated samples (same seeds, labels, initial "
        "noise). Interval: 95\\,\\% paired bootstrap, the sample indices resampled once per draw and both FIDs "
        "recomputed on the same indices, the reference set fixed. It covers sampling noise only, not training-seed "
        "variance. \\textbf{Bold}$^\\ast$: the interval excludes 0. Unpaired $\\pm$: each row's own bootstrap spread, "
        "for comparison.")


def _labels(rows: Sequence[dict]) -> dict[str, str]:
    """Row id → a short printable label (Table 1's rows share their site label: the objective is added)."""
    out = {}
    for r in rows:
        label = str(r.get("label") or r["row"])
        objective = (r.get("extra") or {}).get("objective")
        if objective and str(objective) not in label.lower():
            label = f"{label}, {objective}"
        out[r["row"]] = label
    return out


def paired_frame(comparisons: dict | None, rows: Sequence[dict]) -> pd.DataFrame:
    """One line per comparison: a, b, labels, kind, diff, lo, hi, std, excludes_zero, unpaired stds, error."""
    labels = _labels(rows)
    records = []
    for e in (comparisons or {}).get("pairs", []):
        spreads = list(e.get("unpaired_std") or [None, None]) + [None, None]
        records.append({"a": e["a"], "b": e["b"], "label_a": labels.get(e["a"], e["a"]),
                        "label_b": labels.get(e["b"], e["b"]), "kind": e.get("kind", ""),
                        "diff": as_number(e.get("diff")), "lo": as_number(e.get("lo")), "hi": as_number(e.get("hi")),
                        "std": as_number(e.get("std")), "excludes_zero": bool(e.get("excludes_zero")),
                        "unpaired_std_a": as_number(spreads[0]), "unpaired_std_b": as_number(spreads[1]),
                        "error": e.get("error")})
    return pd.DataFrame(records, columns=["a", "b", "label_a", "label_b", "kind", "diff", "lo", "hi", "std",
                                          "excludes_zero", "unpaired_std_a", "unpaired_std_b", "error"])


def render_paired(comparisons: dict | None, rows: Sequence[dict], *, preset: str, target: str) -> str:
    """The comparisons as their own float ("" when there are none)."""
    frame = paired_frame(comparisons, rows)
    if frame.empty:
        return ""
    body = Body.empty()
    errors = []
    for kind, part in frame.groupby("kind", sort=False):
        body.group(latex_escape(kind), 2, 4)
        for _, e in part.iterrows():
            index = (latex_escape(e["label_a"]), latex_escape(e["label_b"]))
            if isinstance(e["error"], str) or pd.isna(e["diff"]):  # (pandas holds a missing error as NaN)
                body.add(index, ["--", "--", "--", "--"])
                errors.append(f"{latex_escape(e['a'])} vs {latex_escape(e['b'])}: {latex_escape(e['error'])}")
                continue
            star = "$^\\ast$" if e["excludes_zero"] else ""
            cells = [fmt(e["diff"], 2, signed=True) + star, f"[{fmt(e['lo'], 2)}, {fmt(e['hi'], 2)}]",
                     fmt(e["std"], 2), f"{fmt(e['unpaired_std_a'], 2)} / {fmt(e['unpaired_std_b'], 2)}"]
            body.add(index, cells, [e["excludes_zero"], e["excludes_zero"], False, False])
    notes = [NOTE] + (["Not compared: " + "; ".join(errors) + "."] if errors else [])
    caption = (f"Paired FID differences, {latex_escape(target)}, preset \\texttt{{{latex_escape(preset)}}} "
               f"(sampling noise only, not training-seed variance).")
    return render(body, [r"$\Delta$FID", r"95\,\% interval", r"paired $\pm$", r"unpaired $\pm$ ($a$ / $b$)"],
                  ["Row $a$", "Row $b$"], caption=caption, label=sanitize_label(f"tab:{target}-{preset}-paired"),
                  comment=f"% {target}: paired FID differences (benchmark.comparisons)", notes=notes,
                  column_format="llrrrr", size=r"\footnotesize", tabcolsep="3pt")


def plot_paired(frame: pd.DataFrame, preset: str, target: str):
    """Forest plot: each difference with its interval, the zero line, excluded-zero differences filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = frame[frame["diff"].notna()].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.0, 0.28 * max(len(frame), 3) + 1.2))
    y = list(range(len(frame)))[::-1]
    for yi, (_, e) in zip(y, frame.iterrows()):
        colour = "tab:red" if e["excludes_zero"] else "tab:gray"
        ax.plot([e["lo"], e["hi"]], [yi, yi], color=colour, lw=1.6)
        ax.plot([e["diff"]], [yi], "o", color=colour, mfc=colour if e["excludes_zero"] else "white", ms=4.5)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{a} − {b}" for a, b in zip(frame["label_a"], frame["label_b"])], fontsize=6.5)
    ax.set_xlabel("ΔFID (a − b), 95 % paired bootstrap interval (sampling noise only)")
    ax.set_title(f"{target}: paired FID differences, preset {preset}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig
