"""A model family in one file (the README's example, exercised by ``tests/test_family_plugin.py``): Latte.

Latte (diffusers ``LatteTransformer3DModel``) is a video DiT: spatial ``BasicTransformerBlock``s (self-attention
``attn1``, cross-attention to the caption ``attn2``, MLP ``ff``) interleaved with temporal ones. Its spatial blocks
fit the operators' contract (single-stream self-attention and an MLP), so the suite's operators graft into them
unchanged. Importing this module (``--plugin tests/plugins/latte_family.py``) registers

* the family ``latte``: its runs carry ``latte`` (a ``LatteConfig``) in their body; a teacher at a small random-init
  config, conditioned on class ids through a fixed table of caption states; training data drawn from a fixed
  Gaussian (no dataset to prepare); the metric is agreement with the teacher (the ε-prediction MSE of the model
  against the teacher's on held-out noised clips: 0 for the teacher, no trained classifier needed);
* the target ``latte``: the teacher and Hyena-X in half of the spatial attention layers (stage 1, then stage 2).

A clip of ``num_frames`` frames travels through the engine channel-stacked, ``[B, F·C, H, W]``. A capture stores one
sequence per sample, so the grafted rows use one frame; the conformance test grafts two-frame clips directly.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

from benchmark.dag import CAPTURE_DTYPE, RowPlan, make_node
from benchmark.family import Family, register_family
from benchmark.rows import GraftSpec, Row
from benchmark.step_context import load_model
from benchmark.targets import register_target
from graft_core.config import from_dict, plain
from graft_core.presets import TeacherConfig, get_preset

NAME = "latte"
TITLE = "Latte (video DiT) grafting"


@dataclass(frozen=True)
class LatteConfig:
    """The teacher (random init under ``sizes.seed``: no training), its conditioning and its data; torch-free,
    hashed into run ids. ``sizes`` are one frame's (channels) and the noise schedule."""

    sizes: TeacherConfig = TeacherConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                         out_channels=4, sample_size=8, num_classes=4)
    num_frames: int = 1
    caption_tokens: int = 4  # class id → a fixed random caption of this many tokens
    caption_channels: int = 16
    stage1_pairs: int = 32
    heldout_pairs: int = 16

    def diffusion(self) -> TeacherConfig:
        """The sizes and noise schedule the engine reads (a clip channel-stacked: ``F·C`` channels)."""
        c = self.num_frames * self.sizes.in_channels
        return dataclasses.replace(self.sizes, in_channels=c, out_channels=c)


def build_teacher(cfg: LatteConfig):
    """A ``LatteTransformer3DModel`` at ``cfg`` under ``cfg.sizes.seed``, driven by class ids like a DiT."""
    import torch
    from diffusers import LatteTransformer3DModel
    from torch import nn

    from graft_core.text_to_image.text import ModelConfig

    t = cfg.diffusion()

    class ClassConditionedLatte(nn.Module):
        def __init__(self):
            super().__init__()
            s = cfg.sizes
            self.latte = LatteTransformer3DModel(
                num_attention_heads=s.num_attention_heads, attention_head_dim=s.attention_head_dim,
                in_channels=s.in_channels, out_channels=s.in_channels, num_layers=s.num_layers,
                cross_attention_dim=s.hidden_size, attention_bias=True, sample_size=s.sample_size,
                patch_size=s.patch_size, activation_fn="gelu-approximate", norm_type="ada_norm_single",
                norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=cfg.caption_channels,
                video_length=cfg.num_frames)
            gen = torch.Generator().manual_seed(s.seed + 1)
            self.register_buffer("captions", torch.randn(s.num_classes + 1, cfg.caption_tokens,
                                                         cfg.caption_channels, generator=gen))
            self.config = ModelConfig(num_embeds_ada_norm=s.num_classes, sample_size=s.sample_size,
                                      patch_size=s.patch_size, num_attention_heads=s.num_attention_heads,
                                      attention_head_dim=s.attention_head_dim, in_channels=t.in_channels,
                                      out_channels=t.out_channels, model_type="latte_class_conditioned")

        @property
        def transformer_blocks(self):  # the spatial blocks: the graftable ones
            return self.latte.transformer_blocks

        def forward(self, hidden_states, timestep=None, class_labels=None, return_dict=True):
            b, fc, h, w = hidden_states.shape
            f = cfg.num_frames
            if class_labels is None:
                class_labels = torch.full((b,), t.num_classes, dtype=torch.long, device=hidden_states.device)
            clip = hidden_states.view(b, f, fc // f, h, w).permute(0, 2, 1, 3, 4)
            out = self.latte(clip, timestep=timestep, encoder_hidden_states=self.captions[class_labels.long()].to(
                hidden_states.dtype), return_dict=False)[0]
            out = out.permute(0, 2, 1, 3, 4).reshape(b, fc, h, w)
            return (out,) if not return_dict else {"sample": out}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.sizes.seed)
        return ClassConditionedLatte().eval()


