"""Memory model of training at the paper's sizes: the bytes autograd saves for the backward pass, per probe, as
``batch·tokens·per_token + batch·tokens²·per_token2 + tokens²·shared2``, fitted on measured probes
(``benchmarks/paper_scale.py``), and the bytes of the training state (weights, gradients, AdamW, EMA) from parameter
counts.

Why a fitted model and not a profiler run: the paper's models do not fit this 24 GB CPU machine as whole training
states, but one block or operator at full width does; its saved-tensor bytes scale with the batch and the tokens in
ways a three-term fit captures (SDPA's flash and memory-efficient paths keep no per-sample ``N²`` tensor; the
shared ``tokens²`` term is the ``[N, N]`` band mask of sliding-window attention, 4 bytes per entry once SDPA has
made it an fp32 additive mask). Each estimate names
its source: ``measured`` (a probe on this code), ``paper`` (a published figure) or ``assumed``.

``saved_bytes(module, *inputs)`` measures one forward with ``torch.autograd.graph.saved_tensors_hooks``: every
tensor autograd keeps for the backward, counted once per storage (views share one), parameters left out (they are
the training state, counted from parameter counts). No library reports saved-tensor bytes per module on CPU
(``torch.cuda.max_memory_allocated`` is CUDA only), hence this hook.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

SOURCES = ("measured", "paper", "assumed")
# bytes per parameter of the training state: fp32 weights 4 + fp32 gradients 4 + AdamW moments 8 + fp32 EMA 4
STATE_BYTES_PER_PARAM = {"weights": 4, "grads": 4, "adamw": 8, "ema": 4}


def saved_bytes(module, *inputs, backward: bool = True, **kwargs) -> dict:
    """Bytes autograd saves during one forward of ``module`` (parameters excluded, each storage once), the forward
    seconds, and (``backward``) the backward seconds of ``output.sum()``."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in params:
            seen[key] = max(seen.get(key, 0), storage.nbytes())
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(*inputs, **kwargs)
    forward_s = time.perf_counter() - start
    out = out[0] if isinstance(out, tuple) else out
    record = {"saved_bytes": int(sum(seen.values())), "forward_s": round(forward_s, 3)}
    if backward:
        start = time.perf_counter()
        out.float().sum().backward()
        record["backward_s"] = round(time.perf_counter() - start, 3)
    del out
    return record


@dataclass(frozen=True)
class SavedModel:
    """``saved(batch, tokens) = batch·tokens·per_token + batch·tokens²·per_token2 + tokens²·shared2`` bytes, for one
    block or operator: the per-sample linear activations, per-sample ``N²`` tensors (Mamba-2's decays between chunks;
    attention scores where a kernel keeps them) and ``N²`` tensors shared by the batch (sliding-window attention's
    ``[N, N]`` band mask)."""

    per_token: float
    per_token2: float = 0.0
    shared2: float = 0.0
    source: str = "measured"

    def predict(self, batch: int, tokens: int) -> float:
        return batch * tokens * self.per_token + (batch * self.per_token2 + self.shared2) * tokens * tokens


def fit(points: list[tuple[int, int, int]]) -> SavedModel:
    """Fit of ``SavedModel`` to ``(batch, tokens, saved_bytes)`` probes: one token count fits the linear term alone;
    two also fit the per-sample ``N²`` term; a second batch size at the largest token count splits the ``N²`` term
    into per-sample and shared parts. Terms are non-negative (non-negative least squares)."""
    import numpy as np
    from scipy.optimize import nnls

    tokens = {n for _, n, _ in points}
    batches_at_max = {b for b, n, _ in points if n == max(tokens)}
    columns = [lambda b, n: b * n]
    if len(tokens) > 1:
        columns.append(lambda b, n: b * n * n)
        if len(batches_at_max) > 1:
            columns.append(lambda b, n: n * n)
    a = np.array([[col(b, n) for col in columns] for b, n, _ in points], dtype=float)
    y = np.array([v for *_, v in points], dtype=float)
    scale = a.max(axis=0)
    coef, _ = nnls(a / scale, y)
    coef = list(coef / scale) + [0.0] * (3 - len(columns))
    return SavedModel(per_token=float(coef[0]), per_token2=float(coef[1]), shared2=float(coef[2]))


def relative_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured


def state_bytes(params: int, trainable: int | None = None, *, teacher_copy: bool = False) -> dict[str, int]:
    """Training-state bytes from parameter counts (fp32 weights, gradients, AdamW, EMA of the trainable ones), plus
    an fp32 frozen teacher when one stays resident."""
    trainable = params if trainable is None else trainable
    out = {"weights": params * STATE_BYTES_PER_PARAM["weights"],
           "grads": trainable * STATE_BYTES_PER_PARAM["grads"],
           "adamw": trainable * STATE_BYTES_PER_PARAM["adamw"],
           "ema": trainable * STATE_BYTES_PER_PARAM["ema"]}
    if teacher_copy:
        out["teacher"] = params * STATE_BYTES_PER_PARAM["weights"]
    return out
