"""A row of a paper table or figure as a frozen config: preset (changed with ``dataclasses.replace``) + what to graft.

A row says *what* to compute; ``benchmark.dag`` turns it into step runs (teacher → captures → stage 1 per layer →
stage 2 → evaluation) whose ids are hashes of exactly the fields that can change their result, so rows that share a
step share its run.

Row kinds:

* ``teacher``           evaluate the teacher (the baseline row);
* ``graft``             graft ``graft`` (stage-1 init or random init), optionally finetune (stage 2), evaluate;
* ``finetune_teacher``  the "teacher + the same stage 2" control (not in the paper): no graft, stage 2, eval;
* ``floor`` / ``noise`` the metric floor (real vs held-out real) and the noise control of the evaluator;
* ``locality``          band-k attention locality of the teacher (Fig. 2);
* ``parallel_pairs``    depth→width (Table 6): block pairs run side by side, stage 1 per pair, stage 2
                        (``finetune``) with ``extra.latency`` = {batch, repeats} for the speed-up run;
* ``t2i``               text-to-image grafting of the PixArt teacher (Table 5; ``t2i`` = the experiment's
                        settings, ``benchmark.targets.table5.T2IConfig``): synthetic pairs → capture → stage 1 per
                        layer → LoRA stage 2 → evaluation (+ latency); no ``graft``: the teacher (+ stage 2 with
                        ``finetune``, the control);
* ``activation_stats``  per-layer statistics of the teacher's MHA or MLP outputs (``extra.site``) from its stage-1
                        capture(s) (Table 1 i/ii).

A ``graft`` row whose layers come from a measurement carries either ``locality`` (Fig. 4b top/low-local) or
``search`` (a ``SearchSpec``: a ``graft_core.grafting.selection`` strategy over the stage-1 runs of every layer, the
``search`` target); its layers stay None until that run is done.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from benchmark.family import row_kinds
from graft_core.grafting.plan import GraftPlan
from graft_core.presets import Preset

ROW_KINDS = ("teacher", "graft", "finetune_teacher", "floor", "noise", "locality", "activation_stats",
             "parallel_pairs", "t2i")


@dataclass(frozen=True)
class GraftSpec:
    """A row's graft request: a ``GraftPlan`` still named by its ``strategy``, whose ``layers`` stay None until a
    locality result resolves them (top/low-local). ``plan()`` is the one form that reaches the jobs."""

    site: str  # "attn" | "mlp"
    operator: str  # exact graft_core.operators name
    strategy: str  # full | interleaved50 | interleaved75 | deep | top_local | low_local | table1_layers | pixart
    layers: tuple[int, ...] | None
    options: tuple[tuple[str, Any], ...] = ()

    def plan(self) -> GraftPlan:
        """The validated plan; its ``to_dict()`` is what step configs hash and jobs rebuild it from."""
        if self.layers is None:
            raise ValueError(f"layers of strategy {self.strategy!r} are not resolved yet")
        return GraftPlan(site=self.site, operator=self.operator, layers=self.layers, options=self.options)


@dataclass(frozen=True)
class LocalityConfig:
    """Band-k attention locality (paper Fig. 2: 250 samples, 50-step DDIM, cfg 1.5, averaged over t and samples)."""

    num_samples: int = 250
    scheduler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 1.5
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    select_k: int = 32  # the k whose per-layer values rank layers for Fig. 4b top/low-local (paper reports k = 32)
    seed: int = 0


@dataclass(frozen=True)
class SearchSpec:
    """A layer search (``graft_core.grafting.selection``): ``strategy`` over the stage-1 runs of ``operators`` (each
    ``(operator, frozen options)``, the first the primary) in every layer; budget ``layers`` (count strategies) or
    ``flops`` (FLOPs per forward to save, ``cost_aware``); ``probe`` (a ``graft_core.grafting.probe.ProbeConfig``) for the
    strategies that evaluate the held-out loss, else None."""

    strategy: str
    operators: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    layers: int = 0
    flops: float = 0.0
    probe: Any = None


@dataclass(frozen=True)
class Row:
    """One row of a target's table: a frozen, declarative config."""

    id: str
    label: str
    group: str
    kind: str
    preset: Preset
    graft: GraftSpec | None = None
    init: str = "stage1"  # "stage1" (distilled operators) | "random" (fresh init, the random-init control)
    finetune: bool = True  # run stage 2 before evaluating
    ratio: int | None = None  # 50 | 75 | 100 (summary column)
    locality: LocalityConfig | None = None  # kind "locality", or the source of top/low-local layers
    name: str | None = None  # the summary's "operator" (tables' registry name: hyena_x, mlp_r3, self_graft, ...)
    t2i: Any = None  # kind "t2i": the text-to-image experiment settings (a frozen dataclass, hashed into run ids)
    search: SearchSpec | None = None  # the layer search that resolves ``graft.layers`` (the ``search`` target)
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.kind not in ROW_KINDS + row_kinds():
            raise ValueError(f"row {self.id!r}: unknown kind {self.kind!r}; choose one of "
                             f"{ROW_KINDS + row_kinds()}")
        if self.kind == "graft" and self.graft is None:
            raise ValueError(f"row {self.id!r}: a graft row needs a GraftSpec")
        if self.init not in ("stage1", "random"):
            raise ValueError(f"row {self.id!r}: init must be 'stage1' or 'random', not {self.init!r}")
        if self.kind == "t2i" and self.t2i is None:
            raise ValueError(f"row {self.id!r}: a t2i row needs its experiment settings (t2i)")
        if self.kind == "parallel_pairs" and self.finetune and not isinstance(self.extra.get("latency"), dict):
            raise ValueError(f"row {self.id!r}: a parallel_pairs row needs extra.latency {{batch, repeats}}")
        if self.kind == "activation_stats" and self.extra.get("site") not in ("attn", "mlp"):
            raise ValueError(f"row {self.id!r}: an activation_stats row needs extra.site 'attn' or 'mlp'")

    @property
    def site(self) -> str | None:
        """The grafted site; an activation_stats row's is the site it measures (the summary's ``site``)."""
        if self.graft:
            return self.graft.site
        return self.extra.get("site") if self.kind == "activation_stats" else None

    @property
    def operator(self) -> str | None:
        return self.name if self.name is not None else (self.graft.operator if self.graft else None)

    @property
    def strategy(self) -> str | None:
        return self.graft.strategy if self.graft else None

    def with_layers(self, layers: tuple[int, ...]) -> "Row":
        return dataclasses.replace(self, graft=dataclasses.replace(self.graft, layers=tuple(layers)))


def freeze_options(options: dict | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((options or {}).items()))
