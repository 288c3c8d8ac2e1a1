"""Per-layer activation statistics of the teacher's MHA and MLP outputs (paper Table 1, panels i/ii; E2).

Computed from a stage-1 capture (``capture.capture_activations``): the *targets* are the operators' outputs before
their gates, over the capture's samples (one uniform timestep each) and all tokens and channels. The paper does not
say which statistic its panels show (UNKNOWN, docs/paper-reference.md §5), so several are reported per (site, layer):

* ``variance`` / ``std`` / ``mean`` — over all elements;
* ``max_abs`` — largest magnitude; ``p999_abs`` — 99.9th percentile of |x| (from a fixed subsample);
* ``outlier_frac`` — fraction of elements with |x − mean| > ``outlier_sigma`` · std (default 6σ);
* ``kurtosis`` — excess kurtosis (0 for a Gaussian; heavy tails → large);
* ``input_variance`` — variance of the operator's input (the modulated, normalised hidden state), for reference.

Two chunked passes over memory-mapped arrays, so paper-sized captures need not fit in RAM. A capture may hold only
some (layer, site) pairs (``capture_activations(pairs=...)``): the statistics cover the pairs it holds, each read on
its own.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from graft_core.stages.capture import SITES, capture_meta, captured_pairs, load_capture

CHUNK = 256  # samples per chunk
QUANTILE_SAMPLE = 1 << 20  # elements drawn (seeded) for the percentile estimate


def moments(x: torch.Tensor, *, chunk: int = CHUNK) -> tuple[float, float, float]:
    """(mean, variance, max |x|) over all elements, float64, one chunked pass."""
    n = x.numel()
    if n == 0:
        raise ValueError("empty tensor")
    total, total_sq, max_abs = 0.0, 0.0, 0.0
    for lo in range(0, len(x), chunk):
        c = x[lo:lo + chunk].to(torch.float64)
        total += c.sum().item()
        total_sq += (c * c).sum().item()
        max_abs = max(max_abs, c.abs().max().item())
    mean = total / n
    return mean, max(0.0, total_sq / n - mean * mean), max_abs


def tensor_statistics(x: torch.Tensor, *, outlier_sigma: float = 6.0, chunk: int = CHUNK) -> dict[str, float]:
    """Statistics of all elements of ``x`` (``[S, ...]``, any float dtype), in float64, chunked along dim 0."""
    n = x.numel()
    mean, var, max_abs = moments(x, chunk=chunk)
    std = var ** 0.5
    outliers, m4 = 0, 0.0
    for lo in range(0, len(x), chunk):
        d = x[lo:lo + chunk].to(torch.float64) - mean
        outliers += (d.abs() > outlier_sigma * std).sum().item() if std > 0 else 0
        m4 += (d ** 4).sum().item()
    flat = x.reshape(-1)
    if n > QUANTILE_SAMPLE:
        pick = torch.randint(0, n, (QUANTILE_SAMPLE,), generator=torch.Generator().manual_seed(0))
        flat = flat[pick]
    p999 = torch.quantile(flat.to(torch.float64).abs(), 0.999).item()
    return {"mean": mean, "variance": var, "std": std, "max_abs": max_abs, "p999_abs": p999,
            "outlier_frac": outliers / n, "kurtosis": (m4 / n) / (var * var) - 3.0 if var > 0 else 0.0}


def activation_statistics(capture_folder: Path, num_layers: int | None = None, *, outlier_sigma: float = 6.0,
                          sites: tuple[str, ...] = SITES, layers: Sequence[int] | None = None) -> dict:
    """``{"attn": [per-layer dict, ...], "mlp": [...], "outlier_sigma": σ, "num_samples": S}``; each per-layer dict
    holds ``layer`` plus the statistics above. Layers: ``layers``, else ``range(num_layers)``, else every layer the
    capture holds for the site (a layer asked for but not captured raises ``FileNotFoundError``)."""
    meta = capture_meta(capture_folder)
    held = captured_pairs(capture_folder)
    out: dict = {"outlier_sigma": outlier_sigma, "num_samples": meta["num_samples"],
                 "capture": Path(capture_folder).name}
    for site in sites:
        rows = []
        if layers is not None:
            site_layers = list(layers)
        elif num_layers is not None:
            site_layers = list(range(num_layers))
        else:
            site_layers = [layer for layer, s in held if s == site]
        for layer in site_layers:
            inputs, targets = load_capture(capture_folder, layer, site, mmap=True)
            row = {"layer": layer, **tensor_statistics(targets, outlier_sigma=outlier_sigma)}
            row["input_variance"] = moments(inputs)[1]
            rows.append(row)
        out[site] = rows
    return out
