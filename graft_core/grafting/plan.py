"""Graft plans: which operator replaces which site in which layers — a frozen, hashable, JSON-able value.

A plan is kept apart from operator code and from weights (as the official configs do): ``GraftPlan`` says *what* is
swapped, ``graft_core.grafting.surgery`` does the swap, stage-1 results fill the new modules. Layer indices are **0-based**
(the code's ``transformer_blocks[i]``); the paper numbers layers from 1 (docs/paper-reference.md §4).

    plan = make_plan("attn", "hyena_x", "interleaved50", num_layers=28)
    plan.layers        # (1, 3, 5, ..., 27)
    stable_hash(plan)  # run identity

Torch-free (the driver builds and hashes plans while planning): operators are validated against the registry's
declarations, and torch is imported only by ``build_operator``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from graft_core.operators import registry as operators
from graft_core.operators.registry import SITES

NEEDS_LOCALITY = ("top_local", "low_local")  # strategies ranked by a locality result (``locality=``)
STRATEGIES = ("full", "interleaved50", "interleaved75", "deep", *NEEDS_LOCALITY)
_SCALARS = (str, int, float, bool, type(None))


def select_layers(strategy: str | Iterable[int], num_layers: int, *,
                  locality: Sequence[float] | None = None) -> tuple[int, ...]:
    """0-based layer indices for a named strategy (or validated explicit indices), sorted.

    - ``full``: every layer. ``interleaved50``: odd indices 1, 3, …. ``interleaved75``: indices ≡ 1, 2, 3 (mod 4)
      (the first of every 4 is kept). ``deep``: the last half.
    - ``top_local`` / ``low_local``: the half of the layers with the highest / lowest ``locality`` score (one score
      per layer, e.g. band-k attention mass from ``graft_core.grafting.locality``); ties go to the lower index.
    "Half" is ``num_layers // 2``.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be positive, got {num_layers}")
    if not isinstance(strategy, str):
        return validate_layers(strategy, num_layers)
    half = num_layers // 2
    if strategy == "full":
        return tuple(range(num_layers))
    if strategy == "interleaved50":
        return tuple(i for i in range(num_layers) if i % 2 == 1)
    if strategy == "interleaved75":
        return tuple(i for i in range(num_layers) if i % 4 != 0)
    if strategy == "deep":
        return tuple(range(num_layers - half, num_layers))
    if strategy in NEEDS_LOCALITY:
        if locality is None or len(locality) != num_layers:
            got = "none" if locality is None else f"{len(locality)} scores"
            raise ValueError(f"strategy {strategy!r} needs one locality score per layer ({num_layers}); got {got}")
        sign = -1.0 if strategy == "top_local" else 1.0
        order = sorted(range(num_layers), key=lambda i: (sign * float(locality[i]), i))
        return tuple(sorted(order[:half]))
    raise ValueError(f"unknown layer-selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)} "
                     f"or give explicit indices")


def pixart_layers(num_layers: int) -> tuple[int, ...]:
    """The layers of PixArt grafting (paper Table 5): half of them, even indices from ``round(8/28·L)`` plus the last
    ``round(8/28·L)`` — 8, 10, …, 18, 20–27 at 28, (2, 4, 6, 7) at 8. Here because the driver plans them without torch
    and ``graft_core.text_to_image.pixart`` grafts them."""
    half = num_layers // 2
    tail = min(round(8 / 28 * num_layers), half)
    start = min(round(8 / 28 * num_layers), num_layers - tail)
    middle = [i for i in range(start, num_layers - tail, 2)][: half - tail]
    return tuple(middle) + tuple(range(num_layers - tail, num_layers))


