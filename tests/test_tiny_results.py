"""The README's tiny-preset results are the measured ones, and the measured ones tell the paper's story.

README.md's results block must be exactly what ``benchmarks.tiny_results`` renders from ``docs/results-tiny/*.json``
(so every number it quotes is the summary's), benchmarks/README.md's figures what ``benchmarks.report`` renders from
``benchmarks/results/``, and the shipped table3 summary must pass every check of ``benchmarks.conclusions`` at the
thresholds that module states.
"""
from __future__ import annotations

import math
from pathlib import Path

from benchmarks import conclusions, report, tiny_results
from benchmarks.common import RESULTS_DIR

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run `python -m benchmarks.tiny_results --write README.md`"


def block(text: str, begin: str, end: str) -> str:
    assert begin in text and end in text, f"markers {begin!r} … {end!r} missing"
    return begin + text.split(begin, 1)[1].split(end, 1)[0] + end


def test_readme_results_are_the_shipped_summaries():
    readme = (ROOT / "README.md").read_text()
    assert block(readme, tiny_results.BEGIN, tiny_results.END) == tiny_results.render(), REGENERATE


def test_benchmarks_readme_figures_are_the_records():
    text = (ROOT / "benchmarks" / "README.md").read_text()
    assert block(text, report.BEGIN, report.END) == report.render(RESULTS_DIR), (
        "run `python -m benchmarks.report --write benchmarks/README.md`")
    assert "/tmp" not in text


def test_shipped_grid_passes_the_conclusions():
    c = conclusions.checks(conclusions.read_rows(conclusions.DEFAULT_SUMMARY))
    assert c["rows_compared"] == 18 and not c["rows_missing"]
    assert c["spearman"]["all"] >= 0.85 and c["spearman_holds"]
    assert all(abs(v) <= 0.25 for v in c["self_graft_vs_control"].values()) and c["self_graft_holds"]
    assert all(v >= 2 for v in c["full_over_50"].values()) and len(c["full_over_50"]) == 5 and c["damage_holds"]
    assert c["r6_holds"] and len(c["r6_vs_r3"]) == 3


def test_shipped_orderings_independent_of_the_renderer():
    """The orderings the README's lines state, read straight from the JSON (not through the renderer)."""
    t3, t5, t6 = (tiny_results.load(n) for n in ("table3", "table5", "table6"))
    fid = {rid: r["metrics"]["fid"] for rid, r in t3.items()}
    teacher = fid["baseline"]
    assert fid["attn-random_init-full"] >= 20 * teacher and fid["mlp-random_init-full"] >= 20 * teacher
    for site in ("attn", "mlp"):
        assert math.isclose(fid[f"{site}-self_graft-full"], fid["control-teacher-stage2"], rel_tol=0.25)
    for op in ("hyena_se", "hyena_x", "hyena_y", "swa", "mamba2", "mlp_hyena_x"):
        site = "mlp" if op.startswith("mlp") else "attn"
        f50, f75, f100 = (fid[f"{site}-{op}-{r}"] for r in ("interleaved50", "interleaved75", "full"))
        assert teacher < f50 < f75 < f100, op
    par = t6["parallel-depth4"]
    assert par["metrics"]["fid"] < t6["parallel-depth4-stage1"]["metrics"]["fid"]  # stage 2 repairs the rewiring
    assert par["extra"]["speedup"] > 1
    assert t5["attn-hyena_x-pixart"]["extra"]["speedup_long"] > 1
