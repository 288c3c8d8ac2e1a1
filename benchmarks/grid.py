"""The Table-3 grid (or another target) through the driver: cold and warm wall-clock, and how often the activation
capture ran.

    python -m benchmarks.grid                          # tiny preset: cold run into a fresh results dir, then warm
    python -m benchmarks.grid --target search --jobs 2 # the layer-search target, cold then warm (grid-search.json)
    python -m benchmarks.grid --results results        # an existing run: time a warm re-run + read the counts
    python -m benchmarks.grid --quick                  # micro preset, 2 rows, in-process executor (a minute or two)

Cold = ``python -m benchmark.run table3 --preset P --results-dir FRESH`` (a new results folder and, unless
``--shared-cache``, a new ``GRAFTBENCH_CACHE``, so nothing computed earlier is reused; the shipped tiny teacher in
``graft_core/assets`` is still found). Warm = the same command again (every run is found DONE: nothing should launch).
The full tiny grid cold is the README's main job (target: ≤ 30 min on an idle 2-core machine, warm ≤ 10 s);
``--results`` skips the cold run.

Capture counts come from the run store (``results/<preset>/runs/``): capture run folders, how many times each capture
step was started (``status.json`` attempts and ``start capture`` lines in its log), the teacher forward passes each
did (samples / capture batch size, every pass recording all layers), and which capture runs the stage-1 runs read.
Target: one capture for the whole grid — one capture run per split (stage-1 train, held-out), each executed once,
shared by every stage-1 run, and none executed by the warm re-run.

Row costs (``benchmarks.row_costs``): each finished row's summed stage-1 / stage-2 / eval step time, and the Mamba-2
rows against the Hyena-X rows with the same layers (target ≤ 1.5×), with the FLOP floor of that ratio.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.store import Store
from benchmarks import common, row_costs

NAME = "grid"
TARGET = "table3"
QUICK_ROWS = "attn-hyena_x-interleaved50,attn-hyena_y-interleaved50"
COLD_TARGET_S = 30 * 60  # issue 18: the README's main job on the tiny default, cold, on an idle 2-core machine
WARM_TARGET_S = 10.0
# issue 18: a Mamba-2 row costs no more than this many Hyena-X rows with the same number of replaced layers
ROW_COMPARISON = ("mamba2", "hyena_x", 1.5)


def wall_targets(summary: dict, *, idle: bool, full_grid: bool) -> dict:
    """``target_cold`` (only for a full cold grid) and ``target_warm`` of a record's ``summary``; also what
    ``benchmarks.report`` shows for records written before these were stored."""
    out = {"target_warm": {"met": summary["warm_wall_s"] <= WARM_TARGET_S and summary["warm_launched_nothing"],
                           "target": f"warm re-run <= {WARM_TARGET_S:.0f} s, launching nothing"}}
    if summary.get("cold_wall_s") and full_grid:
        out["target_cold"] = {"met": summary["cold_wall_s"] <= COLD_TARGET_S and idle, "idle": idle,
                              "target": f"cold run <= {COLD_TARGET_S / 60:.0f} min wall on an idle 2-core machine"}
    return out


# --------------------------------------------------------------------------------------------------------- driver
def driver_cmd(args, results_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "benchmark.run", args.target, "--preset", args.preset, "--results-dir", str(results_dir),
           "--quiet"]
    if args.executor:
        cmd += ["--executor", args.executor]
    if args.rows:
        cmd += ["--rows", args.rows]
    if args.jobs:
        cmd += ["--jobs", str(args.jobs)]
    if args.steps:
        cmd += ["--steps", args.steps]
    return cmd


def run_driver(args, results_dir: Path, log_path: Path, env: dict) -> dict:
    cmd = driver_cmd(args, results_dir)
    common.log(f"$ {' '.join(cmd)}")
    start = time.perf_counter()
    with open(log_path, "w") as f:
        proc = subprocess.run(cmd, cwd=common.REPO_ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    text = log_path.read_text(errors="replace")
    tail = text.strip().splitlines()[-3:]
    common.log(f"  exit {proc.returncode} in {wall:.1f} s: " + " / ".join(tail))
    return {"command": cmd, "exit_code": proc.returncode, "wall_s": wall, "log": str(log_path),
            "nothing_to_launch": "nothing to launch" in text, "output_tail": tail}


def pending_runs(results_dir: Path, preset: str, rows: str | None, target: str = TARGET) -> int | None:
    """Runs the driver would launch now (missing or failed) for the selected rows, via the driver's own planner;
    None if unavailable."""
    try:
        from benchmark import targets
        from benchmark.launch import all_nodes, plan_targets, select_rows, to_launch
        from benchmark.status import node_states

        store = Store(results_dir, preset)
        plans = plan_targets(store, targets.expand([target]))
        patterns = [r.strip() for r in (rows or "").split(",") if r.strip()]
        if patterns:
            plans = select_rows(plans, patterns)
        return len(to_launch(node_states(store, all_nodes(plans), ask_slurm=False)))
    except Exception as err:  # noqa: BLE001 — the driver's internals may change; the counts below do not need it
        common.log(f"  (could not ask the driver's planner: {type(err).__name__}: {err})")
        return None


# --------------------------------------------------------------------------------------------------------- store
def capture_batch_size() -> int:
    import inspect

    from graft_core.stages.capture import capture_activations

    return int(inspect.signature(capture_activations).parameters["batch_size"].default)


def store_report(root: Path) -> dict:
    """Counts read from ``root`` = ``results/<preset>``: runs per kind, captures, their executions and readers."""
    store = Store.at(root)
    kinds = {}
    for kind in store.kinds():
        runs = store.runs(kind)
        done = [r for r in runs if store.is_done(r)]
        seconds = sum(row_costs.step_seconds(store, r) or 0.0 for r in done)
        attempts = sum(int(store.read_status(r).get("attempts", 0)) for r in runs)
        kinds[kind] = {"runs": len(runs), "done": len(done), "attempts": attempts, "step_seconds": round(seconds, 1)}
    batch = capture_batch_size()
    captures = []
    for run in store.runs("capture"):
        config = store.read_record(run).get("config", {})
        status = store.read_status(run)
        metrics = store.read_metrics(run) or {}
        meta = _capture_meta(run.folder / metrics["folder"]) if metrics.get("folder") else None
        starts = len(re.findall(r"\bstart capture\b", run.log.read_text(errors="replace"))) if run.log.exists() else 0
        samples = (meta or {}).get("num_samples")
        captures.append({"run_id": run.run_id, "split": config.get("split"), "done": store.is_done(run),
                         "attempts": int(status.get("attempts", 0)), "log_starts": starts,
                         "num_samples": samples, "num_layers": len({p[0] for p in (meta or {}).get("pairs", [])}) or None,
                         "capture_seconds": (meta or {}).get("seconds"), "capture_batch_size": batch,
                         "teacher_forward_passes": math.ceil(samples / batch) if samples else None})
    readers: dict[str, int] = {}
    for run in store.runs("stage1"):
        inputs = (store.read_record(run).get("config") or {}).get("inputs") or {}
        for split_key in ("capture_train", "capture_heldout"):
            if inputs.get(split_key):
                key = f"{split_key}:{inputs[split_key]}"
                readers[key] = readers.get(key, 0) + 1
    executions = sum(max(c["attempts"], c["log_starts"]) for c in captures)
    by_split = {}
    for c in captures:
        by_split.setdefault(c["split"], []).append(c["run_id"])
    one_per_split = bool(captures) and all(len(v) == 1 for v in by_split.values())
    train_sources = {k for k in readers if k.startswith("capture_train:")}
    return {"kinds": kinds, "captures": captures, "capture_runs": len(captures), "capture_executions": executions,
            "teacher_forward_passes": sum(c["teacher_forward_passes"] or 0 for c in captures),
            "stage1_runs": kinds.get("stage1", {}).get("runs", 0), "stage1_capture_readers": readers,
            "one_capture_per_split": one_per_split, "stage1_share_one_capture": len(train_sources) <= 1,
            "each_capture_executed_once": all(max(c["attempts"], c["log_starts"]) == 1 for c in captures)}


def resolve_results(path: Path, preset: str) -> tuple[Path, str]:
    """``--results`` may be the results root (holding ``<preset>/runs``) or the preset folder itself."""
    path = Path(path)
    for store in (Store(path, preset), Store.at(path)):
        if store.runs_dir.is_dir():
            return store.results_dir, store.preset
    raise SystemExit(f"error: {path} holds no driver results for preset {preset!r} (expected "
                     f"{Store(path, preset).runs_dir} or {Store.at(path).runs_dir})")


# --------------------------------------------------------------------------------------------------------- main
def run(args) -> int:
    if args.quick:
        args.preset = "micro"
        args.rows = args.rows or QUICK_ROWS
        args.executor = args.executor or "debug"
    ctx = common.setup(args)
    common.header(ctx, f"{args.target} through the driver (preset {args.preset})")
    env = dict(os.environ)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="graftbench-grid-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"preset": args.preset, "rows": args.rows or "all", "executor": args.executor or "auto"}
    if args.results:
        results_dir, args.preset = resolve_results(args.results, args.preset)
        result["mode"] = "existing results: warm re-run only"
        result["cold"] = None
    else:
        results_dir = work / "results"
        if not args.shared_cache:
            env["GRAFTBENCH_CACHE"] = str(work / "cache")
        result["mode"] = "cold + warm"
        common.log(f"\ncold run into {results_dir}" + ("" if args.shared_cache else f" (cache {env['GRAFTBENCH_CACHE']})"))
        result["cold"] = run_driver(args, results_dir, work / "cold.log", env)
    root = results_dir / args.preset
    result["results_dir"] = str(results_dir)
    before = store_report(root)
    result["pending_before_warm"] = pending_runs(results_dir, args.preset, args.rows, args.target)
    if result["pending_before_warm"]:
        common.log(f"  note: {result['pending_before_warm']} runs are missing or failed: the 'warm' re-run will "
                   f"launch them, so it is not a pure warm run")
    common.log("\nwarm re-run")
    result["warm"] = run_driver(args, results_dir, work / "warm.log", env)
    after = store_report(root)
    result["store"] = after
    result["capture_executions_during_warm"] = after["capture_executions"] - before["capture_executions"]
    met = (after["one_capture_per_split"] and after["each_capture_executed_once"] and after["stage1_share_one_capture"]
           and result["capture_executions_during_warm"] == 0)
    summary = {"cold_wall_s": result["cold"]["wall_s"] if result["cold"] else None,
               "warm_wall_s": result["warm"]["wall_s"], "warm_launched_nothing": result["warm"]["nothing_to_launch"],
               "capture_runs": after["capture_runs"], "capture_executions": after["capture_executions"],
               "teacher_forward_passes_in_capture": after["teacher_forward_passes"],
               "stage1_runs": after["stage1_runs"],
               "target_one_capture": {"met": met, "target": "one capture run per split, each executed once, shared "
                                                            "by every stage-1 run, none during the warm re-run"}}
    summary.update(wall_targets(summary, idle=not common.contention(ctx)["machine_loaded"], full_grid=not args.rows))
    costs = row_costs.row_costs(root)
    result["row_costs"] = [{k: v for k, v in r.items() if k != "teacher"} for r in costs]
    operator, baseline, ratio_target = ROW_COMPARISON
    comparison = row_costs.compare(costs, operator, baseline, target=ratio_target)
    result["row_comparison"] = comparison
    if comparison:
        summary[f"target_{operator}_row"] = {
            "met": comparison["met"], "target": f"a {operator} row <= {ratio_target}x the {baseline} row with the same "
                                                f"layers (summed step time)",
            "ratios": [round(p["ratio"], 3) for p in comparison["rows"]],
            "floor_ratios": [round(p["floor_ratio"], 3) if p["floor_ratio"] else None for p in comparison["rows"]],
            "floor_above_target": comparison["floor_above_target"]}
    rows = [["cold run", common.fmt_time(summary["cold_wall_s"]) if result["cold"] else "– (existing results)",
             f"exit {result['cold']['exit_code']}" if result["cold"] else ""],
            ["warm re-run", common.fmt_time(summary["warm_wall_s"]),
             f"exit {result['warm']['exit_code']}; " + ("nothing launched" if summary["warm_launched_nothing"]
                                                        else "LAUNCHED RUNS")],
            ["capture runs (splits)", after["capture_runs"],
             ", ".join(f"{c['split']}: {c['num_samples']} samples" for c in after["captures"])],
            ["capture executions", after["capture_executions"], f"{result['capture_executions_during_warm']} during "
                                                                f"the warm re-run"],
            ["teacher forward passes in capture", after["teacher_forward_passes"],
             f"batches of {capture_batch_size()}, all layers recorded per pass"],
            ["stage-1 runs reading them", after["stage1_runs"],
             "; ".join(f"{k.split(':')[0]} {k.split(':')[1][:8]}… ×{v}" for k, v in after["stage1_capture_readers"]
                       .items())],
            ["one capture for the whole grid", "met" if met else "MISSED", ""]]
    table = common.format_table(["", "value", "detail"], rows)
    kinds = common.format_table(["step kind", "runs", "done", "executions", "summed step time"],
                                [[k, v["runs"], v["done"], v["attempts"], common.fmt_time(v["step_seconds"])]
                                 for k, v in after["kinds"].items()])
    text = table + "\n\n" + kinds
    if comparison:
        text += (f"\n\n{operator} rows vs {baseline} rows, summed step time (floor: {row_costs.FLOOR_NOTE})\n"
                 + common.format_table(list(row_costs.TABLE_HEADERS), row_costs.table_rows(comparison)))
    print("\n" + text)
    settings = {"preset": args.preset, "target": args.target, "rows": args.rows or "all", "executor": args.executor or "auto", "jobs": args.jobs or "driver default (one 1-thread job per core, at most 2)",
                "results": str(args.results) if args.results else None, "shared_cache": bool(args.shared_cache),
                "workdir": str(work)}
    name = NAME if args.target == TARGET else f"{NAME}-{args.target}"
    path = common.write_result(ctx, name, settings=settings, results=result, summary=summary,
                               table=text,
                               notes=["wall-clock of the driver command (process start to exit), including imports "
                                      "and every step it ran",
                                      "executions = max(status.json attempts, 'start capture' lines in the run log)"])
    common.footer(ctx, path)
    return 0 if (result["warm"]["exit_code"] == 0 and (result["cold"] is None or result["cold"]["exit_code"] == 0)) \
        else 1


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--preset", default="tiny", help="driver preset (default tiny; --quick uses micro)")
    p.add_argument("--target", default=TARGET, help=f"the driver target to time (default {TARGET}; another target "
                                                    f"writes grid-<target>.json, e.g. search)")
    p.add_argument("--results", type=Path, help="existing driver results (root or <root>/<preset>): skip the cold "
                                                 "run, time a warm re-run and read the counts")
    p.add_argument("--rows", help="pass --rows to the driver (default: every row; --quick: two grafted rows)")
    p.add_argument("--jobs", type=int, help="pass --jobs to the driver (rows at a time with the local executor)")
    p.add_argument("--executor", help="pass --executor to the driver (default: the driver's auto; --quick: debug)")
    p.add_argument("--workdir", type=Path, help="where the cold run's results, cache and logs go (default: a new "
                                                "temporary folder, kept)")
    p.add_argument("--steps", metavar="MODULE:FUNCTION", help="pass --steps to the driver (e.g. "
                                                              "benchmark.fakes.steps:fake_execute: no torch work)")
    p.add_argument("--shared-cache", action="store_true", help="cold run uses the normal GRAFTBENCH_CACHE instead of "
                                                               "a fresh one")
    return run(p.parse_args(argv))



def _capture_meta(folder: Path) -> dict | None:
    """A capture's meta (``graft_core.stages.capture``: per-pair entries, or the older flat folder), None if unreadable."""
    from graft_core.stages.capture import capture_meta

    try:
        return capture_meta(folder)
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    sys.exit(main())
