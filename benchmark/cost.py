"""Cost estimates for ``--dry-run``: GPU-hours (paper preset) or CPU-minutes (tiny/micro), and the share of DiT-XL/2
pretraining compute.

Paper figures (docs/paper-reference.md §7): DiT-XL/2 was pretrained for 7,000K steps × batch 256; a Table-4 stage
2 (50K × 256) is 0.71 % of that and takes < 10 h on 8 H100 (≤ 80 GPU-h); stage 1 is < 30 min per operator on one
H100 (≤ 0.5 GPU-h per layer); feature extraction ≈ 150 min on one A100 per 50k samples. Sampling 50k images with 250
DDPM steps and CFG is our estimate (≈ 3·10^18 FLOPs of DiT-XL/2 forwards → ~2 h at 400 TFLOP/s, doubled for VAE
decoding and feature extraction). Everything scales linearly with steps × batch / epochs / samples.

CPU figures are measurements on 2 CPU cores (the tiny runs of this driver); they
are rough: operators differ by up to ~3× in speed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from benchmark.dag import Node
from benchmark.family import family_of

PRETRAIN_SAMPLES = 7_000_000 * 256
PAPER_GPU_H = {
    "stage2_per_50k_x_256": 80.0,  # < 10 h × 8 H100
    "stage1_per_layer_200ep": 0.5,
    "capture_per_8k": 0.4,  # 150 min per 50k samples (A100) → 24 min for 8k, all 56 (layer, site) pairs written
    "teacher_pass_per_8k": 0.01,  # our arithmetic: 8k × ~119 GFLOP (DiT-XL/2 forward) ≈ 1 PFLOP, ~10 s at 100 TFLOP/s
    "eval_per_50k_250steps": 4.0,  # in-process eval (sampling + metrics in one job), kept for non-adm presets
    "sample_per_50k_250steps": 12.0,  # docs/data-preparation.md §6: 50k × 250 steps × CFG of DiT-XL/2 = 8–16 H100-h
    "adm_metrics": 0.25,  # Inception features of 50k samples + 10k references and the k-NN precision/recall, 1 GPU
    "reference": 0.5,  # Inception features of the reference set
    "locality": 0.2,
    "activation_stats": 0.0,  # a CPU job (no GPU in the profiles): chunked passes over the stage-1 captures
    "latency": 0.05,  # a few hundred forward passes at batch 2
    # one held-out-loss evaluation of the layer search per 1k DiT-XL/2 forwards (~119 GFLOP each; our arithmetic at
    # ~100 TFLOP/s effective, + assembling the student)
    "probe_per_1k_forwards": 0.0004,
    # stage 1 of one depth→width block pair (two DiT-XL/2 blocks + merge, 200 epochs): UNKNOWN in the paper; ours:
    # 2× an operator's
    "stage1_block_pair_200ep": 1.0,
    "teacher": 0.0,  # downloaded
}
# seconds of one job while the local executor runs one 1-thread job per core on 2 cores (bf16 autocast where the
# preset asks for it); calibrated on the tiny Table-3 grids of 2026-12-03 (benchmarks/results/grid.json: summed step
# time per kind / runs; stage 1 on the batch-16 grid)
CPU_S = {
    "teacher_step_64": 0.36,  # one teacher training step at batch 64 (64 tokens)
    # one stage-1 optimiser step per 64 samples of its batch (operator only): 80 runs of 400 configured epochs at
    # batch 16 took 14.7 s each (Hyena-Y 7 s, Hyena-X/SWA 8 s, MHA 14 s, MLP 18 s, Mamba-2 29 s; early stopping
    # included)
    "stage1_step": 0.0058,
    "stage2_step_64": 0.60,  # one stage-2 step at batch 64 (whole model, 64 tokens): 1,278 s / 2,160 steps
    "sample_per_image_step": 0.006,  # one CFG denoising step of one image: 30 evals of 500 × DPM 8 took 28 s each
    "capture": 3.0,
    "activation_stats": 2.0,  # statistics of every layer of one site from the all-pairs capture (tiny/micro)
    "reference": 10.0,
    "latency": 5.0,  # teacher, eager and fused parallel model, 30 interleaved forward passes each at batch 2
    "job_overhead": 4.0,  # python + torch + diffusers import per job, teacher load
    # one forward of one image (64 tokens, fp32, no CFG) in a layer-search probe, and assembling the probe's student:
    # 1.36 s per 320-forward probe, 0.023 s per assembly (CPU time, tiny teacher, 2026-12-07)
    "probe_forward": 0.0042,
    "probe_assemble": 0.025,
}


@dataclass
class Estimate:
    unit: str  # "GPU-h" | "CPU-min"
    by_kind: dict[str, float] = field(default_factory=dict)
    stage2_samples: int = 0  # Σ steps × batch over stage-2 runs

    @property
    def total(self) -> float:
        return sum(self.by_kind.values())

    @property
    def pretrain_pct(self) -> float:
        return 100.0 * self.stage2_samples / PRETRAIN_SAMPLES

    def line(self) -> str:
        kinds = ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(self.by_kind.items(), key=lambda kv: -kv[1]) if v)
        text = f"{_fmt(self.total)} {self.unit}" + (f" ({kinds})" if kinds else "")
        if self.stage2_samples:
            text += (f"; stage-2 training = {self.pretrain_pct:.2f} % of DiT-XL/2 pretraining compute "
                     f"(7,000K steps × 256)")
        return text


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 1 else f"{x:.2f}"


def teacher_present(config: dict) -> bool:
    """A trained teacher of the run's family is shipped (graft_core/assets) or cached; a pretrained one is assumed
    downloaded."""
    return family_of(config).teacher_present(config)


def search_probes(config: dict) -> int:
    """How many held-out-loss evaluations a search run makes at most (none cached): greedy growth evaluates every
    remaining candidate at each step; the cost-aware budget is counted in steps of the largest saving."""
    s, cands = config["search"], config["candidates"]
    if s["probe"] is None:
        return 0
    layers = len({c["layer"] for c in cands})
    per_layer = len(cands) / max(1, layers)
    if s["layers"]:
        steps = int(s["layers"])
    else:
        best = max((c["saved_flops"] for c in cands), default=0.0)
        steps = min(layers, -(-int(s["flops"]) // int(best))) if best > 0 else 0
    return 1 + int(sum((layers - i) * per_layer for i in range(steps)))


def node_cost(node: Node, gpu: bool) -> tuple[float, int]:
    """(cost in GPU-h or CPU-min, stage-2 samples) of one run, by its family (``Family.cost``)."""
    return family_of(node.config).cost(node, gpu)


def estimate(nodes: list[Node], *, gpu: bool, skip_teacher_if_present: bool = True) -> Estimate:
    est = Estimate(unit="GPU-h" if gpu else "CPU-min")
    for n in nodes:
        cost, samples = node_cost(n, gpu)
        est.by_kind[n.kind] = est.by_kind.get(n.kind, 0.0) + cost
        est.stage2_samples += samples
    return est
