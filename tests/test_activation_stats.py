"""Table 1 (i)/(ii) statistics on a capture that holds only some (layer, site) pairs."""
import pytest
import torch

from graft_core.stages import activation_stats
from graft_core.stages import capture as cap


def test_statistics_cover_the_pairs_a_capture_holds(micro_teacher, micro_preset, tmp_path):
    folder = cap.capture_activations(micro_teacher, micro_preset, root=tmp_path, pairs=[(1, "mlp"), (0, "attn")])
    stats = activation_stats.activation_statistics(folder)
    assert [r["layer"] for r in stats["attn"]] == [0] and [r["layer"] for r in stats["mlp"]] == [1]
    assert stats["num_samples"] == 10 * micro_preset.data.stage1_per_class
    _, y = cap.load_capture(folder, 1, "mlp")
    assert stats["mlp"][0]["variance"] == pytest.approx(y.double().var(unbiased=False).item(), rel=1e-6)
    only = activation_stats.activation_statistics(folder, sites=("mlp",), layers=[1])
    assert only["mlp"] == stats["mlp"] and "attn" not in only
    with pytest.raises(FileNotFoundError, match="layer 1 / attn"):
        activation_stats.activation_statistics(folder, micro_preset.teacher.num_layers)  # asks for every layer
    assert torch.isfinite(torch.tensor([r["kurtosis"] for r in stats["attn"] + stats["mlp"]])).all()
