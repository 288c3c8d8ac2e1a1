"""Presets: paper-smoke is the paper preset with only scale fields reduced; added config fields keep old run ids."""
import dataclasses

import pytest

from graft_core.config import added_field, retired_field, retired_fields, stable_hash
from graft_core.presets import SCALE_FIELDS, get_preset, scaled


def test_paper_smoke_differs_from_paper_only_in_scale_fields():
    paper, smoke = get_preset("paper"), get_preset("paper-smoke")
    differing = set()
    for section in dataclasses.fields(paper):
        a, b = getattr(paper, section.name), getattr(smoke, section.name)
        if not dataclasses.is_dataclass(a):
            continue
        for f in dataclasses.fields(a):
            if getattr(a, f.name) != getattr(b, f.name):
                differing.add((section.name, f.name))
    allowed = {(s, f) for s, fields in SCALE_FIELDS.items() for f in fields}
    assert differing and differing <= allowed, differing - allowed
    assert smoke.name == "paper-smoke" and smoke.eval.num_samples < paper.eval.num_samples
    assert smoke.stage2.steps < paper.stage2.steps and smoke.stage1.epochs < paper.stage1.epochs


def test_scaled_refuses_a_non_scale_field():
    with pytest.raises(ValueError, match="not a scale field"):
        scaled(get_preset("paper"), "x", stage2={"lr": 1.0})


def test_an_added_field_at_its_default_keeps_the_hash():
    @dataclasses.dataclass(frozen=True)
    class Old:
        a: int = 1

    @dataclasses.dataclass(frozen=True)
    class New:
        a: int = 1
        b: str = added_field("x")

    assert stable_hash(Old()) == stable_hash(New()) != stable_hash(New(b="y"))


def test_a_retired_field_stays_hashed_and_is_read_nowhere():
    """A retired field keeps every id (it is still hashed: its value separates two configs), and no project code
    reads it (an attribute access anywhere in the project would make it live again, unseen)."""
    import ast
    from pathlib import Path

    from graft_core.presets import DataConfig, Preset

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        a: int = 1
        old: float = retired_field(0.5, "a replaces it")

    assert retired_fields(Cfg) == {"old": "a replaces it"} and "old" not in repr(Cfg())
    assert stable_hash(Cfg()) != stable_hash(Cfg(old=0.25)) != stable_hash(Cfg(a=2, old=0.25))
    assert "stage2_fraction" in retired_fields(DataConfig)
    assert retired_fields(Preset)["data.stage2_fraction"] == retired_fields(DataConfig)["stage2_fraction"]
    assert stable_hash(DataConfig()) != stable_hash(DataConfig(stage2_fraction=0.05))
    names = {k.rpartition(".")[2] for k in retired_fields(Preset)}
    root = Path(__file__).resolve().parents[1]
    reads = [f"{path.relative_to(root)}:{node.lineno}" for pkg in ("graft_core", "benchmark", "tables", "benchmarks")
             for path in sorted((root / pkg).rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in names]
    assert not reads, f"retired fields {sorted(names)} are read at {reads}"