def clips(cfg: LatteConfig, count: int, seed: int):
    """``count`` training clips from the family's fixed Gaussian, with class ids cycling over the classes."""
    import numpy as np
    import torch

    from graft_core.data.sources import Subset

    gen = torch.Generator().manual_seed(seed)
    t = cfg.diffusion()
    x0 = torch.randn(count, t.in_channels, t.sample_size, t.sample_size, generator=gen)
    labels = torch.arange(count) % t.num_classes
    return Subset(x0=x0, labels=labels, indices=np.arange(count), identity=f"latte-gauss-{seed}-{count}")


SPLIT_SEEDS = {"stage1": 1, "heldout": 2}


class LatteFamily(Family):
    name = "latte"
    marker = "latte"
    row_kind = "latte"
    sites = ("attn", "mlp")
    _teachers: dict = {}

    # ------------------------------------------------------------------------------------------------- planning
    def expand(self, target: str, row: Row, add, nodes: list) -> RowPlan:
        p = row.preset
        base = {"preset": p.name, "latte": LatteConfig()}  # one small config for every preset
        teacher = add(make_node("teacher", base, desc="Latte teacher"))
        if row.graft is None:
            return RowPlan(target, row, nodes, add(self.eval_node(base, {"source": "teacher"}, [teacher])))
        self.check_site(row.id, row.graft.site)
        pairs = [[int(layer), row.graft.site] for layer in row.graft.layers]
        caps = {split: add(make_node("capture", {**base, "split": split, "seed": p.stage1.seed,
                                                 "dtype": CAPTURE_DTYPE, "pairs": pairs}, [teacher],
                                     desc=f"capture {split} Latte")) for split in SPLIT_SEEDS}
        s1 = dataclasses.replace(p.stage1, objective=p.stage1.objective_for(row.graft.site),
                                 lr=p.stage1.lr_for(row.graft.site))
        stage1 = [add(make_node("stage1", {**base, "stage1": s1, "site": row.graft.site,
                                           "operator": row.graft.operator, "options": dict(row.graft.options),
                                           "layer": layer, "bf16": p.stage2.bf16,
                                           "inputs": {"capture_train": caps["stage1"].run_id,
                                                      "capture_heldout": caps["heldout"].run_id}},
                                [caps["stage1"], caps["heldout"]], desc=f"stage1 Latte L{layer}"))
                  for layer in row.graft.layers]
        plan = row.graft.plan().to_dict()
        init = {"stage1": {str(n.config["layer"]): n.run_id for n in stage1}}
        s2 = add(make_node("stage2", {**base, "stage2": p.stage2, "plan": plan, "init": init}, [teacher, *stage1],
                           desc=f"stage2 Latte {p.stage2.steps} steps"))
        return RowPlan(target, row, nodes, add(self.eval_node(base, {"source": "stage2", "run": s2.run_id}, [s2])),
                       layers=row.graft.layers)

    @staticmethod
    def eval_node(base: dict, model: dict, deps: list):
        return make_node("eval", {**base, "model": model, "metric": "teacher_agreement"}, deps,
                         desc="eval Latte (agreement with the teacher)")

    def capture_bytes(self, node) -> int:
        from graft_core.stages.capture_size import capture_bytes

        cfg = from_dict(LatteConfig, node.config["latte"])
        count = cfg.stage1_pairs if node.config["split"] == "stage1" else cfg.heldout_pairs
        return capture_bytes(get_preset(node.config["preset"]).replace(teacher=cfg.diffusion()),
                             node.config["pairs"], split_count=count, dtype=node.config["dtype"])

    def cost(self, node, gpu: bool) -> tuple[float, int]:
        return 0.0, 0  # seconds on a CPU

    def model_dims(self, config: dict) -> tuple[int, int, int]:
        """A clip's tokens are every frame's patches (spatial and temporal blocks alternate over them)."""
        from benchmark.resources import transformer_dims

        width, tokens, layers = transformer_dims(config["latte"]["sizes"])
        return width, tokens * config["latte"]["num_frames"], layers

    # ------------------------------------------------------------------------------------------------- job side
    def config(self, ctx) -> LatteConfig:
        return from_dict(LatteConfig, ctx.config["latte"])

    def teacher(self, ctx, *, train_if_missing: bool = False):
        from benchmark.step_context import job_device
        from graft_core.config import stable_hash

        cfg = self.config(ctx)
        key = stable_hash(cfg)
        if key not in self._teachers:
            self._teachers[key] = build_teacher(cfg).to(job_device())
        return self._teachers[key]

    def teacher_record(self, ctx) -> dict:
        from graft_core.grafting.accounting import count_params

        return {"latte": dataclasses.asdict(self.config(ctx)), "num_params": count_params(self.teacher(ctx))}

    def engine_preset(self, ctx, teacher):
        return ctx.preset().replace(teacher=self.config(ctx).diffusion())

    def sizes(self, ctx):
        return self.config(ctx).diffusion()

    def capture_data(self, ctx, teacher):
        cfg, split = self.config(ctx), ctx.config["split"]
        return clips(cfg, cfg.stage1_pairs if split == "stage1" else cfg.heldout_pairs, SPLIT_SEEDS[split])

    def stage2_data(self, ctx):
        data = clips(self.config(ctx), self.config(ctx).stage1_pairs, SPLIT_SEEDS["stage1"])
        return data.x0, data.labels, data.indices

    def build_student(self, teacher, plan: dict | None, dirs):
        import copy

        from graft_core.stages.distill import assemble
        from graft_core.grafting.plan import GraftPlan

        if plan is None:
            return copy.deepcopy(teacher).eval()
        return assemble(teacher, GraftPlan.from_dict(plan), dirs).to(next(teacher.parameters()).device)

    def evaluate(self, ctx) -> dict:
        """ε-prediction MSE against the teacher on the held-out clips at timesteps spread over the schedule."""
        import torch

        from graft_core.models.diffusion import make_train_scheduler, model_output

        cfg = self.config(ctx)
        teacher = self.teacher(ctx)
        model, _ = load_model(ctx, ctx.config["model"])
        data = clips(cfg, cfg.heldout_pairs, SPLIT_SEEDS["heldout"])
        gen = torch.Generator().manual_seed(cfg.sizes.seed + 7)
        t = torch.randint(0, cfg.diffusion().num_train_timesteps, (len(data.labels),), generator=gen)
        x_t = make_train_scheduler(cfg.diffusion()).add_noise(data.x0, torch.randn(data.x0.shape, generator=gen), t)
        device = next(teacher.parameters()).device
        with torch.inference_mode():
            args = (x_t.to(device), t.to(device), data.labels.to(device))
            mse = float((model_output(model, *args) - model_output(teacher, *args)).pow(2).mean())
        return plain({"metrics": {"teacher_mse": mse}, "model": ctx.config["model"]})


register_family(LatteFamily)


def rows(preset_name: str) -> list[Row]:
    p = get_preset(preset_name)
    common = {"preset": p, "kind": NAME}
    layers = tuple(range(0, LatteConfig().sizes.num_layers, 2))
    return [Row(id="baseline", label="Latte (teacher)", group="Baseline", finetune=False, **common),
            Row(id="attn-hyena_x-interleaved50", label="Latte + Hyena-X (50 % of MHA layers)", group="MHA grafting",
                graft=GraftSpec(site="attn", operator="hyena_x", strategy="interleaved50", layers=layers), ratio=50,
                name="hyena_x", **common)]


register_target(sys.modules[__name__])
