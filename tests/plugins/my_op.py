"""An operator in one file (the README's example, exercised by ``tests/test_plugin.py``): a gated depthwise-conv mixer.

Importing this module (``--plugin tests.plugins.my_op``, a path to this file, ``$GRAFTBENCH_PLUGINS`` or an entry point
in the ``graftbench.operators`` group) registers operator ``my_op`` at the MHA site with its FLOP/parameter formula
and its Table-3/4 grid row: ``attn-my_op-interleaved50``, ``-interleaved75`` and ``-full``.
"""
import torch
from torch import nn

from graft_core.operators import GraftOperator, OpCost, register_operator


def my_op_cost(dim, seq_len, num_heads, *, kernel_size):
    """op: the depthwise conv 2·K·N·D and the gate N·D; ft: in (D→2D) and out (D→D) projections 6·N·D²."""
    n, d = seq_len, dim
    params = (d * 2 * d + 2 * d) + (kernel_size * d + d) + (d * d + d)
    return OpCost(2 * kernel_size * n * d + n * d, 6 * n * d * d, params, source="tests/plugins/my_op.py")


@register_operator("my_op", site="attn", cost=my_op_cost, label="Conv mixer (K=3)", latex="Conv mixer ($K$=3)",
                   short="Conv mixer")
class ConvMixer(GraftOperator):
    """Gated depthwise convolution over the raster token order."""

    def __init__(self, dim: int, *, kernel_size: int = 3):
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, padding=kernel_size // 2)
        self.out_proj = nn.Linear(dim, dim)

    def mix(self, u: torch.Tensor) -> torch.Tensor:
        x, gate = self.in_proj(u).chunk(2, dim=-1)
        y = self.conv(x.transpose(1, 2))[..., : u.shape[1]].transpose(1, 2)
        return self.out_proj(y * torch.sigmoid(gate))