def validate_layers(layers: Iterable[int], num_layers: int | None = None) -> tuple[int, ...]:
    """Sorted tuple of distinct non-negative ints, each ``< num_layers`` when that is given."""
    layers = tuple(layers)
    bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        raise ValueError(f"layer indices must be ints, got {bad}")
    if not layers:
        raise ValueError("a graft plan needs at least one layer")
    dupes = sorted({i for i in layers if layers.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate layer indices {dupes}")
    out = [i for i in layers if i < 0 or (num_layers is not None and i >= num_layers)]
    if out:
        raise ValueError(f"layer indices {sorted(out)} out of range for a model with {num_layers} layers "
                         f"(valid: 0..{num_layers - 1 if num_layers else '?'}; indices are 0-based)")
    return tuple(sorted(layers))


def _freeze_options(options: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """Sorted ``(key, value)`` pairs; lists become tuples and whole-number floats ints (``ratio=3.0`` is
    ``ratio=3``), so that equal plans hash equally whichever way an option was spelled."""
    items = dict(options.items() if isinstance(options, Mapping) else options)
    frozen = []
    for key, value in sorted(items.items()):
        if isinstance(value, list):
            value = tuple(value)
        values = value if isinstance(value, tuple) else (value,)
        if not isinstance(key, str) or not all(isinstance(v, _SCALARS) for v in values):
            raise ValueError(f"plan option {key!r}={value!r}: keys must be str and values JSON scalars "
                             f"(or tuples of them), so that the plan hashes and serialises")
        value = tuple(map(_whole, value)) if isinstance(value, tuple) else _whole(value)
        frozen.append((key, value))
    return tuple(frozen)


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class GraftPlan:
    """Replace ``site`` (``attn`` → ``attn1``, ``mlp`` → ``ff``) by ``operator`` in ``layers`` (0-based).

    ``options`` are the operator's own hyperparameters (e.g. ``{"ratio": 3}`` for ``mlp``), stored as sorted
    ``(key, value)`` pairs so the plan is hashable; options left out take the operator's declared defaults.
    ``seq_len`` pins the token count a ``seq_len``-bound operator (``mlp_hyena_x``) was made for; ``None`` means
    "the host model's".
    """

    site: str
    operator: str
    layers: tuple[int, ...]
    options: tuple[tuple[str, Any], ...] = ()
    seq_len: int | None = None

    def __post_init__(self):
        if self.site not in SITES:
            raise ValueError(f"unknown site {self.site!r}; choose one of {SITES}")
        info = operators.operator_info(self.operator)  # unknown name → ValueError listing known ones
        if info.site != self.site:
            raise ValueError(f"operator {self.operator!r} replaces the {info.site!r} site, not {self.site!r} "
                             f"(operators for {self.site!r}: {', '.join(operators.available(self.site))})")
        object.__setattr__(self, "layers", validate_layers(self.layers))
        options = _freeze_options(self.options)
        info.resolved_options(dict(options))  # unknown option → ValueError naming the accepted ones
        object.__setattr__(self, "options", options)
        if self.seq_len is not None and (isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int)
                                         or self.seq_len < 1):
            raise ValueError(f"seq_len must be a positive int or None, got {self.seq_len!r}")

    @property
    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def seq_len_bound(self) -> bool:
        return operators.operator_info(self.operator).seq_len_bound

    def check_model(self, num_layers: int, seq_len: int) -> None:
        """Raise ``ValueError`` unless this plan fits a model with ``num_layers`` blocks and ``seq_len`` tokens."""
        validate_layers(self.layers, num_layers)
        if self.seq_len_bound and self.seq_len is not None and self.seq_len != seq_len:
            raise ValueError(f"operator {self.operator!r} is bound to the token count it was made for "
                             f"(plan seq_len={self.seq_len}); this model has {seq_len} tokens")

    def build_operator(self, dim: int, *, num_heads: int, seq_len: int):
        """A fresh operator for one of the planned layers."""
        return operators.build(self.operator, dim, num_heads=num_heads, seq_len=seq_len, **self.option_dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that step configs hash and jobs rebuild the plan from (``from_dict``)."""
        return {"site": self.site, "operator": self.operator, "layers": list(self.layers),
                "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options},
                "seq_len": self.seq_len}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GraftPlan":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"GraftPlan: unknown fields {sorted(unknown)}")
        return cls(site=data["site"], operator=data["operator"], layers=tuple(data["layers"]),
                   options=data.get("options", {}), seq_len=data.get("seq_len"))


def make_plan(site: str, operator: str, layers: str | Iterable[int], *, num_layers: int,
              locality: Sequence[float] | None = None, seq_len: int | None = None, **options) -> GraftPlan:
    """Plan from a strategy name (see ``select_layers``) or explicit indices, checked against ``num_layers``."""
    return GraftPlan(site=site, operator=operator, layers=select_layers(layers, num_layers, locality=locality),
                     options=options, seq_len=seq_len)


def as_plans(plans: GraftPlan | Iterable[GraftPlan]) -> tuple[GraftPlan, ...]:
    """One plan or several → a tuple, refusing two edits of the same (site, layer)."""
    plans = (plans,) if isinstance(plans, GraftPlan) else tuple(plans)
    if not all(isinstance(p, GraftPlan) for p in plans):
        raise ValueError("expected GraftPlan objects")
    seen: dict[tuple[str, int], str] = {}
    for plan in plans:
        for layer in plan.layers:
            key = (plan.site, layer)
            if key in seen:
                raise ValueError(f"layer {layer} site {plan.site!r} is edited twice ({seen[key]} and {plan.operator})")
            seen[key] = plan.operator
    return plans

