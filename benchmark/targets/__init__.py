"""The registry of targets: one declarative module per paper table or figure.

A target module defines ``NAME``, ``TITLE`` and ``rows(preset_name) -> list[Row]`` (optionally
``ALIAS_OF`` and ``EXTERNAL``, the graft_core function its rows need, and ``BEYOND_PAPER = True``: a study the paper
does not make, which ``all`` leaves out). The list below is the complete registry, in the order ``all`` runs them;
names are exact (an unknown one lists the known ones). A plug-in (a model family's module, ``benchmark.family``)
adds its own with ``register_target``; ``all`` keeps to the paper's.
"""
from __future__ import annotations

from types import ModuleType

from benchmark.targets import (baseline, fig2, fig4a, fig4b, search, table1, table2, table3, table4, table5,
                               table6)

TARGET_MODULES: tuple[ModuleType, ...] = (baseline, table1, table2, table3, table4, table5, table6, fig2, fig4a, fig4b,
                                          search)
TARGETS: dict[str, ModuleType] = {}
for _module in TARGET_MODULES:
    if _module.NAME in TARGETS:
        raise ValueError(f"target {_module.NAME!r} registered twice")
    TARGETS[_module.NAME] = _module
ALL = "all"


def register_target(module) -> None:
    """A plug-in's target (any object with ``NAME``, ``TITLE`` and ``rows(preset_name)``), after the paper's."""
    known = TARGETS.get(module.NAME)
    if known is not None and known is not module:
        raise ValueError(f"target {module.NAME!r} is registered already")
    TARGETS[module.NAME] = module


class UnknownTarget(ValueError):
    pass


def names() -> list[str]:
    return [*TARGETS, ALL]


def get_target(name: str) -> ModuleType:
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTarget(f"unknown target {name!r}; choose from: {', '.join(names())}") from None


def expand(requested: list[str]) -> list[ModuleType]:
    """Target names → modules, ``all`` → every paper target that is not an alias; duplicates dropped, order kept."""
    out: list[ModuleType] = []
    for name in requested:
        paper = [m for m in TARGET_MODULES
                 if not getattr(m, "ALIAS_OF", None) and not getattr(m, "BEYOND_PAPER", False)]
        mods = paper if name == ALL else [get_target(name)]
        for m in mods:
            if m not in out:
                out.append(m)
    return out
