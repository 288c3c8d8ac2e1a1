"""Process-group set-up from the environment (torchrun, submitit on Slurm, or a test's ``mp.spawn``).

Nothing here reads Slurm variables: the launcher (submitit's ``JobEnvironment`` in the driver, ``torchrun``, or a
test) exports ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; with ``WORLD_SIZE`` unset
or 1 everything runs as a single process. Backend: ``nccl`` when CUDA is available, else ``gloo``.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False  # this call created the process group (so ``cleanup`` may destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Ranks as the environment states them (no process group needed)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_from_env(backend: str | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` from the environment when ``WORLD_SIZE > 1`` and no group exists yet."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    info = env_info()
    if info.world_size <= 1:
        return info
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={info.world_size} but {var} is not set; the launcher must export it")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(device_index(info))
    dist.init_process_group(backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size)
    return DistInfo(rank=info.rank, world_size=info.world_size, local_rank=info.local_rank, initialized_here=True)


def device_index(info: DistInfo) -> int:
    """The CUDA device of this task: ``LOCAL_RANK`` when the task sees all the node's GPUs, device 0 when the
    scheduler binds one GPU per task (``CUDA_VISIBLE_DEVICES`` of one device: local rank 3 sees only ``cuda:0``)."""
    return info.local_rank if torch.cuda.device_count() > info.local_rank else 0


def default_device(info: DistInfo) -> torch.device:
    return torch.device(f"cuda:{device_index(info)}") if torch.cuda.is_available() else torch.device("cpu")


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_over_ranks(value: float, info: DistInfo, device: torch.device) -> float:
    """Average of a Python scalar over ranks (for logging the loss of the whole global batch)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / info.world_size


def cleanup(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def shard_slice(global_batch: int, info: DistInfo) -> slice:
    """This rank's contiguous, disjoint part of a global batch (the batch must split evenly)."""
    if global_batch % info.world_size:
        raise ValueError(f"global batch {global_batch} does not split evenly over {info.world_size} ranks")
    per = global_batch // info.world_size
    return slice(info.rank * per, (info.rank + 1) * per)


def free_port() -> int:
    """A TCP port that was free a moment ago (for ``MASTER_PORT`` in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
