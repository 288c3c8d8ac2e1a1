"""LaTeX from a real run, not from recorded inputs: a micro ``table3`` (the teacher, attention random init and one
grafted row through stage 1, stage 2 and evaluation) through the CLI, its tables built by ``tables.build``, and
its ``table3.tex`` compiled with pdflatex. Under CI=true a missing pdflatex is a failure (tests/conftest.py)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from benchmark.run import main
from tables import build as build_mod

ROWS = "baseline,attn-random_init-full,attn-hyena_x-interleaved50"
PDFLATEX = shutil.which("pdflatex")


@pytest.fixture(scope="module")
def micro_tables(tmp_path_factory):
    results = tmp_path_factory.mktemp("real-run")
    assert main(["table3", "--preset", "micro", "--executor", "debug", "--rows", ROWS, "--results-dir", str(results),
                 "--quiet"]) == 0
    assert build_mod.main(["--results", str(results), "--preset", "micro", "--target", "table3"]) == 0
    return results / "micro" / "tables"


def test_real_run_renders_its_numbers(micro_tables):
    import json

    rows = json.loads((micro_tables.parent / "table3" / "summary.json").read_text())["rows"]
    fid = next(r for r in rows if r["row"] == "attn-hyena_x-interleaved50")["metrics"]["fid"]
    tex = (micro_tables / "table3.tex").read_text()
    assert f"{fid:.2f}" in tex  # the measured FID, as printed


@pytest.mark.latex
@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed (.ci/run installs TeX Live as root)")
def test_real_run_tables_compile(micro_tables):
    (micro_tables / "doc.tex").write_text(build_mod.standalone_document(["table3"]))
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=micro_tables,
                          capture_output=True, text=True, timeout=300)
    log = micro_tables / "doc.log"
    assert proc.returncode == 0, (log.read_text(errors="replace") if log.exists() else proc.stdout)[-3000:]
    assert (micro_tables / "doc.pdf").stat().st_size > 0
