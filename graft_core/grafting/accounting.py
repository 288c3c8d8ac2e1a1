"""Analytic FLOPs and parameters per operator and per plan — the efficiency columns of Table 4 (paper §4.8, §15).

Conventions (docs/paper-reference.md §3): per layer, N tokens, width D, FLOPs = 2 × MACs. Attention-site FLOPs split
into "op" (softmax attention / the gating part) and "ft" (QKV + output projections and featurizers); MLP-site FLOPs are
not decomposed (all in "op", "ft" = 0). A plan's Δ% = Σ_replaced (new − old) / (num_layers · old) · 100, where old is
the teacher's operator at that site (MHA; MLP with ratio 4).

Each operator's formula is declared with it (``cost=`` of ``register_operator``; the built-ins' in
``graft_core.operators.catalogue``, with the paper's formulas in their docstrings): a plugin operator gets its
efficiency columns from its own declaration. **Mamba-2: the paper's formula (its Sec. H.1) is UNKNOWN**; ours is
``catalogue.mamba2_cost`` (``source="ours"``), and the published Table-4 values are exposed beside it
(``PAPER_MAMBA2_DFLOPS``), never derived. MLP-Hyena-X: ``paper`` counts the dense layers and the gates (reproduces
Table 4's +0.01/+0.02/+0.02 %), ``conv`` also the channel-axis conv (§15.2).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from graft_core.operators import registry
from graft_core.operators.catalogue import MLP_HYENA_X_COUNTS  # noqa: F401  (re-exported)
from graft_core.operators.registry import TEACHER_OPERATOR, OpCost  # noqa: F401  (re-exported)
from graft_core.grafting.plan import GraftPlan

if TYPE_CHECKING:  # the analytic formulas run without torch (the driver's --dry-run prints them)
    from torch import nn

# Table 4, Mamba-2 rows (docs/paper-reference.md §5): replaced layers of 28 → (ΔFLOPs op %, ΔFLOPs ft %). Published, not
# derived.
PAPER_MAMBA2_DFLOPS = {14: (-37.59, 77.89), 21: (-56.38, 116.83), 28: (-75.17, 155.77)}


class NoCostFormula(ValueError):
    """The operator was registered without ``cost=``: its FLOP/parameter columns cannot be computed."""


def operator_cost(name: str, dim: int, *, num_heads: int, seq_len: int, mlp_hyena_x_count: str = "paper",
                  **options) -> OpCost:
    """Analytic per-layer FLOPs (op, ft) and parameters of operator ``name`` at width ``dim`` and ``seq_len`` tokens,
    from the formula its registration declares (options not given take the declared defaults)."""
    info = registry.operator_info(name)  # unknown name → ValueError with the list
    if info.cost is None:
        raise NoCostFormula(f"operator {name!r} declares no cost formula (register_operator(..., cost=...))")
    resolved = info.resolved_options(options)
    if name == "mlp_hyena_x":  # the one operator with two published counting conventions
        resolved["count"] = mlp_hyena_x_count
    return info.cost(dim, seq_len, num_heads, **resolved)


def teacher_cost(site: str, dim: int, *, num_heads: int, seq_len: int, mlp_ratio: float = 4.0) -> OpCost:
    """Cost of the operator a plan replaces: DiT's MHA (attn) or its MLP with ``mlp_ratio`` (mlp)."""
    if site not in TEACHER_OPERATOR:
        raise ValueError(f"unknown site {site!r}")
    name, options = TEACHER_OPERATOR[site]
    options = dict(options, ratio=mlp_ratio) if site == "mlp" else options
    return operator_cost(name, dim, num_heads=num_heads, seq_len=seq_len, **options)


