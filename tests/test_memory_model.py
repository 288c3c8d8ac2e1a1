"""The memory model: saved-tensor bytes counted as autograd keeps them, fitted terms recovered exactly, training
state from parameter counts."""
import pytest
import torch

from benchmark.memory_model import SavedModel, fit, saved_bytes, state_bytes


def test_saved_bytes_counts_each_storage_once_and_leaves_parameters_out():
    lin = torch.nn.Linear(8, 16)
    x = torch.randn(2, 8, requires_grad=True)
    # Linear saves its input (2×8 fp32 = 64 B) and its weight (a parameter: not counted)
    assert saved_bytes(lin, x)["saved_bytes"] == 64
    seq = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh())
    # the input (64 B) and tanh's output (2×16 fp32 = 128 B); the Linear's output is not kept by tanh's backward
    assert saved_bytes(seq, x)["saved_bytes"] == 64 + 128


def test_fit_recovers_each_term():
    truth = SavedModel(per_token=1000.0, per_token2=0.5, shared2=2.0)
    points = [(b, n, int(truth.predict(b, n))) for b, n in ((1, 128), (1, 512), (2, 512))]
    model = fit(points)
    assert model.per_token == pytest.approx(1000.0, rel=1e-3)
    assert model.per_token2 == pytest.approx(0.5, rel=1e-2) and model.shared2 == pytest.approx(2.0, rel=1e-2)
    assert model.predict(2, 4096) == pytest.approx(truth.predict(2, 4096), rel=1e-3)
    assert fit([(1, 256, 256_000)]) == SavedModel(per_token=1000.0)  # one point: the linear term alone


def test_swa_band_mask_is_the_shared_quadratic_term():
    """Sliding-window attention as implemented keeps its [N, N] band mask once for the batch (SDPA turns the bool
    mask into an fp32 additive one for its backward): the fit finds 4 bytes per token² shared, nothing per sample."""
    from benchmarks.paper_scale import operator, probe

    pts = [(b, n, probe(lambda t: operator("swa", 32, 4, t), b, n, "fp32")["saved_bytes"])
           for b, n in ((1, 64), (1, 256), (2, 256))]
    model = fit(pts)
    assert model.shared2 == pytest.approx(4.0, rel=1e-3) and model.per_token2 == pytest.approx(0.0, abs=1e-6)
    measured = probe(lambda t: operator("swa", 32, 4, t), 2, 1024, "fp32")["saved_bytes"]
    assert model.predict(2, 1024) == pytest.approx(measured, rel=1e-3)


def test_training_state_from_parameter_counts():
    s = state_bytes(1000, teacher_copy=True)
    assert s == {"weights": 4000, "grads": 4000, "adamw": 8000, "ema": 4000, "teacher": 4000}
    lora = state_bytes(1000, trainable=10)
    assert lora["weights"] == 4000 and lora["adamw"] == 80


def test_paper_model_parameter_counts():
    """DiT-XL/2: the official model's 675,129,632 parameters (its fixed 256×1152 positional table counted as one)
    less that table (a buffer in diffusers) plus the 27 extra copies of the timestep/class embedder that diffusers'
    DiT keeps per block (256·1152+1152 + 1152·1152+1152 + 1001·1152 = 2,777,472 each); counted on the meta device."""
    from benchmarks.paper_scale import model_params

    params = model_params()
    assert params["dit_xl_2"] == 675_129_632 - 256 * 1152 + 27 * 2_777_472
    assert 550e6 < params["pixart_sigma"] < 650e6  # PixArt-Σ: ~0.6 B
