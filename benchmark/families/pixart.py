"""The PixArt-Σ family (Table 5): text-to-image grafting of a PixArt transformer driven by prompt ids.

Its runs carry ``pixart`` (the teacher's ``PixArtConfig``) in their body. Its rows (kind ``t2i``, the experiment's
settings in ``row.t2i``: ``benchmark.targets.table5.T2IConfig``) expand into the teacher, its synthetic pairs (a
sampling array: this family's prerequisite nodes), one online stage 1 of every grafted layer (``stage1_online``: one
teacher forward per batch of a range of the pairs feeds every layer's operator; no capture), LoRA stage 2, the
evaluation (prompt accuracy on tiny, GenEval on paper) and latency. Job side: sizes (width, tokens) are read from the
teacher itself, so the paper's checkpoint and the rehearsal's reduced-width fake run the same code; the engine sees the
teacher through ``graft_core.text_to_image.pixart.diffusion_of`` (prompts as class ids).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

from benchmark.cost import CPU_S, PAPER_GPU_H
from benchmark.dag import Node, RowPlan, make_node
from benchmark.family import Family, register_family
from benchmark.preflight import hub_config, prerequisite
from benchmark.step_context import StepContext, job_device, load_model, preset_from_config
from graft_core.config import from_dict, plain, stable_hash
from graft_core.presets import Preset
from graft_core.models.structure import hub_file as _hub_file

_TEACHERS: dict[str, Any] = {}
# above this many tokens stage 2 recomputes block activations unless the profile says otherwise (PixArt-Σ 2K: 16,384
# tokens × 28 blocks of activations per image would not fit a GPU at any useful batch)
CHECKPOINT_TOKENS = 1024
# Cost: from the DiT figures scaled by compute per sample, our arithmetic: a block costs ∝ N·(24·D² + 4·N·D) FLOPs at
# N tokens and width D (linear layers + attention), so PixArt-Σ 2K (N = 16,384, D = 1152) is ~208× DiT-XL/2 (N = 256)
# per sample, and a Hyena-X operator (linear in N) 64×. The paper gives none of these costs (UNKNOWN); GenEval draws
# 553 prompts × 4 images.
GENEVAL_PROMPTS = 553
GENEVAL_IMAGES = GENEVAL_PROMPTS * 4
DIT_TOKENS, DIT_WIDTH = 256, 1152


def pixart_of(config: dict):
    from graft_core.text_to_image.pixart import PixArtConfig

    return from_dict(PixArtConfig, config["pixart"])


class RowNodes:
    """The nodes of one ``t2i`` row. Every body carries ``pixart``, ``data`` and ``num_prompts`` (the paper teacher
    is driven by the first that many prompts of the prompt file)."""

    def __init__(self, row):
        from graft_core.text_to_image.pixart import pixart_config  # imports torch: only when a t2i row is planned

        self.row, self.p, self.cfg = row, row.preset, row.t2i
        self.pix = pixart_config(self.p)
        self.family = {"preset": self.p.name, "pixart": self.pix, "data": self.p.data,
                       "num_prompts": self.cfg.synthetic_pairs}
        e = self.p.eval
        self.sampler = {"scheduler": self.cfg.scheduler or e.scheduler, "steps": self.cfg.steps or e.steps,
                        "guidance_scale": e.guidance_scale if self.cfg.guidance_scale is None
                        else self.cfg.guidance_scale}

    def node(self, kind: str, body: dict, deps=(), desc: str = "") -> Node:
        return make_node(kind, {**self.family, **body}, deps, desc=desc)

    def encode(self, prompts: str) -> list[Node]:
        """The T5 states of a prompt set (``train``: the first ``num_prompts`` of the prompt file; ``geneval``:
        GenEval's prompts) as an encoding array on GPUs, task ``i`` the shards ``s ≡ i (mod tasks)`` (a requeued task
        skips finished shards); the steps that read the states only look them up. Only a T5-driven (pretrained)
        teacher has them: tiny's offline text encoder needs none, so its plan and run ids are unchanged."""
        if not self.pix.pretrained:
            return []
        c = self.cfg
        body = {"encode": {"prompts": prompts, "max_tokens": self.pix.max_tokens, "shard_size": c.encode_shard,
                           "batch_size": c.encode_batch}, "tasks": c.encode_tasks}
        return [self.node("encode", {**body, "task": i},
                          desc=f"T5 states of the {prompts} prompts (task {i + 1}/{c.encode_tasks})")
                for i in range(c.encode_tasks)]

    def teacher(self) -> Node:
        return self.node("teacher", {}, self.encode("train"), desc="PixArt teacher")

    def synthetic(self) -> list[Node]:
        """The teacher's synthetic pairs as a sampling array: task ``i`` draws the shards ``s ≡ i (mod tasks)``."""
        c, e = self.cfg, self.p.eval
        body = {"synthetic": {"num_pairs": c.synthetic_pairs, "shard_size": c.synthetic_shard,
                              "seed": self.p.stage1.seed + 1_000_003, **self.sampler, "batch_size": e.batch_size,
                              "bf16": e.bf16, "clamp": self.pix.pretrained is None}, "tasks": c.synthetic_tasks}
        return [self.node("synthetic", {**body, "task": i}, [self.teacher()],
                          desc=f"synthetic pairs (task {i + 1}/{c.synthetic_tasks} of {c.synthetic_pairs})")
                for i in range(c.synthetic_tasks)]

    def stage1_online(self, synthetic: list[Node]) -> Node:
        """Stage 1 of every grafted layer in one run, fed by one teacher forward per batch of the first
        ``stage1_pairs`` synthetic pairs (the rest held out), noised as a capture would; no capture is stored (at
        PixArt-Σ 2K one layer's would be ~604 GB)."""
        graft, s1 = self.row.graft, self.p.stage1
        s1 = dataclasses.replace(s1, objective=s1.objective_for("attn"), lr=s1.lr_for("attn"))
        n1, n = self.cfg.stage1_pairs, self.cfg.synthetic_pairs
        body = {"stage1": s1, "plan": graft.plan().to_dict(), "bf16": self.p.stage2.bf16, "seed": self.p.stage1.seed,
                "synthetic": [s.run_id for s in synthetic], "num_pairs": n,
                "ranges": {"stage1": [0, n1], "heldout": [n1, n]}}
        if s1.capture_input != "noised":
            body["capture_input"] = s1.capture_input
        return self.node("stage1_online", body, [self.teacher(), *synthetic],
                         desc=f"stage1 online PixArt attn:{graft.operator} {len(graft.layers)} layers "
                              f"{s1.objective} {s1.epochs}ep (pairs 0..{n1 - 1}, held out {n1}..{n - 1})")

    def stage2(self, plan: dict | None, init, synthetic: list[Node], deps: list[Node]) -> Node:
        s2 = self.p.stage2
        body = {"stage2": s2, "plan": plan, "init": init,
                "synthetic": {"runs": [n.run_id for n in synthetic], "num_pairs": self.cfg.synthetic_pairs}}
        what = "teacher" if plan is None else f"{plan['operator']} in {len(plan['layers'])} layers"
        return self.node("stage2", body, [self.teacher(), *synthetic, *deps],
                         desc=f"stage2 PixArt {what}, LoRA r={s2.lora_rank}, {s2.steps} steps")

    def geneval_samples(self, model: dict, deps: list[Node]) -> list[Node]:
        """GenEval's images of ``model`` as a sampling array (task ``i`` the prompt shards ``s ≡ i (mod tasks)``,
        resumable), after the T5 states of GenEval's prompts."""
        c = self.cfg
        body = {"eval": self.p.eval, "t2i": {**self.sampler, "protocol": "geneval"}, "model": model,
                "geneval": {"shard_size": c.geneval_shard}, "tasks": c.geneval_tasks}
        return [self.node("sample", {**body, "task": i}, [self.teacher(), *deps, *self.encode("geneval")],
                          desc=f"GenEval images (task {i + 1}/{c.geneval_tasks})") for i in range(c.geneval_tasks)]

    def evaluate(self, model: dict, deps: list[Node], what: str) -> list[Node]:
        """The eval node last, after the nodes it needs (paper: GenEval's encoding and sampling arrays)."""
        protocol = "geneval" if self.pix.pretrained else "prompt_accuracy"
        body = {"classifier": self.p.classifier, "eval": self.p.eval, "t2i": {**self.sampler, "protocol": protocol},
                "model": model}
        before: list[Node] = []
        if protocol == "geneval":
            samples = self.geneval_samples(model, deps)
            before = [*self.encode("geneval"), *samples]
            body["samples"], deps = [n.run_id for n in samples], samples
        return [*before, self.node("eval", body, [self.teacher(), *deps], desc=f"eval PixArt {what} ({protocol})")]

    def latency(self, model: dict, deps: list[Node]) -> Node:
        c = self.cfg
        body = {"model": model, "latency": {"batch": c.speed_batch, "repeats": c.speed_repeats,
                                            "long_tokens": c.long_tokens}}
        return self.node("latency", body, [self.teacher(), *deps],
                         desc=f"latency PixArt (batch {c.speed_batch}, {c.speed_repeats} repeats)")


