"""Fake step runner: the driver's whole path (plan → launch → jobs → records → summaries) without torch.

Callers select it explicitly — ``benchmark.run.main(argv, execute=FakeSteps())`` or a launcher's ``execute=`` in the
tests, ``python -m benchmark.run ... --steps benchmark.fakes.steps:fake_execute`` on the command line (e.g. to check the
driver against a real cluster in seconds). The runner is pickled into each job, so local subprocesses and Slurm
jobs run it too. Records are deterministic functions of the run id. Production modules never import this one
(``tests/test_import_graph.py``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from benchmark.summary import SUMMARY_METRICS

CALLS: list[str] = []  # keys executed in this process (tests read it)


class FakeStepError(RuntimeError):
    pass


def _num(run_id: str, salt: int = 0) -> float:
    return (int(run_id[:6], 16) + salt) % 1000 / 10.0


@dataclass(frozen=True)
class FakeSteps:
    """``execute(ctx) -> record`` for every step kind. ``fail``: comma-separated step kinds or run-id prefixes that
    raise ``FakeStepError``; ``sleep``: seconds each step takes (only the steps of the comma-separated kinds in
    ``slow``, when given). ``gate``: the name of an environment variable; when it names a path, those steps also
    wait until that file exists (a test holds a step running for as long as it needs, in any process)."""

    fail: str = ""
    sleep: float = 0.0
    slow: str = ""
    gate: str = ""

    def __call__(self, ctx) -> dict:
        kind, rid = ctx.kind, ctx.run.run_id
        CALLS.append(f"{kind}/{rid}")
        fail = {f.strip() for f in self.fail.split(",") if f.strip()}
        if kind in fail or any(rid.startswith(f) for f in fail):
            raise FakeStepError(f"fake failure of {kind}/{rid}")
        if not self.slow or kind in {s.strip() for s in self.slow.split(",")}:
            time.sleep(self.sleep)
            self._wait_for_gate()
        c = ctx.config
        if kind in ("eval", "floor", "noise"):
            record = {"metrics": {m: _num(rid, i) for i, m in enumerate(SUMMARY_METRICS)}}
            if kind == "eval":
                plan = c["model"].get("plan")
                if c["model"]["source"] == "stage2":
                    plan = ctx.store.read_config(ctx.dep("stage2", c["model"]["run"]))["plan"]
                record["efficiency"] = ({"d_flops_op": -50.0, "d_flops_ft": 0.1, "d_param": 0.2} if plan else {})
            return record
        if kind == "locality":
            ks = list(c["locality"]["ks"])
            layers = c["teacher"]["num_layers"]
            # layer i's locality grows with k; its rank among layers follows (5·i mod 7) (ties: the lower index)
            return {"locality": {"k": ks, "layers": [[k / (k + 4) * (0.3 + 0.6 * ((5 * i) % 7) / 7) for k in ks]
                                                     for i in range(layers)]},
                    "select_k": c["locality"]["select_k"]}
        if kind == "activation_stats":  # finite, per layer: variance grows with depth (the paper's trend)
            layers = [{"layer": layer, "mean": 0.0, "variance": 0.1 * (1 + layer), "std": (0.1 * (1 + layer)) ** 0.5,
                       "max_abs": 2.0 + layer + _num(rid) / 100, "p999_abs": 1.0 + layer / 2,
                       "outlier_frac": 1e-4 * (1 + layer), "kurtosis": 0.5 * layer, "input_variance": 1.0}
                      for layer in c["layers"]]
            return {"activation_stats": {"site": c["site"], "outlier_sigma": c["outlier_sigma"], "num_samples": 8,
                                         "split": "stage1", "layers": layers}}
        if kind == "capture":
            ctx.run.out.mkdir(parents=True, exist_ok=True)
            return {"folder": "out", "key": rid, "split": c["split"]}
        if kind == "stage1":
            return {"train_mse": 0.1, "val_mse": 0.1 + _num(rid) / 1000, "layer": c["layer"]}
        if kind == "stage1_online":
            layers = {str(layer): {"train_mse": 0.1, "val_mse": 0.1 + _num(rid, layer) / 1000}
                      for layer in c["plan"]["layers"]}
            return {"train_mse": 0.1, "val_mse": sum(m["val_mse"] for m in layers.values()) / len(layers),
                    "layers": layers}
        if kind == "stage2":
            return {"steps": c["stage2"]["steps"], "final_loss": 0.5, "world_size": ctx.world_size}
        if kind == "search":  # the real strategy and probe cache, on a fake loss: additive per-swap penalties
            from benchmark.families.dit import run_search

            return run_search(ctx, probe_factory=_fake_probe)
        return {"fake": True}


    def _wait_for_gate(self) -> None:
        gate = os.environ.get(self.gate) if self.gate else None
        while gate and not os.path.exists(gate):
            time.sleep(0.05)


def _fake_probe(ctx, lookup: dict):
    """A held-out loss that grows with every swap by a deterministic amount of its stage-1 run."""
    return lambda swaps: 1.0 + sum(0.01 + _num(lookup[swap]["stage1"]) / 1000 for swap in swaps)


fake_execute = FakeSteps()  # the plain fake, for ``--steps benchmark.fakes.steps:fake_execute``
# a teacher that runs until the file $GRAFTBENCH_FAKE_GATE exists: a launch to interrupt mid-step, or one that a
# second launch overlaps
gated_teacher_execute = FakeSteps(slow="teacher", gate="GRAFTBENCH_FAKE_GATE")


def fake_steps(fail: str = "", sleep: float = 0.0) -> FakeSteps:
    """A fresh fake runner with ``CALLS`` cleared (read ``CALLS`` for what this process executed)."""
    CALLS.clear()
    return FakeSteps(fail=fail, sleep=sleep)
