"""What does keeping per-sample data for paired comparisons cost an eval step? This checkout vs another one.

    flock /tmp/heavy.lock python -m benchmarks.eval_overhead --results results --baseline-code ../main --runs 3

Runs the eval step body (``benchmark.steps.run_eval``) of ``--runs`` finished eval runs of the table3 store (their
models: the stage-2 EMA weights in the store), once with this checkout's code and once with ``--baseline-code``'s,
alternating A, B, A, B in fresh processes (one thread each) so a change of machine load hits both alike. Outputs go
to a temporary folder, never into the store. Reports each step's time and the summed ratio (the target: at most
1.05×). Writes ``benchmarks/results/eval_overhead.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common

CHILD = r"""
import json, sys, time, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
from benchmark.store import Store, RunPaths
from benchmark.step_context import StepContext
from benchmark import steps
store = Store(sys.argv[1], sys.argv[2])
out = {}
for rid in sys.argv[3].split(","):
    run = store.run("eval", rid)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = RunPaths(Path(tmp) / rid)
        scratch.out.mkdir(parents=True)
        ctx = StepContext(store, scratch, store.read_config(run), progress=False)
        steps.get_teacher(ctx.preset())  # loaded once per job process in a real run too: not the step's cost
        start = time.perf_counter()
        record = steps.run_eval(ctx)
        out[rid] = {"seconds": time.perf_counter() - start, "fid": record["metrics"]["fid"],
                    "files": sorted(p.name for p in scratch.out.iterdir())}
print(json.dumps(out))
"""


def child(code: Path, results: Path, preset: str, run_ids: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(results), preset, ",".join(run_ids)], env=env,
                          check=True, capture_output=True, text=True, cwd=code)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--baseline-code", type=Path, required=True, help="a checkout of the code to compare with")
    p.add_argument("--runs", type=int, default=3, help="how many table3 eval runs to time")
    p.add_argument("--rounds", type=int, default=2, help="A/B rounds")
    args = p.parse_args(argv)
    ctx = common.setup(args)
    from benchmark import targets as registry
    from benchmark.launch import plan_targets
    from benchmark.store import Store

    store = Store(args.results, args.preset)
    tp = plan_targets(store, registry.expand(["table3"]))[0]
    run_ids = [rp.final.run_id for rp in tp.row_plans if rp.final is not None and rp.final.kind == "eval"
               and store.run("eval", rp.final.run_id).done.exists() and rp.row.kind == "graft"][: args.runs]
    if not run_ids:
        raise SystemExit(f"error: no finished table3 eval runs under {args.results}; run table3 first")
    common.header(ctx, f"eval step: {common.REPO_ROOT} vs {args.baseline_code}, {len(run_ids)} runs")
    codes = {"this": common.REPO_ROOT, "baseline": args.baseline_code.resolve()}
    times: dict[str, list[dict]] = {k: [] for k in codes}
    for _ in range(args.rounds):
        for name, code in codes.items():
            times[name].append(child(code, args.results, args.preset, run_ids))
            common.log(f"  {name}: " + ", ".join(f"{v['seconds']:.1f} s" for v in times[name][-1].values()))
    best = {name: {rid: min(t[rid]["seconds"] for t in ts) for rid in run_ids} for name, ts in times.items()}
    total = {name: sum(b.values()) for name, b in best.items()}
    ratio = total["this"] / total["baseline"]
    same_fid = all(times["this"][0][r]["fid"] == times["baseline"][0][r]["fid"] for r in run_ids)
    lines = [[rid, f"{best['baseline'][rid]:.2f} s", f"{best['this'][rid]:.2f} s",
              f"{best['this'][rid] / best['baseline'][rid]:.3f}×"] for rid in run_ids]
    lines.append(["sum", f"{total['baseline']:.2f} s", f"{total['this']:.2f} s", f"{ratio:.3f}×"])
    table = common.format_table(["eval run", "baseline", "this", "ratio"], lines)
    print(table)
    print(f"FIDs identical: {same_fid}; files written by this checkout: {times['this'][0][run_ids[0]]['files']}")
    path = common.write_result(ctx, "eval_overhead", settings={"results": str(args.results), "runs": run_ids,
                                                               "rounds": args.rounds,
                                                               "baseline_code": str(args.baseline_code)},
                               results={"times": times, "best": best, "total": total},
                               summary={"ratio": ratio, "fids_identical": same_fid,
                                        "target": common.target(ratio, 1.05, "<=")}, table=table)
    common.footer(ctx, path)
    return 0 if ratio <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
