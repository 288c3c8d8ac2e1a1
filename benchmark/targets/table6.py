"""``table6`` — depth → width: 28 sequential DiT blocks rewired into 14 parallel pairs (paper Table 6, §4.9, §9).

Rows: the teacher (depth 28; speed-up 1 by definition) and the parallel-pair model (depth 14): stage 1 per block pair
with L1, stage 2 on 25 % of the data with linear warm-up and the lr halved twice — at 75k and 150k iterations (paper;
the total is UNKNOWN, we run 200k) or, on the small presets, at 1/2 and 3/4 of the run (tiny: 600 steps = 2× the
tiny Table-4 budget, halvings at 300 and 450) — then the evaluation and a latency run (forward pass, batch 2, as the
paper). On tiny and micro two diagnostic rows (a short stage 2 can improve a small teacher on its own): the parallel
model before stage 2, and the sequential teacher through the identical stage 2 (what the extra training alone gives).
The TinyFusion baselines are copied from the paper (``tables/``), not run.
"""
from __future__ import annotations

import dataclasses

from benchmark.rows import Row
from benchmark.targets.common import baseline_row, control_row, preset
from graft_core.presets import Preset

NAME = "table6"
TITLE = "Depth to width via parallel blocks"

STAGE2_DATA = 0.25  # paper §9
# stage-2 steps and lr halvings per preset (paper: 75k / 150k; total UNKNOWN, ours 200k); other presets (paper-smoke)
# keep their own step count with halvings at the paper's fractions of it (75k/200k, 150k/200k)
STAGE2_SCHEDULE = {"paper": (200_000, (75_000, 150_000)), "tiny": (600, (300, 450)), "micro": (6, (3, 5))}
PAPER_FRACTIONS = (0.375, 0.75)
LATENCY = {"micro": {"batch": 2, "repeats": 3}, "paper-smoke": {"batch": 2, "repeats": 3}}
LATENCY_DEFAULT = {"batch": 2, "repeats": 30}  # paper: one forward pass at batch 2
DIAGNOSTIC_PRESETS = ("tiny", "micro")  # presets that also run the stage-1-only row and the control


def depth_width_preset(p: Preset) -> Preset:
    """``p`` with Table 6's stage 2: 25 % of the data, the step count and the two lr halvings."""
    steps, milestones = STAGE2_SCHEDULE.get(
        p.name, (p.stage2.steps, tuple(max(1, round(f * p.stage2.steps)) for f in PAPER_FRACTIONS)))
    s2 = dataclasses.replace(p.stage2, data_fraction=STAGE2_DATA, steps=steps, lr_milestones=milestones,
                             checkpoint_every=min(p.stage2.checkpoint_every, steps))
    return p.replace(stage2=s2)


def rows(preset_name: str) -> list[Row]:
    p = preset(preset_name)
    q = depth_width_preset(p)
    depth = p.teacher.num_layers
    settings = {"depth": depth // 2, "stage1_objective": "l1", "stage2_data": 100 * STAGE2_DATA,
                "iters": q.stage2.steps, "lr_halvings": list(q.stage2.lr_milestones)}
    out = [
        baseline_row(p, label=f"Teacher (depth {depth})", depth=depth, speedup=1.0),
        Row(id=f"parallel-depth{depth // 2}", label=f"Grafting (parallel pairs, depth {depth // 2})",
            group="Grafting", kind="parallel_pairs", preset=q, name="parallel",
            extra={**settings, "latency": LATENCY.get(p.name, LATENCY_DEFAULT)}),
    ]
    if p.name in DIAGNOSTIC_PRESETS:
        out += [
            Row(id=f"parallel-depth{depth // 2}-stage1", label=f"Parallel pairs, depth {depth // 2} (stage 1 only)",
                group="Grafting", kind="parallel_pairs", preset=q, finetune=False, name="parallel_stage1",
                extra={"depth": depth // 2, "stage1_objective": "l1"}),
            dataclasses.replace(control_row(q), extra={"depth": depth, "iters": q.stage2.steps, "speedup": 1.0,
                                                       "stage2_data": 100 * STAGE2_DATA}),
        ]
    return out
