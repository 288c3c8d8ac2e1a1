"""The diffusion process shared by teacher training, stage 2 and capture: diffusers' DDPM schedule + the DiT loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from graft_core.presets import TeacherConfig


def make_train_scheduler(cfg: TeacherConfig) -> DDPMScheduler:
    """The 1000-step linear-β DDPM schedule that DiT was trained with (learned-range variance if sigma is learned)."""
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=1e-4,
        beta_end=0.02,
        variance_type="learned_range" if cfg.learns_sigma else "fixed_small",
        clip_sample=False,
        prediction_type="epsilon",
    )


def null_class_id(model) -> int:
    """The class id that means 'no label' (classifier-free guidance): ``num_embeds_ada_norm`` (1000 for DiT-XL/2)."""
    return int(model.config.num_embeds_ada_norm)


def drop_labels(labels: torch.Tensor, null_id: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by ``null_id`` with probability ``p`` (done once per batch, not per block as diffusers does)."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_id), labels)


def disable_builtin_label_dropout(model) -> None:
    """diffusers' DiT drops labels with p=0.1 in train mode in *every block independently*; we drop once ourselves."""
    for module in model.modules():
        if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
            module.dropout_prob = 0.0


def model_output(model, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return model(x_t, timestep=t, class_labels=labels, return_dict=False)[0]


def diffusion_loss(model, scheduler: DDPMScheduler, x0: torch.Tensor, labels: torch.Tensor, *,
                   generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """ε-prediction MSE, plus the variational-bound term when the model learns σ (DiT's ``mse + vb``).

    ``t`` and then ε are drawn from ``generator`` unless given: stage 2 draws them once for the global batch and
    passes each rank its share, so that a batch split over ranks is the same batch."""
    b = x0.shape[0]
    if t is None:
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = scheduler.add_noise(x0, noise, t)
    out = model_output(model, x_t, t, labels).float()
    c = x0.shape[1]
    eps = out[:, :c]
    loss = F.mse_loss(eps, noise.float())
    if out.shape[1] == 2 * c:
        loss = loss + vb_term(scheduler, x0.float(), x_t.float(), t, eps.detach(), out[:, c:])
    return loss


def vb_term(scheduler: DDPMScheduler, x0, x_t, t, eps, var_values) -> torch.Tensor:
    """KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) in bits/dim with the mean from the frozen ε (as in ADM/DiT), the
    decoder NLL at t=0 replaced by the same Gaussian KL (a documented simplification: the discretised likelihood
    only matters for likelihood reporting, not for the learned variance's gradient at t>0)."""
    ac = scheduler.alphas_cumprod.to(x0.device, torch.float32)
    betas = scheduler.betas.to(x0.device, torch.float32)
    acp = torch.cat([torch.ones(1, device=x0.device), ac[:-1]])
    post_var_all = betas * (1 - acp) / (1 - ac)
    post_logvar_all = torch.log(torch.cat([post_var_all[1:2], post_var_all[1:]]))  # ADM's "clipped" log-variance
    shape = (-1,) + (1,) * (x0.dim() - 1)
    a_t, a_prev, beta_t = ac[t].view(shape), acp[t].view(shape), betas[t].view(shape)
    post_logvar = post_logvar_all[t].view(shape)
    post_mean = (a_prev.sqrt() * beta_t / (1 - a_t)) * x0 + ((1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
    min_log = post_logvar
    max_log = torch.log(beta_t)
    frac = (var_values + 1) / 2
    model_logvar = frac * max_log + (1 - frac) * min_log
    pred_x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    model_mean = (a_prev.sqrt() * beta_t / (1 - a_t)) * pred_x0 + ((1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
    kl = 0.5 * (-1.0 + model_logvar - post_logvar + torch.exp(post_logvar - model_logvar)
                + (post_mean - model_mean) ** 2 * torch.exp(-model_logvar))
    return kl.mean() / torch.log(torch.tensor(2.0))
