"""Where to graft: layer-selection strategies that use what earlier steps measured, as registered functions.

The paper picks layers by fixed patterns (``graft_core.grafting.plan.select_layers``: interleaved, full, deep) or by a
teacher analysis (band-k locality, Fig. 4b). The strategies here answer "for this operator and this budget, which
layers?" from measurements instead:

* ``stage1_error``: the ``k`` layers whose stage-1 operator has the lowest held-out regression error (recorded by
  every stage-1 run);
* ``greedy``: grow the set one layer at a time, adding the layer whose stage-1 operator, swapped in together with
  those already chosen, raises a held-out diffusion loss the least (``probe``: the same fixed noise, timesteps and
  labels for every candidate, so sampling noise cannot pick the layer; no stage 2 inside);
* ``cost_aware``: per layer a choice among several operators (or keeping the teacher's), grown greedily by loss
  increase per FLOP saved until the saved FLOPs reach the budget. With one operator every layer saves the same
  FLOPs and this is ``greedy`` (``tests/test_selection.py`` holds the two equal).

A strategy is a function ``SelectionProblem -> Selection``; ``STRATEGIES`` is the registry (``register_strategy``
adds one). Torch-free: the probe is a callable the caller supplies (``graft_core.grafting.probe`` builds the real one), so the
algorithms are tested on constructed losses. Written here because no library selects layers for grafting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

# one candidate swap: (layer, operator key) — the key names an operator with its options (``op_key``)
Swap = tuple[int, str]
Probe = Callable[[tuple[Swap, ...]], float]  # held-out loss of the teacher with these swaps (sorted by layer)


def op_key(operator: str, options: dict | None = None) -> str:
    """``hyena_x`` or ``swa(window=4)``: an operator with its options as one stable string."""
    opts = ",".join(f"{k}={v}" for k, v in sorted((options or {}).items()))
    return f"{operator}({opts})" if opts else operator


@dataclass(frozen=True)
class Candidate:
    """Operator ``op`` (an ``op_key``) in ``layer``: the FLOPs it saves per forward and its stage-1 held-out error."""

    layer: int
    op: str
    saved_flops: float
    stage1_error: float | None = None


@dataclass
class SelectionProblem:
    """What a strategy may use. ``primary``: the operator of the layer-count strategies; ``layers``: how many layers
    they choose; ``flops``: the FLOPs the cost-aware strategy must save (at least)."""

    num_layers: int
    candidates: tuple[Candidate, ...]
    primary: str
    layers: int
    flops: float = 0.0
    probe: Probe | None = None

    def of(self, op: str) -> list[Candidate]:
        return sorted((c for c in self.candidates if c.op == op), key=lambda c: c.layer)

    def check(self) -> None:
        have = {c.layer for c in self.of(self.primary)}
        if not 1 <= self.layers <= len(have):
            raise ValueError(f"budget of {self.layers} layers: choose between 1 and the {len(have)} layers that have "
                             f"a {self.primary} candidate")


@dataclass
class Selection:
    """The chosen swaps (sorted by layer) and how they were chosen (``trace``: one entry per step)."""

    swaps: tuple[Swap, ...]
    trace: list[dict] = field(default_factory=list)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(layer for layer, _ in self.swaps)

    def to_dict(self) -> dict[str, Any]:
        return {"swaps": [[layer, op] for layer, op in self.swaps], "layers": list(self.layers), "trace": self.trace}


Strategy = Callable[[SelectionProblem], Selection]
STRATEGIES: dict[str, Strategy] = {}
NEEDS_PROBE: set[str] = set()  # strategies that evaluate the held-out loss (the others only read stage-1 records)


def register_strategy(name: str, *, probe: bool):
    def deco(fn: Strategy) -> Strategy:
        if name in STRATEGIES:
            raise ValueError(f"selection strategy {name!r} registered twice")
        STRATEGIES[name] = fn
        if probe:
            NEEDS_PROBE.add(name)
        return fn

    return deco


def select(name: str, problem: SelectionProblem) -> Selection:
    try:
        strategy = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown selection strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None
    if name in NEEDS_PROBE and problem.probe is None:
        raise ValueError(f"strategy {name!r} needs a held-out loss probe")
    return strategy(problem)


def _sorted(swaps) -> tuple[Swap, ...]:
    return tuple(sorted(swaps))


@register_strategy("stage1_error", probe=False)
def stage1_error(problem: SelectionProblem) -> Selection:
    """The ``layers`` layers whose ``primary`` stage-1 operator has the lowest held-out error (ties: lower index)."""
    problem.check()
    ranked = sorted(problem.of(problem.primary), key=lambda c: (float("inf") if c.stage1_error is None
                                                                 else c.stage1_error, c.layer))
    chosen = ranked[:problem.layers]
    trace = [{"layer": c.layer, "op": c.op, "stage1_error": c.stage1_error} for c in ranked]
    return Selection(_sorted((c.layer, c.op) for c in chosen), [{"ranking": trace}])


def _grow(problem: SelectionProblem, candidates: list[Candidate], done: Callable[[float, int], bool],
          per_cost: bool) -> Selection:
    """Greedy growth: while not ``done(saved, n)``, add the candidate (of a layer not chosen yet) with the least loss
    increase (``per_cost``: per FLOP saved); ties go to the lower layer, then the operator's name."""
    chosen: list[Swap] = []
    saved, trace = 0.0, []
    current = problem.probe(())
    while not done(saved, len(chosen)):
        taken = {layer for layer, _ in chosen}
        scored = []
        for c in candidates:
            if c.layer in taken:
                continue
            loss = problem.probe(_sorted([*chosen, (c.layer, c.op)]))
            if not math.isfinite(loss):  # a diverging operator (NaN / inf output) ranks last
                loss = math.inf
            increase = loss - current
            score = increase / c.saved_flops if per_cost else increase
            scored.append((score, c.layer, c.op, loss, c))
        if not scored:
            break
        scored.sort(key=lambda s: (s[0] if not math.isnan(s[0]) else math.inf, s[1], s[2]))
        score, layer, op, loss, best = scored[0]
        chosen.append((layer, op))
        saved += best.saved_flops
        trace.append({"step": len(chosen), "base_loss": current, "picked": [layer, op], "loss": loss,
                      "candidates": [{"layer": s[1], "op": s[2], "loss": s[3], "score": s[0]} for s in scored]})
        current = loss
    return Selection(_sorted(chosen), trace)


@register_strategy("greedy", probe=True)
def greedy(problem: SelectionProblem) -> Selection:
    """Grow ``layers`` layers of the ``primary`` operator, each step the one that raises the probe's loss least."""
    problem.check()
    return _grow(problem, problem.of(problem.primary), lambda saved, n: n >= problem.layers, per_cost=False)


@register_strategy("cost_aware", probe=True)
def cost_aware(problem: SelectionProblem) -> Selection:
    """Per layer one operator among the candidates (or the teacher's, by not choosing the layer), grown by loss
    increase per FLOP saved until at least ``flops`` are saved. Candidates that save nothing are never chosen."""
    if problem.flops <= 0:
        raise ValueError("the cost-aware strategy needs a positive FLOP budget (flops to save)")
    saving = [c for c in problem.candidates if c.saved_flops > 0]
    return _grow(problem, saving, lambda saved, n: saved >= problem.flops * (1 - 1e-9), per_cost=True)
