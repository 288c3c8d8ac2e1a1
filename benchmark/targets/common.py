"""Building blocks shared by the target modules: the Table-3 grid from the operator catalogue, and row factories.

The grid's operators and their labels are ``graft_core.operators.catalogue_rows`` — declared once, where each
operator is registered (plugins included), never listed here.

Everything is derived from ``graft_core.presets.get_preset(name)`` with ``dataclasses.replace``; a row never mutates
a preset. Paper facts: ``docs/paper-reference.md``.
"""
from __future__ import annotations

import dataclasses

from benchmark.rows import GraftSpec, LocalityConfig, Row, freeze_options
from graft_core.operators.registry import TEACHER_OPERATOR, CatalogueRow, catalogue_rows
from graft_core.plan import NEEDS_LOCALITY, select_layers
from graft_core.presets import Preset, get_preset

SITE_GROUP = {"attn": "MHA grafting", "mlp": "MLP grafting"}
SITE_NAME = {"attn": "MHA", "mlp": "MLP"}
RATIOS = ((50, "interleaved50"), (75, "interleaved75"), (100, "full"))

# Table 2 uses 30k stage-2 iterations where Table 4 uses 50K (paper §3.2, §12.6); the self-grafting rows of Table 4
# are the Table-2 runs. Other presets scale their stage-2 steps by the same 3/5.
TABLE2_STAGE2_FACTOR = 30_000 / 50_000
# Paper labels of the data percentages (Table 2) → stage-2 data_fraction.
STAGE2_DATA = {0.63: 0.0063, 5.0: 0.05, 10.0: 0.10, 20.0: 0.20}


def grid_rows(site: str, *, paper_only: bool = False) -> tuple[CatalogueRow, ...]:
    """The Table-3 grid's operator configurations at ``site`` in catalogue order (``paper_only``: those the paper
    publishes, without plugins)."""
    return tuple(r for r in catalogue_rows(site) if r.paper is not None or not paper_only)


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


def baseline_row(p: Preset, label: str | None = None, **extra) -> Row:
    name = "Baseline DiT-XL/2" if p.teacher.pretrained else f"Baseline ({p.name} teacher)"
    return Row(id="baseline", label=label or name, group="Baseline", kind="teacher", preset=p, extra=extra)


def random_init_row(p: Preset, site: str, group: str | None = None) -> Row:
    """All layers of ``site`` replaced by freshly initialised copies, evaluated without any training."""
    op, opts = TEACHER_OPERATOR[site]
    return Row(id=f"{site}-random_init-full", label="Random init", group=group or SITE_GROUP[site], kind="graft",
               preset=p, graft=graft_spec(p, site, op, "full", opts), init="random", finetune=False, ratio=100,
               name="random_init", extra={"graft_operator": op, "options": opts})


def with_stage2(p: Preset, *, steps_factor: float = 1.0, data_fraction: float | None = None) -> Preset:
    s2 = p.stage2
    changes = {}
    if steps_factor != 1.0:
        changes["steps"] = max(1, round(s2.steps * steps_factor))
    if data_fraction is not None:
        changes["data_fraction"] = data_fraction
    return p.replace(stage2=dataclasses.replace(s2, **changes)) if changes else p


def self_graft_row(p: Preset, site: str, *, stage2_data: float | None = 10.0, row_id: str | None = None,
                   label: str | None = None, group: str | None = None) -> Row:
    """Full self-grafting (all layers, stage-1 init) with Table 2's stage-2 budget (None → no stage 2): a freshly
    initialised copy of the teacher's own operator (MHA, or the r=4 MLP)."""
    op, opts = TEACHER_OPERATOR[site]
    finetune = stage2_data is not None
    q = with_stage2(p, steps_factor=TABLE2_STAGE2_FACTOR, data_fraction=STAGE2_DATA[stage2_data]) if finetune else p
    default_label = "Self-grafting" + (" (r=4)" if site == "mlp" else "")
    return Row(id=row_id or f"{site}-self_graft-full", label=label or default_label, group=group or SITE_GROUP[site],
               kind="graft", preset=q, graft=graft_spec(p, site, op, "full", opts), finetune=finetune, ratio=100,
               name="self_graft", extra={"stage1_data": 0.63, "stage2_data": stage2_data, "graft_operator": op,
                                         "options": opts})


def hybrid_row(p: Preset, site: str, stem: str, operator: str, options: dict, label: str, ratio: int,
               strategy: str, *, row_id: str | None = None, group: str | None = None, extra: dict | None = None,
               locality: LocalityConfig | None = None) -> Row:
    """Operator ``operator`` (summary name ``stem``) in the ``strategy`` layers of ``site``; stage 1 + stage 2."""
    return Row(id=row_id or f"{site}-{stem}-{strategy}", label=label, group=group or SITE_GROUP[site], kind="graft",
               preset=p, graft=graft_spec(p, site, operator, strategy, options), ratio=ratio, locality=locality,
               name=stem, extra={"graft_operator": operator, "options": dict(options), **(extra or {})})


def control_row(p: Preset) -> Row:
    """Teacher + the same stage 2 as the grafted rows: separates the effect of stage 2 (a short stage 2 can improve
    a small teacher on its own)."""
    return Row(id="control-teacher-stage2", label="Teacher + same stage 2 (control)", group="Control",
               kind="finetune_teacher", preset=p, name="teacher_stage2")


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