def efficiency(plan: GraftPlan, *, num_layers: int, dim: int, num_heads: int, seq_len: int,
               mlp_ratio: float = 4.0, mlp_hyena_x_count: str = "paper") -> dict:
    """Table-4 efficiency columns of one plan, in percent of the summed teacher operator over all layers.

    Returns ``d_flops_op``, ``d_flops_ft``, ``d_param`` (ours), ``flops_source`` and, for Mamba-2 at a published
    configuration (28 layers, 14/21/28 replaced), ``paper_d_flops_op`` / ``paper_d_flops_ft`` (else ``None``).
    An operator registered without a formula gets ``None`` columns and says so in ``flops_source``.
    """
    plan.check_model(num_layers, seq_len)
    if registry.operator_info(plan.operator).cost is None:
        return {"d_flops_op": None, "d_flops_ft": None, "d_param": None,
                "flops_source": "no cost formula declared", "paper_d_flops_op": None, "paper_d_flops_ft": None}
    new = operator_cost(plan.operator, dim, num_heads=num_heads, seq_len=seq_len,
                        mlp_hyena_x_count=mlp_hyena_x_count, **plan.option_dict)
    old = teacher_cost(plan.site, dim, num_heads=num_heads, seq_len=seq_len, mlp_ratio=mlp_ratio)
    frac = len(plan.layers) / num_layers
    pct = lambda a, b: 100.0 * frac * (a - b) / b if b else 0.0  # noqa: E731
    paper = None
    if plan.operator == "mamba2" and num_layers == 28:
        paper = PAPER_MAMBA2_DFLOPS.get(len(plan.layers))
    return {"d_flops_op": pct(new.flops_op, old.flops_op), "d_flops_ft": pct(new.flops_ft, old.flops_ft),
            "d_param": pct(new.params, old.params), "flops_source": new.source,
            "paper_d_flops_op": paper[0] if paper else None, "paper_d_flops_ft": paper[1] if paper else None}


# ---------------------------------------------------------------------------------------------------------------------
# Measured counts
# ---------------------------------------------------------------------------------------------------------------------


def count_params(model: nn.Module, *, dedup_block_embedders: bool = True) -> int:
    """Parameters of a diffusers DiT (or any module).

    diffusers gives every DiT block its own copy of the timestep/label embedder (``norm1.emb``), which the original
    DiT holds once; ``dedup_block_embedders`` counts that embedder once (DiT-XL/2: 674.8M instead of 749.8M). Blocks
    restructured into parallel pairs are looked through.
    """
    total = sum(p.numel() for p in model.parameters())
    if not dedup_block_embedders:
        return total
    embedders = [m for name, m in model.named_modules() if name.endswith("norm1.emb")]
    if len(embedders) > 1:
        total -= sum(sum(p.numel() for p in m.parameters()) for m in embedders[1:])
    return total


def site_params(model: nn.Module, site: str) -> int:
    """Summed parameters of the modules at ``site`` (``attn1`` or ``ff``) over all blocks."""
    from graft_core.grafting.surgery import SITE_ATTR

    attr = SITE_ATTR[site]
    return sum(p.numel() for b in model.transformer_blocks for p in getattr(b, attr).parameters())


def measured_param_delta(original: nn.Module, grafted: nn.Module, site: str) -> float:
    """Δparam % measured on real models: (grafted − original) / (original's ``site`` params) · 100."""
    delta = sum(p.numel() for p in grafted.parameters()) - sum(p.numel() for p in original.parameters())
    return 100.0 * delta / site_params(original, site)


def table4_plans(num_layers: int = 28) -> Iterable[tuple[str, str, int, GraftPlan]]:
    """The 24 grafted configs of Table 3/4 as ``(group, paper operator name, ratio %, plan)``: the catalogue rows
    the paper publishes, at 50 / 75 / 100 % of the layers."""
    from graft_core.grafting.plan import make_plan

    ratios = {50: "interleaved50", 75: "interleaved75", 100: "full"}
    for row in registry.catalogue_rows():
        if row.paper is None:
            continue
        group = "MHA" if row.site == "attn" else "MLP"
        for ratio, strategy in ratios.items():
            yield group, row.paper, ratio, make_plan(row.site, row.operator, strategy, num_layers=num_layers,
                                                     **row.option_dict)
