"""The built-in operators: one declaration each, with its grid rows and its FLOP/parameter formula beside it.

Torch-free on purpose (the driver and the tables read it without loading torch): each class is named as
``"module:Class"`` and imported when the operator is first built; its keyword defaults are checked against the
``options`` declared here. Row order within a site is the paper's Table-4 order. Formulas follow docs/paper-reference.md
§3 (see ``graft_core.grafting.accounting``): per layer, N tokens, width D, FLOPs = 2 × MACs, attention-site FLOPs split into
"op" (softmax attention / the gating part) and "ft" (projections and featurizers); MLP-site FLOPs are all "op".
"""
from __future__ import annotations

from graft_core.operators.registry import OpCost, register_operator, register_row

MLP_HYENA_X_COUNTS = ("paper", "conv")


def _attention_cost(dim, seq_len, num_heads, *, keys=None):
    n, d = seq_len, dim
    keys = n if keys is None else keys
    return OpCost(4 * n * keys * d, 8 * n * d * d, 4 * d * d + 4 * d)


def mha_cost(dim, seq_len, num_heads):
    """op 4·N²·D, ft 8·N·D²."""
    return _attention_cost(dim, seq_len, num_heads)


def swa_cost(dim, seq_len, num_heads, *, window):
    """op 4·N·(2w+1)·D (2w+1 capped at N), ft as MHA."""
    return _attention_cost(dim, seq_len, num_heads, keys=min(2 * window + 1, seq_len))


def _hyena_cost(dim, seq_len, kernel_size, *, featurizer: bool, inner: bool) -> OpCost:
    n, d, k = seq_len, dim, kernel_size
    params = 4 * d * d + 4 * d + featurizer * 3 * d * (k + 1) + inner * d * (k + 1)
    return OpCost(2 * n * d + inner * 2 * k * n * d, 8 * n * d * d + featurizer * 2 * k * n * 3 * d, params)


def hyena_x_cost(dim, seq_len, num_heads, *, kernel_size):
    """op 2·N·D (two gates), ft 8·N·D² + 2·K·N·3D (featurizer)."""
    return _hyena_cost(dim, seq_len, kernel_size, featurizer=True, inner=False)


def hyena_y_cost(dim, seq_len, num_heads, *, kernel_size):
    """op 2·N·D + 2·K·N·D (gates + inner conv), ft 8·N·D²."""
    return _hyena_cost(dim, seq_len, kernel_size, featurizer=False, inner=True)


def hyena_se_cost(dim, seq_len, num_heads, *, kernel_size):
    """op as Hyena-Y, ft as Hyena-X."""
    return _hyena_cost(dim, seq_len, kernel_size, featurizer=True, inner=True)


def mamba2_cost(dim, seq_len, num_heads, *, d_state, expand, headdim, d_conv, ngroups, **_init_options):
    """**The paper's formula (its Sec. H.1) is UNKNOWN**; ours, with d_inner = E·D, H heads,
    d_in_proj = 2·d_inner + 2·G·d_state + H, conv_dim = d_inner + 2·G·d_state:
    ft = 2·N·D·d_in_proj + 2·N·d_inner·D + 2·K·N·conv_dim (projections and the causal conv);
    op = 4·N·d_inner·d_state (state input dt·x⊗B and read-out C·S) + N·d_inner·d_state (state decay)
    + 2·N·d_inner (D-skip and z-gate Hadamards)."""
    n, d = seq_len, dim
    d_inner = expand * d
    heads = d_inner // headdim
    d_in_proj = 2 * d_inner + 2 * ngroups * d_state + heads
    conv_dim = d_inner + 2 * ngroups * d_state
    params = d * d_in_proj + (d_conv + 1) * conv_dim + 3 * heads + d_inner + d_inner * d
    flops_ft = 2 * n * d * d_in_proj + 2 * n * d_inner * d + 2 * d_conv * n * conv_dim
    flops_op = 4 * n * d_inner * d_state + n * d_inner * d_state + 2 * n * d_inner
    return OpCost(flops_op, flops_ft, params, source="ours (paper's Mamba-2 formula UNKNOWN)")


def mlp_cost(dim, seq_len, num_heads, *, ratio):
    """4·N·D·h, h = int(r·D)."""
    h = int(dim * ratio)
    return OpCost(4 * seq_len * dim * h, 0, 2 * dim * h + h + dim)


