"""How many samples does a close call need? The paired FID spread against the sample count, on tiny.

    flock /tmp/heavy.lock python -m benchmarks.paired_samples --results results     # after table1 and table3 ran
    python -m benchmarks.paired_samples --results results --counts 100,200,500 --max-samples 500   # cheaper

For each model of Table 1's close calls (each objective vs the best objective of its site, the pairs of the table1
summary's ``comparisons``) and of Table 4's (MLP r=3 vs r=6 at 50 / 75 / 100 %), the trained weights of the result
store are sampled once at ``--max-samples`` (default 2,000) with the tiny eval protocol: the first ``n`` samples of
that set are exactly the samples an ``n``-sample evaluation draws (labels cycle through the classes and the noise of
batch ``i`` comes from ``seed + i``; counts are multiples of the batch size). At each count the script computes every
pair's paired bootstrap (``graft_core.metrics.paired``: 200 shared index draws, exact FID per draw, the reference set
fixed) and each row's unpaired spread, and reports the smallest count whose 95 % interval excludes 0 ("none" when no
count up to the largest does). At the default eval size (500) the numbers match the summaries' ``comparisons``
(checked and recorded in the JSON). The interval covers sampling noise only, not training-seed variance.

Writes ``benchmarks/results/paired_samples.json``. The sampled features are cached in the result store
(``<results>/<preset>/paired_samples/<eval run>-<N>.npy``), so a second call only recomputes the statistics.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common

DEFAULT_COUNTS = (100, 200, 300, 500, 750, 1000, 1500, 2000)


def close_calls(store, summaries: dict[str, dict], plans: dict[str, dict]) -> list[dict]:
    """``[{"table", "a", "b", "run_a", "run_b"}]``: Table 1's comparisons and Table 4's r=3 vs r=6."""
    out = []
    for e in (summaries.get("table1", {}).get("comparisons") or {}).get("pairs", []):
        out.append({"table": "table1", "a": e["a"], "b": e["b"]})
    for ratio in ("interleaved50", "interleaved75", "full"):
        out.append({"table": "table4", "a": f"mlp-mlp_r6-{ratio}", "b": f"mlp-mlp_r3-{ratio}"})
    keep = []
    for c in out:
        ids = plans[c["table"] if c["table"] == "table1" else "table3"]
        if c["a"] in ids and c["b"] in ids:
            keep.append({**c, "run_a": ids[c["a"]], "run_b": ids[c["b"]]})
    return keep


def sampled_features(store, run_id: str, num_samples: int) -> tuple[np.ndarray, dict]:
    """Pool features of ``num_samples`` samples of an eval run's model (cached under
    ``<results>/<preset>/paired_samples/``; the runs themselves are left as they are)."""
    from benchmark.step_context import StepContext
    from benchmark.families.dit import _source
    from benchmark.step_context import load_model
    from graft_core.evaluation.evaluate import evaluate_model
    from benchmark.step_context import job_device

    run = store.run("eval", run_id)
    cache = store.root / "paired_samples" / f"{run_id}-{num_samples}.npy"
    if cache.exists():
        return np.load(cache), {"cached": True}
    ctx = StepContext(store, run, store.read_config(run), progress=False)
    p = ctx.preset()
    model, _ = load_model(ctx, ctx.config["model"])
    kept: dict = {}
    row = evaluate_model(model, p, num_samples=num_samples, decode=_source(p).decoder(p, job_device()), per_sample=kept)
    from graft_core.runtime.paths import atomic_write_bytes
    import io

    buf = io.BytesIO()
    np.save(buf, kept["features"])
    atomic_write_bytes(cache, buf.getvalue())
    return kept["features"], {"cached": False, "sample_seconds": row["sample_seconds"], "fid": row["fid"]}


def reference_stats(preset) -> tuple[np.ndarray, np.ndarray]:
    from graft_core.evaluation.evaluate import real_images
    from graft_core.metrics.extractors import get_extractor
    from graft_core.metrics.features import reference_features

    spec = get_extractor(preset.eval.extractor)
    ref = reference_features(real_images(preset, "train")[0], spec, spec.weights(preset, None))
    stats = ref.frechet_stats("pool")
    return stats["mu"], stats["sigma"]


def at_count(fa: np.ndarray, fb: np.ndarray, n: int, mu2, sigma2, draws: int, seed: int) -> dict:
    from graft_core.metrics.frechet import frechet_distance, statistics
    from graft_core.metrics.paired import bootstrap_indices, paired_difference, resampled_frechet

    idx = bootstrap_indices(n, draws, seed)
    va, vb = (resampled_frechet(f[:n], mu2, sigma2, idx) for f in (fa, fb))
    fid = [frechet_distance(s["mu"], s["sigma"], mu2, sigma2) for s in (statistics(fa[:n]), statistics(fb[:n]))]
    d = paired_difference(fid[0], va, fid[1], vb)
    return {"n": n, "fid_a": fid[0], "fid_b": fid[1], **d, "unpaired_std_a": float(va.std(ddof=1)),
            "unpaired_std_b": float(vb.std(ddof=1))}


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--results", type=Path, default=Path("results"), help="the result store (--results-dir of run)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--max-samples", type=int, default=2000)
    p.add_argument("--counts", default=",".join(map(str, DEFAULT_COUNTS)), help="comma-separated sample counts")
    p.add_argument("--tables", default="table1,table4", help="whose close calls: table1, table4 or both")
    args = p.parse_args(argv)
    ctx = common.setup(args)
    import json

    from benchmark import targets as registry
    from benchmark.launch import plan_targets
    from benchmark.store import Store
    from graft_core.metrics.compute import DEFAULT_OPTIONS, FID_BOOTSTRAP
    from graft_core.presets import get_preset

    counts = sorted({int(c) for c in args.counts.split(",") if int(c) <= args.max_samples})
    store = Store(args.results, args.preset)
    tables = set(args.tables.split(","))
    summaries = {}
    for t in ["table1"] * ("table1" in tables) + ["table3"] * ("table4" in tables):
        path = store.summary_path(t)
        if not path.exists():
            raise SystemExit(f"error: {path} not found; run `python -m benchmark.run {t} --results-dir "
                             f"{args.results}` first")
        summaries[t] = json.loads(path.read_text())
    plans = {tp.name: {rp.row.id: rp.final.run_id for rp in tp.row_plans if rp.final is not None}
             for tp in plan_targets(store, registry.expand(["table1", "table3"]))}
    calls = [c for c in close_calls(store, summaries, plans) if c["table"] in tables]
    common.header(ctx, f"paired FID spread vs sample count, preset {args.preset}: {len(calls)} close calls")
    preset = get_preset(args.preset)
    mu2, sigma2 = reference_stats(preset)
    features, sampling = {}, {}
    for run_id in dict.fromkeys(r for c in calls for r in (c["run_a"], c["run_b"])):
        features[run_id], sampling[run_id] = sampled_features(store, run_id, args.max_samples)
        common.log(f"  eval/{run_id}: {args.max_samples} samples {sampling[run_id]}")
    stored = {(e["a"], e["b"]): e for t in summaries.values() for e in (t.get("comparisons") or {}).get("pairs", [])}
    results, lines = [], []
    for c in calls:
        per_n = [at_count(features[c["run_a"]], features[c["run_b"]], n, mu2, sigma2, FID_BOOTSTRAP,
                         DEFAULT_OPTIONS["rng_seed"]) for n in counts]
        first = next((r["n"] for r in per_n if r["excludes_zero"]), None)
        stays = next((r["n"] for i, r in enumerate(per_n) if all(s["excludes_zero"] for s in per_n[i:])), None)
        slope = (np.polyfit(np.log([r["n"] for r in per_n]), np.log([max(r["std"], 1e-12) for r in per_n]), 1)[0]
                 if len(per_n) > 1 else None)
        check = stored.get((c["a"], c["b"]))
        at_default = next((r for r in per_n if r["n"] == preset.eval.num_samples), None)
        match = (None if check is None or at_default is None or "diff" not in check else
                 math.isclose(check["diff"], at_default["diff"], abs_tol=1e-3)
                 and math.isclose(check["std"], at_default["std"], rel_tol=1e-3, abs_tol=1e-6))
        results.append({**c, "counts": per_n, "first_excluding_zero": first, "excludes_zero_from": stays,
                        "std_log_slope": slope, "matches_summary_at_default": match})
        lines.append([c["table"], f"{c['a']} − {c['b']}"]
                     + [f"{r['diff']:+.2f} ±{r['std']:.2f}{'*' if r['excludes_zero'] else ''}" for r in per_n]
                     + [f"{first or 'none'} / {stays or 'none'}", f"{slope:.2f}" if slope is not None else "–"])
    table = common.format_table(["table", "a − b"] + [f"n={n}" for n in counts]
                                + [f"excl. 0 first / from (≤{counts[-1]})", "log σ / log n"], lines)
    print(table)
    print("ΔFID ±paired std per count; * = 95 % interval excludes 0 (sampling noise only, not training-seed variance)")
    summary = {c["a"] + " - " + c["b"]: r["first_excluding_zero"] for c, r in zip(calls, results)}
    path = common.write_result(ctx, "paired_samples", settings={"results": str(args.results), "preset": args.preset,
                                                                "counts": counts, "max_samples": args.max_samples,
                                                                "draws": FID_BOOTSTRAP},
                               results={"pairs": results, "sampling": sampling}, summary=summary, table=table,
                               notes=["interval: 95 % paired bootstrap over the generated samples, reference fixed; "
                                      "sampling noise only, not training-seed variance"])
    common.footer(ctx, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
