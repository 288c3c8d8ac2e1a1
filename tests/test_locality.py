"""Band-k attention locality (Fig. 2): the L_k definition, the recording processor, the trajectory average."""
import copy

import pytest
import torch

from graft_core.grafting.locality import BandMassRecorder, band_locality, band_masses, locality_scores
from graft_core.grafting.plan import make_plan, select_layers
from graft_core.evaluation.sampler import sample
from graft_core.grafting.surgery import graft


def test_band_mass_definition():
    eye = torch.eye(5)
    assert torch.allclose(band_masses(eye, [0, 2]), torch.ones(2))
    uniform = torch.full((4, 4), 0.25)
    # (1/N)·Σ_ij A_ij·1[|i−j|<=k] with N=4: 4, 10, 14, 16 entries in the band
    assert torch.allclose(band_masses(uniform, [0, 1, 2, 3]), torch.tensor([4, 10, 14, 16]) / 16)


def test_recorder_is_the_attention_it_replaces(micro_teacher):
    attn = copy.deepcopy(micro_teacher.transformer_blocks[0].attn1)
    x = torch.randn(3, 16, 16)
    with torch.no_grad():
        expected = attn(x)
        rec = BandMassRecorder([0, 3, 15])
        attn.set_processor(rec)
        got = attn(x)
        q = attn.to_q(x).view(3, 16, 2, 8).transpose(1, 2)
        k = attn.to_k(x).view(3, 16, 2, 8).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    direct = band_masses(probs, [0, 3, 15]).mean(dim=(1, 2))  # mean over samples and heads
    torch.testing.assert_close(torch.tensor(rec.result(), dtype=torch.float32), direct)


def test_band_locality_along_the_sampling_trajectory(micro_teacher, micro_preset):
    labels = torch.tensor([0, 3, 7])
    processors = [b.attn1.processor for b in micro_teacher.transformer_blocks]
    before = sample(micro_teacher, labels, teacher=micro_preset.teacher, steps=2, seed=1)
    result = band_locality(micro_teacher, teacher_cfg=micro_preset.teacher, labels=labels, ks=(0, 1, 4, 15), steps=2,
                           guidance_scale=1.5, seed=1)
    assert sorted(result) == [0, 1, 4, 15] and all(len(v) == 2 for v in result.values())
    for layer in range(2):
        values = [result[k][layer] for k in (0, 1, 4, 15)]
        assert all(0 <= v <= 1 + 1e-6 for v in values) and values == sorted(values)
        assert values[-1] == pytest.approx(1.0, abs=1e-5)  # k >= N-1 covers every key
    assert [b.attn1.processor for b in micro_teacher.transformer_blocks] == processors  # restored
    assert torch.equal(sample(micro_teacher, labels, teacher=micro_preset.teacher, steps=2, seed=1), before)
    # scores feed the top/low-local layer selection
    assert len(select_layers("top_local", 2, locality=locality_scores(result, 4))) == 1


def test_grafted_layers_have_no_attention_map(micro_teacher, micro_preset):
    model = graft(copy.deepcopy(micro_teacher), make_plan("attn", "hyena_x", [1], num_layers=2))
    result = band_locality(model, teacher_cfg=micro_preset.teacher, labels=torch.tensor([1]), ks=(2,), steps=1)
    assert result[2][0] is not None and result[2][1] is None
    with pytest.raises(ValueError, match="no attention scores"):
        locality_scores(result, 2)
