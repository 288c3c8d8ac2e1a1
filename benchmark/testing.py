"""Fake step executors: the driver's whole path (plan → launch → jobs → records → summaries) without torch.

Used by ``tests/test_benchmark_*.py`` (in-process, ``with fake_steps(): ...``) and, through the environment variable
``GRAFTBENCH_FAKE_STEPS=1``, by jobs in other processes (``--executor local`` or Slurm), e.g. to check the driver
against a real cluster in seconds. ``GRAFTBENCH_FAKE_FAIL`` = comma-separated step kinds or run-id prefixes that
raise; ``GRAFTBENCH_FAKE_SLEEP`` = seconds each step sleeps. Records are deterministic functions of the run id.
"""
from __future__ import annotations

import contextlib
import os
import time

METRICS = ("is", "fid", "sfid", "precision", "recall", "kid", "class_acc")
CALLS: list[str] = []  # keys executed in this process (tests read it)


class FakeStepError(RuntimeError):
    pass


def _num(run_id: str, salt: int = 0) -> float:
    return (int(run_id[:6], 16) + salt) % 1000 / 10.0


def fake_execute(ctx) -> dict:
    kind, rid = ctx.kind, ctx.run.run_id
    CALLS.append(f"{kind}/{rid}")
    fail = {f.strip() for f in os.environ.get("GRAFTBENCH_FAKE_FAIL", "").split(",") if f.strip()}
    if kind in fail or any(rid.startswith(f) for f in fail):
        raise FakeStepError(f"fake failure of {kind}/{rid}")
    time.sleep(float(os.environ.get("GRAFTBENCH_FAKE_SLEEP", "0") or 0))
    c = ctx.config
    if kind in ("eval", "floor", "noise"):
        record = {"metrics": {m: _num(rid, i) for i, m in enumerate(METRICS)}}
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
    if kind == "capture":
        ctx.run.out.mkdir(parents=True, exist_ok=True)
        return {"folder": "out", "key": rid, "split": c["split"]}
    if kind == "stage1":
        return {"train_mse": 0.1, "val_mse": 0.1 + _num(rid) / 1000, "layer": c["layer"]}
    if kind == "stage2":
        return {"steps": c["stage2"]["steps"], "final_loss": 0.5, "world_size": ctx.world_size}
    return {"fake": True}


@contextlib.contextmanager
def fake_steps(fail: str = "", sleep: float = 0.0):
    """Route every step of this process (and of its local/Slurm jobs, via the environment) to ``fake_execute``."""
    from benchmark.executors import _environ

    with _environ({"GRAFTBENCH_FAKE_STEPS": "1", "GRAFTBENCH_FAKE_FAIL": fail, "GRAFTBENCH_FAKE_SLEEP": str(sleep)}):
        CALLS.clear()
        yield CALLS
