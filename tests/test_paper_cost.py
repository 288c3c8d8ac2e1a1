"""REPRODUCE.md's paper cost table is what the resource model says today (``benchmarks/paper_cost.py``), every
figure names its source, and every step of the paper's targets fits the shipped ``paper`` profile."""
from __future__ import annotations

from pathlib import Path

from benchmarks import paper_cost

ROOT = Path(__file__).resolve().parents[1]


def test_reproduce_cost_table_is_rendered_from_the_resource_model():
    block = paper_cost.render()
    text = (ROOT / "REPRODUCE.md").read_text()
    assert block in text, ("REPRODUCE.md's paper cost table is stale: run "
                           "`python -m benchmarks.paper_cost --write REPRODUCE.md`")


def test_every_paper_step_fits_and_names_its_sources():
    from benchmark import targets as registry

    names = [m.NAME for m in registry.expand(["all"])]
    fits = paper_cost.target_fits(names)
    steps = [fit for pairs in fits.values() for _, fit in pairs]
    assert len(steps) > 900 and all(f.fits for f in steps), [(f.kind, f.run, f.why) for f in steps if not f.fits][:5]
    sources = {v for f in steps for k, v in f.source.items() if k in ("hours", "gpu_mem", "disk")}
    assert sources <= {"measured", "paper", "assumed"}, sources
    assert {f.kind for f in steps} >= {"stage1_online", "encode", "stage2", "sample", "eval"}
