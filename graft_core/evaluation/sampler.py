"""Class-conditional sampling with classifier-free guidance over any model with the DiT interface.

Why not ``diffusers.DiTPipeline``: it hard-codes the null class 1000 (the tiny teacher has 10 classes) and always
decodes with a VAE. This loop uses diffusers' schedulers directly, takes the null id from the model config, guides only
the ε half of a learned-σ output (as DiT's ``forward_with_cfg``), and runs the grafted models unchanged.
"""
from __future__ import annotations

import contextlib

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from tqdm.auto import tqdm

from graft_core.models.diffusion import null_class_id
from graft_core.presets import TeacherConfig

# "dpm": DPM-Solver++(2M), the second-order multistep solver (Lu et al. 2022), with trailing timestep spacing and a
# first-order last step: at 5–6 steps it matches DDIM 10's quality on the tiny teacher (benchmarks/levers.py) at about
# half the model calls.
SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}


def make_sampling_scheduler(name: str, cfg: TeacherConfig):
    """A diffusers scheduler with the teacher's training schedule (1000-step linear β)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    kwargs = dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule, beta_start=1e-4,
                  beta_end=0.02, clip_sample=False, prediction_type="epsilon")
    if name == "ddpm":
        kwargs["variance_type"] = "learned_range" if cfg.learns_sigma else "fixed_small"
    elif name == "dpm":
        kwargs.pop("clip_sample")
        kwargs.update(algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
                      lower_order_final=True, final_sigmas_type="zero")
    else:
        kwargs["set_alpha_to_one"] = False
    return SCHEDULERS[name](**kwargs)


def adm_timesteps(steps: int, num_train_timesteps: int) -> list[int]:
    """ADM/DiT respacing (``space_timesteps(T, str(steps))``): round(i·(T−1)/(steps−1)), descending.

    diffusers' own DDPM spacing gives 996, 992, …, 0 for 250 of 1000; the paper's protocol uses 999, 995, …, 0.
    """
    if steps == 1:
        return [num_train_timesteps - 1]
    stride = (num_train_timesteps - 1) / (steps - 1)
    return sorted({round(i * stride) for i in range(steps)}, reverse=True)


def make_labels(num_samples: int, num_classes: int, mode: str, seed: int) -> torch.Tensor:
    """``balanced``: equal count per class (cycled); ``uniform``: i.i.d. uniform labels as the ADM/DiT protocol."""
    if mode == "balanced":
        return torch.arange(num_samples) % num_classes
    if mode == "uniform":
        return torch.randint(0, num_classes, (num_samples,), generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"unknown label mode {mode!r}; choose 'balanced' or 'uniform'")


def guided_output(model, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, null_id: int,
                  guidance_scale: float, channels: int) -> torch.Tensor:
    """One CFG forward: cond and uncond in one batch; guidance on the first ``channels``, the rest from cond.

    DiT's ``forward_with_cfg`` (used for every published DiT/grafting FID) guides only the first 3 of the 4 latent ε
    channels "for exact reproducibility reasons"; pass ``channels=3`` to match it, ``in_channels`` for standard CFG.
    """
    if guidance_scale == 1.0:
        return model(x, timestep=t, class_labels=labels, return_dict=False)[0]
    xx = torch.cat([x, x])
    tt = torch.cat([t, t])
    yy = torch.cat([labels, torch.full_like(labels, null_id)])
    out = model(xx, timestep=tt, class_labels=yy, return_dict=False)[0]
    cond, uncond = out.chunk(2)
    if channels >= out.shape[1]:  # standard CFG on every channel: no slicing and re-concatenation
        return torch.lerp(uncond, cond, guidance_scale)
    eps = torch.lerp(uncond[:, :channels], cond[:, :channels], guidance_scale)
    return torch.cat([eps, cond[:, channels:]], dim=1)


def precision(bf16: bool, device: torch.device | str) -> str:
    """The arithmetic a sampling pass runs in, for its record: ``bf16`` (autocast), ``tf32`` (fp32 tensors, TF32
    matmuls: CUDA with ``allow_tf32``, the official DiT sampler's setting) or ``fp32``. The config's ``bf16`` decides
    it, never the device."""
    if bf16:
        return "bf16"
    on_cuda = torch.device(device).type == "cuda"
    return "tf32" if on_cuda and torch.backends.cuda.matmul.allow_tf32 else "fp32"


@torch.inference_mode()
def sample(model, labels: torch.Tensor, *, teacher: TeacherConfig, scheduler: str = "ddim", steps: int = 10,
           guidance_scale: float = 1.5, seed: int = 0, batch_size: int = 256, bf16: bool = False,
           progress: bool = False, device: torch.device | str | None = None,
           guidance_channels: int | None = None) -> torch.Tensor:
    """Draw one sample per label; returns float32 ``[N, C, H, W]`` in model space ([-1, 1] pixels or latents).

    Deterministic given ``seed`` and ``batch_size``: batch ``i`` draws its noise from ``seed + i``.
    DDPM uses ADM's timestep respacing (``adm_timesteps``); ``guidance_channels`` (default: all ε channels) picks how
    many channels CFG applies to (3 reproduces DiT's ``forward_with_cfg``).
    """
    model = model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    channels = teacher.in_channels
    cfg_channels = guidance_channels or channels
    size = teacher.sample_size
    null_id = null_class_id(model)
    sched = make_sampling_scheduler(scheduler, teacher)
    outs = []
    batches = list(torch.split(torch.as_tensor(labels, dtype=torch.long), batch_size))
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())
    for i, y in enumerate(tqdm(batches, desc="sampling", disable=not progress)):
        gen = torch.Generator(device="cpu").manual_seed(seed + i)
        y = y.to(device)
        x = torch.randn((len(y), channels, size, size), generator=gen).to(device)
        if scheduler == "ddpm":
            sched.set_timesteps(timesteps=adm_timesteps(steps, teacher.num_train_timesteps))
        else:
            sched.set_timesteps(steps)
        for t in sched.timesteps:
            tt = torch.full((len(y),), int(t), device=device, dtype=torch.long)
            with autocast:
                out = guided_output(model, x, tt, y, null_id, guidance_scale, cfg_channels).float()
            if scheduler != "ddpm":  # DDIM / DPM-Solver take ε only; DDPM's learned range reads the σ half
                out = out[:, :channels]
            x = sched.step(out, t, x, generator=gen).prev_sample
        outs.append(x.float().cpu())
    return torch.cat(outs)