class PixArtFamily(Family):
    name = "pixart"
    marker = "pixart"
    row_kind = "t2i"
    sites = ("attn", "mlp")
    prerequisite_prefix = "t2i:"

    # ------------------------------------------------------------------------------------------------- planning
    def expand(self, target: str, row, add, nodes: list[Node]) -> RowPlan:
        if row.graft is not None:
            self.check_site(row.id, row.graft.site)
        r = RowNodes(row)
        add(*r.encode("train"), r.teacher())

        def evaluate(model: dict, deps: list[Node], what: str) -> Node:
            return add(*r.evaluate(model, deps, what))

        if row.graft is None:
            if not row.finetune:  # the baseline
                return RowPlan(target, row, nodes, evaluate({"source": "teacher"}, [], "teacher"))
            synthetic = [add(n) for n in r.synthetic()]
            s2 = add(r.stage2(None, None, synthetic, []))
            final = evaluate({"source": "stage2", "run": s2.run_id}, [s2], "teacher + LoRA stage 2")
            return RowPlan(target, row, nodes, final)
        synthetic = [add(n) for n in r.synthetic()]
        s1 = add(r.stage1_online(synthetic))
        plan = row.graft.plan().to_dict()
        init = {"stage1_online": s1.run_id, "layers": list(row.graft.layers)}
        if not row.finetune:
            model = {"source": "assembled", "plan": plan, "init": init}
            return RowPlan(target, row, nodes, evaluate(model, [s1], "grafted (stage 1 only)"),
                           layers=row.graft.layers)
        s2 = add(r.stage2(plan, init, synthetic, [s1]))
        model = {"source": "stage2", "run": s2.run_id}
        final = evaluate(model, [s2], "grafted + LoRA stage 2")
        latency = add(r.latency(model, [s2]))
        return RowPlan(target, row, nodes, final, layers=row.graft.layers, extras=(latency,))

    def capture_bytes(self, node: Node) -> int:
        """The PixArt teacher's sizes, the synthetic pairs of the capture's range."""
        from graft_core.stages.capture_size import capture_bytes

        c = node.config
        p = preset_from_config(c).replace(teacher=pixart_of(c).diffusion())
        return capture_bytes(p, c["pairs"], split_count=c["range"][1] - c["range"][0], dtype=c["dtype"])

    def teacher_present(self, config: dict) -> bool:
        """The tiny PixArt teacher is shipped or cached (a pretrained one is assumed downloaded)."""
        from graft_core.text_to_image.pixart import WEIGHTS_FILE, pixart_dirs, pixart_key
        from graft_core.presets import DataConfig

        pix = pixart_of(config)
        if pix.pretrained:
            return True
        key = pixart_key(pix, from_dict(DataConfig, config["data"]))
        return any((d / WEIGHTS_FILE).exists() for d in pixart_dirs(key))

    def train_steps(self, config: dict) -> int:
        return config["pixart"]["train_steps"]

    # ------------------------------------------------------------------------------------------------- resources
    block_probe, params_key, published_params = "pixart_block", "pixart_sigma", 611_000_000  # PixArt-Σ
    resource_constants = {
        "t5_params": 4.7e9,  # T5-XXL encoder (assumed)
        "t5_width": 4096,  # its d_model: the stored states' channels (assumed)
        "t5_working_widths": 16,  # live activations of a T5-XXL encoder layer per token, in units of d_model (d_ff
        # 10,240 = 2.5 d_model, gated: ~5; attention 64 heads × 300 keys per token: ~5; residual, norms) (assumed)
        "t2i_eval_batch": 4,  # GenEval images generated at once: one prompt's four (×2 with CFG) (assumed)
        "vae_decode_gb_per_mpixel": 6.0,  # SD-XL VAE decode of one image in fp32, per megapixel (assumed)
        "geneval_gpu_gb": 8.0,  # GenEval's Mask2Former + CLIP ViT-L/14 evaluator process (assumed)
        "geneval_s_per_image": 0.5,  # its seconds per image on one GPU (assumed)
        "png_mb_per_mpixel": 1.5,  # a generated RGB image saved as PNG, per megapixel (assumed)
    }

    def model_dims(self, config: dict) -> tuple[int, int, int]:
        from benchmark.resources import transformer_dims

        return transformer_dims(config["pixart"])

    def _encode_rows(self, config: dict) -> int:
        """Rows of an encode task's share: its prompt set (+ the empty caption) over the tasks."""
        e = config["encode"]
        rows = GENEVAL_PROMPTS if e["prompts"] == "geneval" else config.get("num_prompts", 0)
        return -(-(rows + 1) // max(1, config["tasks"]))

    def _t5_hours(self, config: dict, gpus: int, cpus: int) -> float:
        """T5-XXL forward FLOPs (2 per parameter per token) of an encode task's rows at ``max_tokens``, at the assumed
        throughput of its GPUs (or CPU cores), plus reading the checkpoint (fp32 on disk)."""
        from benchmark.resources import ASSUMED

        t5 = self.resource_constants["t5_params"]
        flops = 2 * t5 * config["encode"]["max_tokens"] * self._encode_rows(config)
        rate = ASSUMED["gpu_tflops"] * 1e12 * gpus if gpus else ASSUMED["cpu_gflops_per_core"] * 1e9 * max(1, cpus)
        return (flops / rate + 4 * t5 / (ASSUMED["read_gb_per_s"] * 1e9)) / 3600

    def _image_mpixel(self, config: dict) -> float:
        side = config["pixart"]["sample_size"] * 8  # the SD-XL VAE's 8× upsampling
        return side * side / 1e6

    def step_resources(self, kind: str, config: dict, gpus: int, cpus: int) -> dict:
        """The encode steps run T5-XXL in bf16 (``graft_core.text_to_image.pixart.load_t5``; host: the fp32 checkpoint
        is read and cast); GenEval's sampling tasks generate one prompt's ``t2i_eval_batch`` images at once with
        classifier-free guidance and decode them one at a time; its eval step runs GenEval's evaluator only."""
        from benchmark.resources import ASSUMED, GB, inference_gb

        k = self.resource_constants
        if kind == "encode":
            e = config["encode"]
            act = e["batch_size"] * e["max_tokens"] * k["t5_width"] * k["t5_working_widths"] * 2
            rows = self._encode_rows(config)
            return {"gpu_mem": (2 * k["t5_params"] + act) / GB + ASSUMED["cuda_context_gb"] if gpus else 0.0,
                    # the fp32 checkpoint read and cast, one shard's states twice (array + its .npy bytes)
                    "mem": (4 * k["t5_params"] + 2 * min(rows, e["shard_size"]) * e["max_tokens"] * k["t5_width"] * 2)
                    / GB,
                    "hours": self._t5_hours(config, gpus, cpus),
                    "disk": rows * e["max_tokens"] * k["t5_width"] * 2 / GB}
        if kind == "sample":
            images = GENEVAL_IMAGES / max(1, config["tasks"])
            return {"gpu_mem": inference_gb(config, k["t2i_eval_batch"] * 2)
                    + k["vae_decode_gb_per_mpixel"] * self._image_mpixel(config),
                    "disk": images * k["png_mb_per_mpixel"] * self._image_mpixel(config) / 1e3}
        if kind == "eval":
            if "samples" in config:
                return {"gpu_mem": k["geneval_gpu_gb"], "hours": GENEVAL_IMAGES * k["geneval_s_per_image"] / 3600}
            return {"gpu_mem": inference_gb(config, k["t2i_eval_batch"] * 2)}
        return {}

    def summary(self, record: dict) -> dict:
        """Prompt following: geneval_or_acc, per-template accuracy / GenEval tasks, params."""
        return {k: v for k, v in record.items() if k not in ("metrics", "efficiency", "model", "sampling_precision")}

    def cost(self, node: Node, gpu: bool) -> tuple[float, int]:
        """(GPU-h or CPU-min, stage-2 samples) of one run."""
        c, kind, pix = node.config, node.kind, node.config["pixart"]
        n, d = (pix["sample_size"] // pix["patch_size"]) ** 2, pix["num_attention_heads"] * pix["attention_head_dim"]
        model = n * (24 * d * d + 4 * n * d) / (DIT_TOKENS * (24 * DIT_WIDTH ** 2 + 4 * DIT_TOKENS * DIT_WIDTH))
        sampler = c["synthetic"] if kind == "synthetic" else c.get("t2i", {})
        cfg = 2 if sampler.get("guidance_scale", 1.0) != 1.0 else 1
        samples = c["stage2"]["steps"] * c["stage2"]["batch_size"] if kind == "stage2" else 0
        if kind == "synthetic":
            images = c["synthetic"]["num_pairs"] / c["tasks"]
        elif kind == "sample":  # one task of GenEval's sampling array
            images = GENEVAL_IMAGES / c["tasks"]
        elif kind == "eval":  # GenEval: its sampling array drew the images; tiny: sampled here
            images = 0 if "samples" in c else c["eval"]["num_samples"]
        else:
            images = 0
        if kind == "encode":
            return (self._t5_hours(c, 1, 0) if gpu else self._t5_hours(c, 0, 1) * 60), 0
        if gpu:
            per_image_step = PAPER_GPU_H["sample_per_50k_250steps"] / (50_000 * 250) * model
            if kind == "eval" and "samples" in c:
                return GENEVAL_IMAGES * self.resource_constants["geneval_s_per_image"] / 3600, 0
            if kind in ("synthetic", "eval", "sample"):
                return images * sampler["steps"] * per_image_step, 0
            if kind == "stage1_online":
                from benchmark.resources import stage1_online_hours

                return stage1_online_hours(c), 0
            if kind == "stage2":
                return PAPER_GPU_H["stage2_per_50k_x_256"] * model * samples / (50_000 * 256), samples
            return PAPER_GPU_H.get(kind, 0.0), samples
        s = CPU_S["job_overhead"]
        tokens = n / 64
        if kind == "teacher" and not self.teacher_present(c):
            s += pix["train_steps"] * CPU_S["teacher_step_64"] * pix["train_batch_size"] / 64 * tokens
        elif kind in ("synthetic", "eval", "sample"):
            s += images * sampler["steps"] * CPU_S["sample_per_image_step"] * cfg / 2 * tokens
        elif kind == "stage1_online":  # every epoch: a teacher forward of each stage-1 pair + each layer's step
            (lo, hi), (_, end) = c["ranges"]["stage1"], c["ranges"]["heldout"]
            st = c["stage1"]
            steps = st["epochs"] * -(-(hi - lo) // st["batch_size"])
            forwards = st["epochs"] * (hi - lo) + (st["epochs"] // st["eval_every"] + 2) * (end - lo)
            s += (forwards * CPU_S["sample_per_image_step"] / 2 * tokens + len(c["plan"]["layers"]) * steps *
                  CPU_S["stage1_step"] * max(1.0, st["batch_size"] / 64) * tokens)
        elif kind == "stage2":
            s += c["stage2"]["steps"] * CPU_S["stage2_step_64"] * c["stage2"]["batch_size"] / 64 * tokens
        elif kind == "latency":
            s += 2 * CPU_S["latency"]  # also at ``long_tokens``
        return s / 60.0, samples

    # ------------------------------------------------------------------------------------------------- job side
    def teacher(self, ctx: StepContext, *, train_if_missing: bool = False):
        """The run's PixArt teacher on the job's device, loaded once per process (callers copy before changing
        it), built from the run's hashed ``pixart`` config as DiT teachers are from theirs."""
        from graft_core.text_to_image.pixart import load_pixart_teacher

        c = ctx.config
        key = stable_hash({k: c.get(k) for k in ("pixart", "data", "num_prompts")})
        if key not in _TEACHERS:
            device = job_device()
            model = load_pixart_teacher(ctx.preset(), train_if_missing=train_if_missing, progress=ctx.progress,
                                        num_prompts=c.get("num_prompts"), device=device, cfg=pixart_of(c),
                                        encode=False)  # T5 is the encode steps' job: their states are looked up
            _TEACHERS[key] = model.to(device)
        return _TEACHERS[key]

    def teacher_id(self, ctx: StepContext) -> str:
        from graft_core.text_to_image.pixart import pixart_key

        return pixart_key(pixart_of(ctx.config), ctx.preset().data)

    def teacher_record(self, ctx: StepContext) -> dict:
        from graft_core.grafting.accounting import count_params

        teacher = self.teacher(ctx, train_if_missing=True)
        return {"pixart_key": self.teacher_id(ctx), "pretrained": pixart_of(ctx.config).pretrained,
                "num_prompts": teacher.prompts.null_id, "num_params": count_params(teacher)}

    def engine_preset(self, ctx: StepContext, teacher):
        from graft_core.text_to_image.pixart import diffusion_of

        return ctx.preset().replace(teacher=diffusion_of(teacher))

    def sizes(self, ctx: StepContext):
        from graft_core.text_to_image.pixart import diffusion_of

        return diffusion_of(self.teacher(ctx))

    def _synthetic_folders(self, ctx: StepContext, run_ids: list[str]) -> list[Path]:
        for rid in run_ids:
            ctx.dep_metrics("synthetic", rid)  # raises unless that task is done
        return [ctx.dep("synthetic", rid).out for rid in run_ids]

    def stage1_data(self, ctx: StepContext, teacher, split: str):
        """The split's range of the synthetic pairs (``stage1_online``)."""
        from graft_core.text_to_image.pixart import synthetic_subset

        lo, hi = ctx.config["ranges"][split]
        return synthetic_subset(self._synthetic_folders(ctx, ctx.config["synthetic"]), lo, hi,
                                teacher_id=self.teacher_id(ctx))

    def stage2_data(self, ctx: StepContext):
        """All synthetic pairs (LoRA stage 2 of the grafted model or, without a plan, of the teacher: the control)."""
        import numpy as np

        from graft_core.text_to_image.pixart import load_synthetic

        s = ctx.config["synthetic"]
        x0, ids = load_synthetic(self._synthetic_folders(ctx, s["runs"]), s["num_pairs"])
        return x0, ids, np.arange(len(ids))

    def checkpointing(self, ctx: StepContext, teacher) -> bool:
        from graft_core.text_to_image.pixart import diffusion_of

        return diffusion_of(teacher).num_tokens > CHECKPOINT_TOKENS

    def build_student(self, teacher, plan: dict | None, dirs):
        """A copy of the teacher, or the plan grafted into a copy of its transformer (stage-1 operators loaded)."""
        import copy

        if plan is None:
            return copy.deepcopy(teacher).eval()
        from graft_core.stages.distill import assemble
        from graft_core.grafting.plan import GraftPlan
        from graft_core.text_to_image.text import TextConditioned

        device = next(teacher.parameters()).device
        transformer = assemble(teacher.transformer, GraftPlan.from_dict(plan), dirs)
        return TextConditioned(transformer, copy.deepcopy(teacher.prompts)).to(device).eval()

    def evaluate(self, ctx: StepContext) -> dict:
        """Prompt following. Tiny: prompt accuracy + FID on the digits, sampled here. Paper: GenEval's evaluator on
        the images of the run's sampling array (``samples``), gathered into ``out/``; no model is loaded."""
        from graft_core.evaluation.sampler import precision

        c = ctx.config
        if "samples" in c:
            from graft_core.text_to_image.text import geneval_evaluate

            records = [ctx.dep_metrics("sample", rid) for rid in c["samples"]]  # raises unless each task is done
            score = geneval_evaluate([ctx.dep("sample", rid).out for rid in c["samples"]], out_dir=ctx.run.out,
                                     shard_size=records[0]["shard_size"])
            used = sorted({r.get("sampling_precision", "unrecorded") for r in records})
            return plain({"metrics": {}, "geneval_or_acc": score["geneval_overall"], **score, "model": c["model"],
                          "params_m": records[0]["params_m"], "sampling_precision": "/".join(used)})
        from graft_core.grafting.accounting import count_params
        from graft_core.text_to_image.pixart import evaluate_t2i

        model, _ = load_model(ctx, c["model"])
        record = evaluate_t2i(model, ctx.preset(), c["t2i"], progress=ctx.progress)
        used = precision(ctx.preset().eval.bf16, next(model.parameters()).device)
        return plain({**record, "model": c["model"], "params_m": count_params(model) / 1e6, "sampling_precision": used})

    def latency(self, ctx: StepContext) -> dict:
        """Forward latency of teacher and grafted model at the model's tokens and at ``long_tokens``; parameters."""
        from graft_core.grafting.accounting import count_params
        from graft_core.text_to_image.pixart import diffusion_of, measure_speedup

        c = ctx.config
        teacher = self.teacher(ctx)
        model, _ = load_model(ctx, c["model"])
        lat = c["latency"]
        speed = measure_speedup(teacher, model, batch=int(lat["batch"]), repeats=int(lat["repeats"]),
                                long_tokens=lat.get("long_tokens"))
        tokens, long = str(diffusion_of(teacher).num_tokens), str(lat.get("long_tokens"))
        return plain({"speedup": speed[tokens]["speedup"], "latency": speed,
                      "speedup_long": speed[long]["speedup"] if long in speed else None,
                      "long_tokens": lat.get("long_tokens") if long in speed else None,
                      "params_m": count_params(model) / 1e6, "teacher_params_m": count_params(teacher) / 1e6})


def run_synthetic(ctx: StepContext) -> dict:
    """Task ``i`` of the synthetic-pair array: the shards ``s ≡ i (mod tasks)`` (a requeued task skips finished
    shards)."""
    import time

    from graft_core.text_to_image.pixart import synthetic_shards
    from graft_core.evaluation.sampler import precision

    c, s = ctx.config, ctx.config["synthetic"]
    device = job_device()
    start = time.time()
    files = synthetic_shards(FAMILY.teacher(ctx), ctx.run.out, num_pairs=s["num_pairs"], shard_size=s["shard_size"],
                             rank=c["task"], world_size=c["tasks"], seed=s["seed"], scheduler=s["scheduler"],
                             steps=s["steps"], guidance_scale=s["guidance_scale"], batch_size=s["batch_size"],
                             bf16=s["bf16"], device=device, clamp=s["clamp"],
                             progress=ctx.progress)
    return {"task": c["task"], "tasks": c["tasks"], "shards": len(files), "seconds": round(time.time() - start, 2),
            "device": str(device), "sampling_precision": precision(s["bf16"], device)}


def run_encode(ctx: StepContext) -> dict:
    """Task ``i`` of a prompt set's T5 encoding array: the shards ``s ≡ i (mod tasks)`` into the cache entry every
    reader computes the same key for (a requeued task skips finished shards)."""
    import time

    from graft_core.text_to_image.pixart import encode_paper_prompts, training_prompts
    from graft_core.text_to_image.text import geneval_prompts

    c, e = ctx.config, ctx.config["encode"]
    prompts = geneval_prompts() if e["prompts"] == "geneval" else training_prompts(c.get("num_prompts"))
    device = job_device()
    start = time.time()
    report = encode_paper_prompts(prompts, e["max_tokens"], rank=c["task"], world_size=c["tasks"],
                                  shard_size=e["shard_size"], batch_size=e["batch_size"], device=device,
                                  progress=ctx.progress)
    return {"task": c["task"], "tasks": c["tasks"], "prompts": e["prompts"], "num_prompts": len(prompts),
            "key": report["key"], "missing_shards": report["missing"], "device": str(device),
            "seconds": round(time.time() - start, 2)}


def run_geneval_sample(ctx: StepContext) -> dict:
    """Task ``i`` of a model's GenEval sampling array: the prompt shards ``s ≡ i (mod tasks)``, four images each,
    in GenEval's layout under ``out/`` (a requeued task skips finished shards)."""
    import time

    from graft_core.grafting.accounting import count_params
    from graft_core.evaluation.sampler import precision
    from graft_core.text_to_image.pixart import geneval_sampling

    c = ctx.config
    model, _ = load_model(ctx, c["model"])
    device = next(model.parameters()).device
    start = time.time()
    shard = c["geneval"]["shard_size"]
    report = geneval_sampling(model, ctx.preset(), c["t2i"], out_dir=ctx.run.out, max_tokens=pixart_of(c).max_tokens,
                              rank=c["task"], world_size=c["tasks"], shard_size=shard, encode=False,
                              settings={"model": stable_hash(c["model"]), "sampler": c["t2i"],
                                        "bf16": ctx.preset().eval.bf16}, progress=ctx.progress)
    return {"task": c["task"], "tasks": c["tasks"], "shard_size": shard, "sampled": report["sampled"],
            "skipped": report["skipped"], "seconds": round(time.time() - start, 2), "device": str(device),
            "params_m": count_params(model) / 1e6,
            "sampling_precision": precision(ctx.preset().eval.bf16, device)}


PixArtFamily.executors = {"synthetic": run_synthetic, "encode": run_encode, "sample": run_geneval_sample}
FAMILY = PixArtFamily()
register_family(FAMILY)


# ------------------------------------------------------------------------------------------- text to image (Table 5)
# Needed only when a plan has this family's rows and their preset loads PixArt-Σ from the Hub cache (paper, paper-smoke).
# graft_core.text_to_image.pixart / graft_core.text_to_image.text import torch and diffusers: they are imported only then, and no check loads
# weights (configs, file sizes, the sentencepiece model and GenEval's prompt list are read).
# the steps that decode images (VAE: GenEval's sampling array) and score them (GenEval's evaluator)
T2I_EVAL_STEPS = {FAMILY.prerequisite_prefix + "eval", FAMILY.prerequisite_prefix + "sample"}


def _pixart_needed(wanted: set[str] | None = None) -> Callable[[Preset, set[str]], bool]:
    def needed(p: Preset, kinds: set[str]) -> bool:
        t2i = {k for k in kinds if k.startswith(FAMILY.prerequisite_prefix)}
        if wanted is not None:
            t2i &= wanted
        if not t2i:
            return False
        from graft_core.text_to_image.pixart import pixart_config

        try:
            return bool(pixart_config(p).pretrained)
        except ValueError:  # no PixArt teacher for this preset: the plan itself fails, not a prerequisite
            return False
    return needed


def _pixart_hint() -> str:
    from graft_core.text_to_image.pixart import PAPER_PIPELINE, PAPER_TRANSFORMER

    return (f"on a machine with internet run `huggingface-cli download {PAPER_TRANSFORMER}` and `huggingface-cli "
            f"download {PAPER_PIPELINE}` and copy ~/.cache/huggingface here (or set HF_HOME)")


def _weights_problem(repo: str, folder: str, names: tuple[str, ...], fix: str) -> str | None:
    """None when ``folder`` of ``repo`` holds a non-empty weights file of ``names`` — or a ``<name>.index.json`` whose
    every shard is present and non-empty (T5-XXL ships sharded); else one line."""
    for name in names:
        path = _hub_file(repo, f"{folder}/{name}")
        if path is not None and path.stat().st_size > 0:
            return None
        index = _hub_file(repo, f"{folder}/{name}.index.json")
        if index is None:
            continue
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return f"{repo}: {index} is not a readable weights index (corrupt download?); {fix}"
        for shard in shards:
            path = _hub_file(repo, f"{folder}/{shard}")
            if path is None or path.stat().st_size == 0:
                state = "missing" if path is None else "empty"
                return f"{repo}: weights shard {folder}/{shard} of {index.name} is {state} (partial download?); {fix}"
        return None if shards else f"{repo}: {index} lists no weights shards; {fix}"
    return f"{repo}: no weights file in {folder}/ (empty snapshot?); {fix}"


@prerequisite("PixArt-Σ transformer", _pixart_needed())
def check_pixart(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.text_to_image.pixart import pixart_config, pretrained_pixart
    from graft_core.errors import StructureMismatch

    cfg = pixart_config(p)
    config, problem = hub_config(cfg.pretrained, "transformer/config.json")
    if problem:
        return f"PixArt-Σ transformer: {problem}"
    try:
        pretrained_pixart(cfg, config)
    except StructureMismatch as err:
        return str(err)
    except (KeyError, TypeError) as err:
        return (f"{cfg.pretrained}: transformer/config.json lacks {err} (not a PixArt transformer config); "
                f"{_pixart_hint()}")
    return _weights_problem(cfg.pretrained, "transformer", ("diffusion_pytorch_model.safetensors",
                                                            "diffusion_pytorch_model.bin"), _pixart_hint())


@prerequisite("T5 encoder", _pixart_needed())
def check_t5_encoder(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.text_to_image.pixart import PAPER_PIPELINE, pixart_config

    config, problem = hub_config(PAPER_PIPELINE, "text_encoder/config.json")
    if problem:
        return f"T5 encoder: {problem}"
    if config.get("model_type") != "t5" or not isinstance(config.get("d_model"), int):
        return (f"{PAPER_PIPELINE}: text_encoder/config.json is not a T5 config (model_type "
                f"{config.get('model_type')!r}); {_pixart_hint()}")
    transformer = _hub_file(pixart_config(p).pretrained, "transformer/config.json")
    try:
        caption_channels = json.loads(transformer.read_text()).get("caption_channels") if transformer else None
    except (OSError, ValueError, AttributeError):
        caption_channels = None  # reported by the transformer's check
    if caption_channels is not None and caption_channels != config["d_model"]:
        return (f"{PAPER_PIPELINE}: the T5 encoder's d_model {config['d_model']} differs from the PixArt-Σ "
                f"transformer's caption_channels {caption_channels} (another T5?); {_pixart_hint()}")
    return _weights_problem(PAPER_PIPELINE, "text_encoder", ("model.safetensors", "pytorch_model.bin"),
                            _pixart_hint())


@prerequisite("T5 tokenizer packages", _pixart_needed())
def check_tokenizer_packages(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.text_to_image.pixart import missing_tokenizer_packages

    missing = missing_tokenizer_packages()
    if missing:
        return (f"the T5 tokenizer needs {' and '.join(missing)}: run `pip install {' '.join(missing)}` "
                f"(dependencies of graftbench: `pip install -e .` installs them)")
    return None


@prerequisite("T5 tokenizer", _pixart_needed())
def check_t5_tokenizer(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.text_to_image.pixart import PAPER_PIPELINE, missing_tokenizer_packages

    path = _hub_file(PAPER_PIPELINE, "tokenizer/spiece.model")
    if path is None:
        return (f"T5 tokenizer: {PAPER_PIPELINE}: tokenizer/spiece.model is not in the Hugging Face cache; "
                f"{_pixart_hint()}")
    if path.stat().st_size == 0:
        return f"T5 tokenizer: {PAPER_PIPELINE}: {path} is empty (placeholder?); {_pixart_hint()}"
    if not missing_tokenizer_packages():  # else the packages' line says what to install
        import sentencepiece

        try:
            sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as err:
            return (f"T5 tokenizer: {PAPER_PIPELINE}: {path} is not a sentencepiece model ({type(err).__name__}); "
                    f"{_pixart_hint()}")
    return None


@prerequisite("PixArt-Σ VAE", _pixart_needed(T2I_EVAL_STEPS))
def check_pixart_vae(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.text_to_image.pixart import PAPER_PIPELINE, pixart_config

    config, problem = hub_config(PAPER_PIPELINE, "vae/config.json")
    if problem:
        return f"PixArt-Σ VAE: {problem}"
    channels = pixart_config(p).in_channels
    if config.get("latent_channels") != channels or len(config.get("block_out_channels", ())) != 4:
        return (f"{PAPER_PIPELINE}: vae/config.json has latent_channels={config.get('latent_channels')} and "
                f"{len(config.get('block_out_channels', ()))} blocks; PixArt-Σ needs the SD-XL VAE's {channels} "
                f"latent channels and 8× downsampling (4 blocks); {_pixart_hint()}")
    return _weights_problem(PAPER_PIPELINE, "vae", ("diffusion_pytorch_model.safetensors",
                                                    "diffusion_pytorch_model.bin"), _pixart_hint())


@prerequisite("PixArt-Σ prompts", _pixart_needed())
def check_pixart_prompts(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.errors import MissingWeightsError
    from graft_core.text_to_image.text import PROMPTS_ENV, read_prompts

    try:
        prompts = read_prompts()
    except MissingWeightsError as err:
        return str(err)
    except (OSError, UnicodeDecodeError) as err:
        return (f"the PixArt-Σ prompt file ${PROMPTS_ENV}={os.environ.get(PROMPTS_ENV)} is not a readable text file "
                f"({type(err).__name__}): point {PROMPTS_ENV} at a text file with one prompt per line")
    if not prompts:
        return (f"the PixArt-Σ prompt file ${PROMPTS_ENV}={os.environ.get(PROMPTS_ENV)} has no prompt: write one "
                f"prompt per line (they are cycled over the synthetic pairs)")
    return None


@prerequisite("GenEval", _pixart_needed(T2I_EVAL_STEPS))
def check_geneval(p: Preset, kinds: set[str]) -> str | None:
    from graft_core.errors import MissingWeightsError
    from graft_core.text_to_image.text import GENEVAL_DETECTOR_FILE, GENEVAL_PYTHON_ENV, geneval_metadata, geneval_paths

    try:
        root, detector = geneval_paths()
    except MissingWeightsError as err:
        return str(err)
    fix = "copy a complete GenEval checkout (`git clone https://github.com/djghosh13/geneval`)"
    if (detector / GENEVAL_DETECTOR_FILE).stat().st_size == 0:
        return (f"GenEval: the detector weights {detector / GENEVAL_DETECTOR_FILE} are empty (placeholder?): run "
                f"GenEval's `evaluation/download_models.sh <folder>` on a machine with internet and copy the folder")
    try:
        metadata = geneval_metadata(root)
        bad = next((i for i, m in enumerate(metadata) if not isinstance(m, dict)
                    or not isinstance(m.get("prompt"), str) or not isinstance(m.get("tag"), str)), None)
    except (OSError, ValueError) as err:
        return f"GenEval: {root}/prompts/evaluation_metadata.jsonl does not parse ({type(err).__name__}); {fix}"
    if bad is not None:
        return f"GenEval: entry {bad + 1} of {root}/prompts/evaluation_metadata.jsonl has no \"prompt\"/\"tag\"; {fix}"
    if not metadata:
        return f"GenEval: {root}/prompts/evaluation_metadata.jsonl lists no prompt; {fix}"
    python = os.environ.get(GENEVAL_PYTHON_ENV)
    if python and not (Path(python).is_file() and os.access(python, os.X_OK)):
        return (f"GenEval: {GENEVAL_PYTHON_ENV}={python} is not an executable interpreter: point it at the python "
                f"of GenEval's environment (or unset it to use this one)")
    return None


# What GenEval's evaluator (evaluation/evaluate_images.py) needs beyond the checkout and the detector weights, in the
# interpreter that runs it: mmdet 2.x with its Mask2Former config (the evaluator reads
# <mmdet package>/../configs/mask2former/<detector>.py) and open_clip with the ViT-L-14 'openai' weights already in
# its cache (compute nodes are offline). Run with that interpreter; prints one JSON line, loads no weights.
GENEVAL_ENV_PROBE = r"""
import json, os
out = {}
try:
    import mmdet
    out["mmdet"] = str(mmdet.__version__)
    config = os.path.join(os.path.dirname(mmdet.__file__), "..", "configs", "mask2former", CONFIG)
    out["mmdet_config"] = config if os.path.isfile(config) else None
except Exception as err:
    out["mmdet_error"] = f"{type(err).__name__}: {err}"
try:
    import open_clip
    cfg = open_clip.get_pretrained_cfg("ViT-L-14", "openai") or {}
    url, hub = cfg.get("url", ""), cfg.get("hf_hub", "")
    if url:  # open_clip.pretrained.download_pretrained_from_url's cache
        path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        out["clip_where"], out["clip_weights"] = path, path if os.path.isfile(path) and os.path.getsize(path) else None
    elif hub:
        from huggingface_hub import try_to_load_from_cache
        repo, name = os.path.split(hub)
        hits = [try_to_load_from_cache(repo, n) for n in ([name] if name else
                                                          ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])]
        out["clip_where"] = f"the Hugging Face cache ({repo})"
        out["clip_weights"] = next((h for h in hits if isinstance(h, str)), None)
    else:
        out["clip_where"], out["clip_weights"] = "open_clip's pretrained list", None
except Exception as err:
    out["open_clip_error"] = f"{type(err).__name__}: {err}"
print(json.dumps(out))
"""
GENEVAL_MMDET_CONFIG = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py"


@prerequisite("GenEval environment", _pixart_needed(T2I_EVAL_STEPS))
def check_geneval_environment(p: Preset, kinds: set[str]) -> str | None:
    import subprocess
    import sys

    from graft_core.text_to_image.text import GENEVAL_PYTHON_ENV

    python = os.environ.get(GENEVAL_PYTHON_ENV) or sys.executable
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        return None  # check_geneval names the bad interpreter
    fix = (f"install GenEval's environment (its README: mmdet 2.27 from source with mmcv-full 1.7, open_clip) and "
           f"set {GENEVAL_PYTHON_ENV}=<its python>")
    try:
        done = subprocess.run([python, "-c", f"CONFIG = {GENEVAL_MMDET_CONFIG!r}\n" + GENEVAL_ENV_PROBE],
                              capture_output=True, text=True, timeout=300)
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as err:
        return f"GenEval environment: {python} did not answer the environment probe ({type(err).__name__}); {fix}"
    if "mmdet_error" in found:
        return f"GenEval environment: mmdet does not import in {python} ({found['mmdet_error']}); {fix}"
    if not found["mmdet"].startswith("2."):
        return f"GenEval environment: {python} has mmdet {found['mmdet']}; GenEval's evaluator needs mmdet 2.x; {fix}"
    if not found.get("mmdet_config"):
        return (f"GenEval environment: mmdet in {python} has no configs/mask2former/{GENEVAL_MMDET_CONFIG} beside its "
                f"package (GenEval's evaluator reads it there): install mmdetection 2.27 from a source checkout "
                f"(`pip install -e .`)")
    if "open_clip_error" in found:
        return f"GenEval environment: open_clip does not import in {python} ({found['open_clip_error']}); {fix}"
    if not found.get("clip_weights"):
        return (f"GenEval environment: open_clip's ViT-L-14 'openai' weights are not in {found.get('clip_where')} "
                f"(the evaluator's colour classifier; nodes are offline): on a machine with internet run `python -c "
                f"\"import open_clip; open_clip.create_model_and_transforms('ViT-L-14', pretrained='openai')\"` in "
                f"that environment and copy its cache here")
    return None
