"""The docs name functions that exist: every ``module.function(`` in docs/contracts.md resolves in graft_core, and
``--help`` lists every registered preset."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = (ROOT / "docs" / "contracts.md").read_text()
# `mod.name(` or `graft_core.mod.name(` (call forms only: file names and fields are not API)
CALLS = sorted(c for c in set(re.findall(r"`((?:graft_core\.)?[a-z_]+(?:\.[A-Za-z_]\w*)+)\(", CONTRACTS))
               if not c.startswith("dataclasses."))


def engine_modules() -> dict[str, list[str]]:
    """Short module name → the dotted ``graft_core`` modules of that name (``plan`` → ``graft_core.grafting.plan``):
    the contracts name a module by its file name under a heading that says its folder."""
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "graft_core").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] != "__init__":
            out.setdefault(parts[-1], []).append(".".join(parts))
    return out


def resolve(dotted: str):
    parts = dotted.removeprefix("graft_core.").split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        candidates = ["graft_core." + head] + (engine_modules().get(head, []) if cut == 1 else [])
        for module in candidates:
            try:
                obj = importlib.import_module(module)
            except ModuleNotFoundError:
                continue
            for name in parts[cut:]:
                obj = getattr(obj, name)
            return obj
    raise ModuleNotFoundError(dotted)


def test_short_module_names_are_unambiguous():
    """A short name in the contracts must mean one module."""
    named = {c.removeprefix("graft_core.").split(".")[0] for c in CALLS}
    clashes = {n: m for n, m in engine_modules().items() if n in named and len(m) > 1}
    assert not clashes, clashes


def test_contracts_names_calls():
    assert len(CALLS) >= 15, CALLS


@pytest.mark.parametrize("dotted", CALLS)
def test_contracts_call_exists(dotted):
    assert callable(resolve(dotted)), f"docs/contracts.md names {dotted}, which is not a callable in graft_core"


def test_help_lists_every_preset(capsys):
    from benchmark import run
    from graft_core.presets import PRESETS

    with pytest.raises(SystemExit):
        run.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    missing = [name for name in PRESETS if name not in text]
    assert not missing, f"--help does not name presets {missing}"
