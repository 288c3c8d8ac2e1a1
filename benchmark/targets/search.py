"""``search`` — where to graft: layer-selection strategies against the paper's fixed choices at equal cost (beyond
the paper).

For Hyena-X in the MHA sites at 50 % and 75 % of the layers, and for the r=3 MLP in the MLP sites, each new strategy
of ``graft_core.grafting.selection`` chooses the layers — ``stage1_error`` (lowest stage-1 held-out error), ``greedy`` (grow
the set by the least rise of a held-out diffusion loss, no stage 2 inside), ``cost_aware`` (MHA only: per layer
Hyena-X, SWA, Mamba-2 or keeping MHA, by loss rise per FLOP saved, until it saves as many FLOPs as Hyena-X in that
many layers; with the MLP's one operator it would be ``greedy``) — beside the paper's interleaved layers (= the
table3 rows, shared runs) and, at 50 %, the top-local layers of Fig. 4b (= the fig4b row). Every row goes through
the same stage 2 and evaluation. A search is one run that waits for the stage-1 runs of every layer (shared with
table3's 100 % rows) and resolves its rows as fig2's locality run resolves fig4b's (locally the plan is redone, on
Slurm a replan job submits the rest); operators that save no FLOPs at the preset's size are left out of the choice.

    python -m benchmark.run search                     # tiny (see REPRODUCE.md for its cost)
    python -m benchmark.run search --preset paper --dry-run
"""
from __future__ import annotations

from benchmark.dag import layer_flops
from benchmark.rows import GraftSpec, Row, SearchSpec, freeze_options
from benchmark.targets.common import declarations, declared_row, hybrid_row, locality_config, preset
from graft_core.grafting.plan import select_layers
from graft_core.presets import Preset
from graft_core.grafting.probe import ProbeConfig
from graft_core.grafting.selection import NEEDS_PROBE
from graft_core.table_rows import RowDecl

NAME = "search"
BEYOND_PAPER = True  # not part of ``all``
TITLE = "Where to graft: searched layer selections vs interleaved at equal cost (beyond the paper)"
# What each site's study grafts (its rows, labels and strategies: graft_core.table_rows.SEARCH_STUDIES): operator,
# options, the cost-aware choice of operators
STUDIES = {"attn": ("hyena_x", {}, (("hyena_x", {}), ("swa", {"window": 4}), ("mamba2", {}))),
           "mlp": ("mlp", {"ratio": 3}, ())}
FIXED = ("interleaved50", "interleaved75", "top_local")  # the paper's choices: table3 / fig4b rows, shared runs
# The held-out probe of the greedy searches: the held-out subset (80 images on tiny), 4 stratified timesteps each;
# on the paper preset 1,024 held-out latents × 2 timesteps (~1 s of DiT-XL/2 forwards per evaluation on an H100).
PROBES = {"paper": ProbeConfig(num_samples=1024, timesteps=2, batch_size=256),
          "paper-smoke": ProbeConfig(num_samples=8, timesteps=1, batch_size=8),
          "micro": ProbeConfig(num_samples=20, timesteps=2, batch_size=40)}
DEFAULT_PROBE = ProbeConfig(num_samples=80, timesteps=4, batch_size=80)


def budget_layers(num_layers: int, ratio: int) -> int:
    """As many layers as the interleaved pattern of that ratio replaces (14 / 21 of 28, 4 / 6 of 8)."""
    return len(select_layers(f"interleaved{ratio}", num_layers))


def search_row(p: Preset, d: RowDecl, operator: str, options: dict, choices: tuple) -> Row:
    t = p.teacher
    site, strategy = d.site, d.strategy
    k = budget_layers(t.num_layers, d.ratio)
    probe = PROBES.get(p.name, DEFAULT_PROBE) if strategy in NEEDS_PROBE else None
    if strategy == "cost_aware":
        saved = layer_flops(site, None, {}, t) - layer_flops(site, operator, options, t)
        ops = tuple((o, freeze_options(opts)) for o, opts in choices
                    if layer_flops(site, o, opts, t) < layer_flops(site, None, {}, t))
        spec = SearchSpec(strategy, ops, flops=k * saved, probe=probe)
    else:
        spec = SearchSpec(strategy, ((operator, freeze_options(options)),), layers=k, probe=probe)
    graft = GraftSpec(site=site, operator=operator, strategy=strategy, layers=None, options=freeze_options(options))
    return declared_row(d, kind="graft", preset=p, graft=graft, search=spec,
                        extra={"graft_operator": operator, "options": dict(options), **d.extra})


def row(p: Preset, d: RowDecl) -> Row:
    operator, options, choices = STUDIES[d.site]
    if d.strategy not in FIXED:
        return search_row(p, d, operator, options, choices)
    return hybrid_row(p, d, operator, options, locality=locality_config(p) if d.strategy == "top_local" else None,
                      extra=dict(d.extra))


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    return [row(p, d) for d in declarations(NAME, p)]
