"""Depth → width: 28 → 14 layers on the DiT-XL/2 config, +6 % params, and a merge init close to the teacher."""
import copy

import pytest
import torch
from diffusers import DiTTransformer2DModel

from graft_core.grafting.accounting import count_params
from graft_core.grafting.plan import make_plan
from graft_core.grafting.restructure import ParallelPair, merge_params, to_parallel_pairs
from graft_core.grafting.surgery import graft


def dit_forward(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, generator=g)
    with torch.no_grad():
        return model(x, timestep=torch.tensor([3, 200, 500, 900]), class_labels=torch.tensor([1, 7, 2, 3]),
                     return_dict=False)[0]


def test_dit_xl2_goes_to_14_layers_and_712m_params():
    """Built on the meta device: the DiT-XL/2 architecture without allocating its 3 GB of weights."""
    with torch.device("meta"):
        model = DiTTransformer2DModel(num_layers=28, num_attention_heads=16, attention_head_dim=72, in_channels=4,
                                      out_channels=8, sample_size=32, patch_size=2, num_embeds_ada_norm=1000)
    base = count_params(model)  # per-block timestep/label embedder counted once (as the DiT paper)
    assert round(base / 1e6, 1) == 674.8
    to_parallel_pairs(model)
    assert len(model.transformer_blocks) == 14 and all(isinstance(b, ParallelPair) for b in model.transformer_blocks)
    assert count_params(model) == base + merge_params(28, 1152) == base + 14 * (2 * 1152 * 1152 + 1152)
    assert round(count_params(model) / 1e6) == 712
    assert round(100 * merge_params(28, 1152) / base, 1) == 5.5  # the paper's "+6 %"


def test_merge_starts_as_sum_of_deltas(micro_teacher):
    pair = to_parallel_pairs(copy.deepcopy(micro_teacher)).transformer_blocks[0]
    d = pair.merge.out_features
    assert torch.equal(pair.merge.weight, torch.cat([torch.eye(d), torch.eye(d)], dim=1))
    assert torch.equal(pair.merge.bias, torch.zeros(d))


def test_before_training_output_is_close_to_the_sequential_teacher(micro_teacher):
    """[I, I] = sequential pair to first order: far closer than dropping block b or averaging the two deltas."""
    reference = dit_forward(micro_teacher)
    rel = lambda out: ((out - reference).norm() / reference.norm()).item()  # noqa: E731
    wide = to_parallel_pairs(copy.deepcopy(micro_teacher))
    assert wide.transformer_blocks[0].norm1 is wide.transformer_blocks[0].blocks[0].norm1
    parallel = rel(dit_forward(wide))
    dropped = copy.deepcopy(micro_teacher)
    dropped.transformer_blocks = torch.nn.ModuleList([dropped.transformer_blocks[0]])
    with torch.no_grad():
        wide.transformer_blocks[0].merge.weight.mul_(0.5)
    averaged = rel(dit_forward(wide))
    assert parallel < 0.1
    assert parallel < 0.5 * rel(dit_forward(dropped)) and parallel < 0.5 * averaged


def test_errors(micro_teacher):
    model = copy.deepcopy(micro_teacher)
    graft(model, make_plan("attn", "hyena_y", [1], num_layers=2))  # grafting comes first…
    to_parallel_pairs(model)
    with pytest.raises(ValueError, match="already restructured"):
        to_parallel_pairs(model)
    with pytest.raises(ValueError, match="graft before restructuring"):  # …and cannot follow
        graft(model, make_plan("attn", "swa", [0], num_layers=2))


def test_odd_depth_is_refused(micro_teacher):
    model = copy.deepcopy(micro_teacher)
    model.transformer_blocks = torch.nn.ModuleList([model.transformer_blocks[0]])
    with pytest.raises(ValueError, match="odd number of blocks"):
        to_parallel_pairs(model)
