"""The held-out diffusion loss that the layer searches (``graft_core.grafting.selection``) compare candidate grafts by.

One fixed batch per (preset, ``ProbeConfig``): held-out images (a seeded draw from the held-out subset that stage 1
validates on), each at ``timesteps`` stratified timesteps, with fixed noise — so every candidate is scored on the same
noise, timesteps and labels, and a difference between two candidates is the operators', not sampling noise. The loss
is the training objective (``graft_core.models.diffusion.diffusion_loss``: ε-MSE, + the VB term when σ is learned) without
label dropout.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from graft_core.models.diffusion import diffusion_loss, make_train_scheduler
from graft_core.presets import Preset


@dataclass(frozen=True)
class ProbeConfig:
    num_samples: int = 80  # held-out images (at most the held-out subset)
    timesteps: int = 4  # stratified timesteps per image (bucket j of T draws t in [j·1000/T, (j+1)·1000/T))
    seed: int = 0
    batch_size: int = 80  # forward batch (memory only: the loss does not depend on it)


def probe_batch(preset: Preset, cfg: ProbeConfig) -> dict[str, torch.Tensor]:
    """The fixed batch: ``x0``, ``labels``, ``t``, ``noise`` (CPU tensors, ``num_samples × timesteps`` rows)."""
    from graft_core.data.sources import source_of

    sub = source_of(preset).subset(preset, "heldout")
    gen = torch.Generator().manual_seed(cfg.seed)
    n = min(cfg.num_samples, len(sub.x0))
    idx = torch.randperm(len(sub.x0), generator=gen)[:n].sort().values
    reps = cfg.timesteps
    x0 = sub.x0[idx].float().repeat_interleave(reps, 0)
    labels = sub.labels[idx].long().repeat_interleave(reps, 0)
    total = preset.teacher.num_train_timesteps
    bucket = torch.arange(n * reps) % reps
    t = ((bucket + torch.rand(n * reps, generator=gen)) * total / reps).long().clamp_(0, total - 1)
    noise = torch.randn(x0.shape, generator=gen)
    return {"x0": x0, "labels": labels, "t": t, "noise": noise}


@torch.no_grad()
def probe_loss(model, preset: Preset, batch: dict[str, torch.Tensor], *, batch_size: int,
               device: torch.device | str = "cpu") -> float:
    """Mean diffusion loss of ``model`` over the fixed ``batch`` (chunks weighted by their size)."""
    scheduler = make_train_scheduler(preset.teacher)
    model = model.to(device).eval()
    n = len(batch["x0"])
    total = 0.0
    for i in range(0, n, batch_size):
        part = {k: v[i:i + batch_size].to(device) for k, v in batch.items()}
        loss = diffusion_loss(model, scheduler, part["x0"], part["labels"], t=part["t"], noise=part["noise"])
        total += float(loss) * len(part["x0"])
    return total / n
