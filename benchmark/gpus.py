"""The GPUs of this machine for local jobs, and the one-line stop of a job that asked for a GPU and sees none.

submitit's local executor exports ``CUDA_VISIBLE_DEVICES`` from its ``gpus_per_node`` / ``visible_gpus`` parameters
("" when none are given, which hides every GPU). ``GpuPool`` hands each concurrently running local job its own
indices, so two jobs never share a GPU; a Slurm job gets its GPUs from Slurm instead. Nothing here counts GPUs by
initialising CUDA in the launcher: ``CUDA_VISIBLE_DEVICES`` when set, else ``torch.cuda.device_count()`` (NVML).
"""
from __future__ import annotations

import os


def detected_gpus() -> list[int]:
    """Indices of the GPUs local jobs may use: those ``CUDA_VISIBLE_DEVICES`` lists (when it is set and numeric),
    else ``0 .. device_count-1``."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        items = [s.strip() for s in listed.split(",") if s.strip()]
        if all(s.isdigit() for s in items):
            return [int(s) for s in items]
    import torch

    return list(range(torch.cuda.device_count()))


class GpuPool:
    """Free GPU indices of this machine; ``take`` gives ``n`` of them to one job (None: not enough free now)."""

    def __init__(self, gpus: list[int]):
        self.all = list(gpus)
        self.free = list(gpus)

    def take(self, n: int) -> list[int] | None:
        if n <= 0:
            return []
        if len(self.free) < n:
            return None
        taken, self.free = self.free[:n], self.free[n:]
        return taken

    def give(self, gpus: list[int]) -> None:
        self.free = sorted(set(self.free) | set(gpus))


def no_gpu_line(kind: str, asked: int) -> str | None:
    """The one line that stops a job of ``kind`` whose profile asked for ``asked`` GPUs and that sees none
    (None: it sees one, or asked for none). Without it the step would run on the CPU without a word."""
    if asked <= 0:
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return (f"{kind}: the profile asked for {asked} GPU{'s' if asked != 1 else ''} but this job sees none "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); run it on a GPU node, or pass "
            f"--slurm {kind}.gpus_per_node=0 (or --profile cpu) to run it on the CPU on purpose")