def mlp_hyena_x_cost(dim, seq_len, num_heads, *, ratio, kernel_size, count: str = "paper"):
    """Dense 8·N·D·h plus the two gates 2·N·h (h = int(r·D)) — the ``paper`` count (reproduces Table 4's
    +0.01/+0.02/+0.02 %); ``conv`` also counts the channel-axis conv 2·K·N·3h (§15.2)."""
    if count not in MLP_HYENA_X_COUNTS:
        raise ValueError(f"mlp_hyena_x_count must be one of {MLP_HYENA_X_COUNTS}, got {count!r}")
    n, d, k = seq_len, dim, kernel_size
    h = int(d * ratio)
    flops = 8 * n * d * h + 2 * n * h + (count == "conv") * 2 * k * n * 3 * h
    source = "paper §15.2 (gates only)" if count == "paper" else "gates + channel conv (§15.2)"
    return OpCost(flops, 0, 4 * h * d + 3 * h + d + (k + 1) * n, source=source)


# ------------------------------------------------------------------------------------------------------ MHA site
register_operator("hyena_se", site="attn", impl="graft_core.operators.hyena_se:HyenaSE", options={"kernel_size": 4},
                  cost=hyena_se_cost, label="Hyena-SE (K=4)", latex="Hyena-SE ($K$=4)", short="Hyena-SE",
                  paper="Hyena-SE")
register_operator("hyena_x", site="attn", impl="graft_core.operators.hyena_x:HyenaX", options={"kernel_size": 4},
                  cost=hyena_x_cost, label="Hyena-X (K=4)", latex="Hyena-X ($K$=4)", short="Hyena-X",
                  paper="Hyena-X")
register_operator("hyena_y", site="attn", impl="graft_core.operators.hyena_y:HyenaY", options={"kernel_size": 4},
                  cost=hyena_y_cost, label="Hyena-Y (K=4)", latex="Hyena-Y ($K$=4)", short="Hyena-Y",
                  paper="Hyena-Y")
# the teacher's operator: self-grafting and random init re-initialise it; no grid row of its own
register_operator("mha", site="attn", impl="graft_core.operators.mha:MHA", cost=mha_cost)
register_operator("swa", site="attn", impl="graft_core.operators.swa:SlidingWindowAttention", options={"window": 4},
                  cost=swa_cost)
register_row("swa", operator="swa", options={"window": 4}, label="SWA (w=4)", latex="SWA ($w$=4)", short="SWA",
             paper="SWA")
register_operator("mamba2", site="attn", impl="graft_core.operators.mamba2:Mamba2",
                  options={"d_state": 64, "expand": 2, "headdim": 16, "d_conv": 4, "ngroups": 1, "chunk_size": 64,
                           "A_init_range": (1.0, 16.0), "dt_min": 1e-3, "dt_max": 0.1, "dt_init_floor": 1e-4},
                  cost=mamba2_cost, label="Mamba-2 (d_s=64, E=2)", latex="Mamba-2 ($d_s$=64, $E$=2)",
                  short="Mamba-2", paper="Mamba-2")

# ------------------------------------------------------------------------------------------------------ MLP site
register_operator("mlp", site="mlp", impl="graft_core.operators.mlp:MLP", options={"ratio": 4.0}, cost=mlp_cost)
register_row("mlp_r3", operator="mlp", options={"ratio": 3}, label="Exp. ratio ↓ (r=3)",
             latex=r"Exp.\ ratio $\downarrow$ ($r$=3)", short="MLP r=3", paper="MLP r=3")
register_row("mlp_r6", operator="mlp", options={"ratio": 6}, label="Exp. ratio ↑ (r=6)",
             latex=r"Exp.\ ratio $\uparrow$ ($r$=6)", short="MLP r=6", paper="MLP r=6")
register_operator("mlp_hyena_x", site="mlp", impl="graft_core.operators.mlp_hyena_x:MLPHyenaX",
                  options={"ratio": 2.0, "kernel_size": 4}, seq_len_bound=True, cost=mlp_hyena_x_cost,
                  label="Hyena-X (r=2, K=4)", latex="Hyena-X ($r$=2, $K$=4)", short="MLP Hyena-X", paper="Hyena-X")
