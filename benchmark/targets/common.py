"""Building blocks shared by the target modules: the Table-3 grid from the operator catalogue, and row factories.

Which rows a target has, their ids, labels and groups are ``graft_core.table_rows``' declarations (the tables read
the same ones); a target adds what each row computes. The grid's operators are ``graft_core.operators.catalogue_rows``
— declared once, where each operator is registered (plugins included), never listed here.

Everything is derived from ``graft_core.presets.get_preset(name)`` with ``dataclasses.replace``; a row never mutates
a preset. Paper facts: ``docs/paper-reference.md``.
"""
from __future__ import annotations

import dataclasses

from benchmark.rows import GraftSpec, LocalityConfig, Row, freeze_options
from graft_core.operators.registry import TEACHER_OPERATOR
from graft_core.grafting.plan import NEEDS_LOCALITY, select_layers
from graft_core.presets import Preset, get_preset
from graft_core.table_rows import RowDecl, declared_rows

# Table 2 uses 30k stage-2 iterations where Table 4 uses 50K (paper §3.2, §12.6); the self-grafting rows of Table 4
# are the Table-2 runs. Other presets scale their stage-2 steps by the same 3/5.
TABLE2_STAGE2_FACTOR = 30_000 / 50_000
# Paper labels of the data percentages (Table 2) → stage-2 data_fraction.
STAGE2_DATA = {0.63: 0.0063, 5.0: 0.05, 10.0: 0.10, 20.0: 0.20}


def declarations(target: str, p: Preset, *, diagnostics: bool = True) -> list[RowDecl]:
    """The declared rows of ``target`` on ``p`` in the paper's order (``diagnostics=False``: without the diagnostic
    rows, which only the small presets plan)."""
    return [d for d in declared_rows(target, p.name) if diagnostics or not d.diagnostic]


def declared_row(d: RowDecl, **fields) -> Row:
    """A row named, labelled and grouped by its declaration; ``fields`` say what it computes."""
    return Row(**{"id": d.id, "label": d.label, "group": d.group, "name": d.operator, "ratio": d.ratio, **fields})


def preset(name: str) -> Preset:
    return get_preset(name)


def num_layers(p: Preset) -> int:
    return p.teacher.num_layers


def graft_spec(p: Preset, site: str, operator: str, strategy: str, options: dict | None = None, *,
               layers: tuple[int, ...] | None = None) -> GraftSpec:
    """``layers`` as given (Table 1's study layers), else the strategy's, resolved now except top/low-local (the
    planner resolves those from the locality run)."""
    if layers is None and strategy not in NEEDS_LOCALITY:
        layers = select_layers(strategy, num_layers(p))
    return GraftSpec(site=site, operator=operator, strategy=strategy, layers=layers, options=freeze_options(options))


def strategy_of(ratio: int) -> str:
    return "full" if ratio == 100 else f"interleaved{ratio}"


def baseline_row(p: Preset, d: RowDecl, **extra) -> Row:
    return declared_row(d, kind="teacher", preset=p, extra=extra)


def random_init_row(p: Preset, d: RowDecl) -> Row:
    """All layers of the site replaced by freshly initialised copies, evaluated without any training."""
    op, opts = TEACHER_OPERATOR[d.site]
    return declared_row(d, kind="graft", preset=p, graft=graft_spec(p, d.site, op, "full", opts), init="random",
                        finetune=False, extra={"graft_operator": op, "options": opts})


def with_stage2(p: Preset, *, steps_factor: float = 1.0, data_fraction: float | None = None) -> Preset:
    s2 = p.stage2
    changes = {}
    if steps_factor != 1.0:
        changes["steps"] = max(1, round(s2.steps * steps_factor))
    if data_fraction is not None:
        changes["data_fraction"] = data_fraction
    return p.replace(stage2=dataclasses.replace(s2, **changes)) if changes else p


def self_graft_row(p: Preset, d: RowDecl, *, stage2_data: float | None = 10.0) -> Row:
    """Full self-grafting (all layers, stage-1 init) with Table 2's stage-2 budget (None → no stage 2): a freshly
    initialised copy of the teacher's own operator (MHA, or the r=4 MLP)."""
    op, opts = TEACHER_OPERATOR[d.site]
    finetune = stage2_data is not None
    q = with_stage2(p, steps_factor=TABLE2_STAGE2_FACTOR, data_fraction=STAGE2_DATA[stage2_data]) if finetune else p
    return declared_row(d, kind="graft", preset=q, graft=graft_spec(p, d.site, op, "full", opts), finetune=finetune,
                        extra={"stage1_data": 0.63, "stage2_data": stage2_data, "graft_operator": op,
                               "options": opts})


def hybrid_row(p: Preset, d: RowDecl, operator: str, options: dict, *, extra: dict | None = None,
               locality: LocalityConfig | None = None) -> Row:
    """Operator ``operator`` in the layers of the declared site and strategy; stage 1 + stage 2."""
    return declared_row(d, kind="graft", preset=p, graft=graft_spec(p, d.site, operator, d.strategy, options),
                        locality=locality,
                        extra={"graft_operator": operator, "options": dict(options), **(extra or {})})


def control_row(p: Preset, d: RowDecl, **extra) -> Row:
    """Teacher + the same stage 2 as the grafted rows: separates the effect of stage 2 (a short stage 2 can improve
    a small teacher on its own)."""
    return declared_row(d, kind="finetune_teacher", preset=p, extra=extra)


def locality_config(p: Preset) -> LocalityConfig:
    """Paper values for DiT-XL/2 (256 tokens); for smaller teachers the same protocol with k up to the token count
    and ``select_k`` = two token rows of the patch grid (32 = 2 × 16 at 256 tokens)."""
    grid = p.teacher.sample_size // p.teacher.patch_size
    tokens = grid * grid
    ks = tuple(k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k < tokens)
    scale = LOCALITY_SCALE.get(p.name, {})
    return LocalityConfig(ks=ks, select_k=min(2 * grid, ks[-1]), **scale)


# Presets that run the locality protocol at a reduced scale (samples, DDIM steps); everything else as the paper.
LOCALITY_SCALE = {"micro": {"num_samples": 10, "steps": 2}, "paper-smoke": {"num_samples": 4, "steps": 2}}
