"""Wall-clock latency of forward passes, measured so that load changes on a shared machine hit every model alike."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.inference_mode()
def interleaved_latency(fns: dict[str, Callable[[], object]], *, repeats: int = 30, warmup: int = 3) -> dict:
    """Wall-clock seconds of each zero-argument callable, measured round-robin (so load changes hit all alike; CUDA
    work is synchronised before each clock read): ``{name: {"min": s, "median": s}}``."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - start)
    return {name: {"min": min(v), "median": statistics.median(v)} for name, v in times.items()}
