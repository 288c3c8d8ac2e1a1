"""Does the tiny Table-3 grid still tell the paper's story? The four checks of issue 18, from a table3 summary.

    python -m benchmarks.conclusions                                   # docs/results-tiny/table3-summary.json
    python -m benchmarks.conclusions --summary results/tiny/summaries/table3-summary.json
    python -m benchmarks.conclusions --summary NEW.json --before OLD.json   # both, side by side

Checks (each prints its value and whether it holds):

* Spearman ρ of the tiny FIDs against Table 4's over the hybrid rows the paper reports a finite FID for (18 rows:
  Mamba-2 included), overall and within the attention and MLP rows; target ρ ≥ 0.85 overall;
* self-grafting (attention and MLP) within 25 % of the control row (the teacher through the same stage 2);
* every 100 % attention row at least 2× the FID of its 50 % row (grafting damage is visible);
* MLP r=6 not worse than r=3 beyond sampling noise at each ratio: the paired 95 % interval of FID(r6) − FID(r3)
  reaches 0 or below (summaries without paired comparisons: the difference ≤ √(σ₆² + σ₃²) of the unpaired spreads).

Each check states its paired interval (the summary's ``comparisons``, ``benchmark.comparisons``): the FID difference
on the same generated samples with its 95 % paired bootstrap interval. It covers sampling noise only, not the
variance over training seeds. ``--table1`` adds Table 1's conclusion (the best objective per site, each other
objective's paired difference to it).

The paper's FIDs come from ``tables.paper`` (``tables/paper/table4.csv``, exact row ids).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common

DEFAULT_SUMMARY = common.REPO_ROOT / "docs" / "results-tiny" / "table3-summary.json"
DEFAULT_TABLE1 = common.REPO_ROOT / "docs" / "results-tiny" / "table1-summary.json"
RATIOS = {"interleaved50": "50 %", "interleaved75": "75 %", "full": "100 %"}


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's ρ (average ranks for ties) — scipy.stats.spearmanr, imported lazily."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def read_rows(path: Path) -> dict[str, dict]:
    data = json.loads(Path(path).read_text())
    return {r["row"]: r for r in data["rows"]}


def fid(row: dict | None) -> float | None:
    v = ((row or {}).get("metrics") or {}).get("fid")
    return float(v) if v is not None and math.isfinite(float(v)) else None


def fid_std(row: dict | None) -> float | None:
    v = (((row or {}).get("extra") or {}).get("other_metrics") or {}).get("fid_std")
    return float(v) if v is not None else None


def read_pairs(path: Path) -> list[dict]:
    return (json.loads(Path(path).read_text()).get("comparisons") or {}).get("pairs", [])


def paired(pairs: list[dict], a: str, b: str) -> dict | None:
    """The paired difference a − b (a stored b − a flipped), or None when the summary has none for them."""
    for e in pairs:
        if e.get("error") or e.get("diff") is None:
            continue
        if (e["a"], e["b"]) == (a, b):
            return {k: e[k] for k in ("diff", "lo", "hi", "std", "excludes_zero")}
        if (e["a"], e["b"]) == (b, a):
            return {"diff": -e["diff"], "lo": -e["hi"], "hi": -e["lo"], "std": e["std"],
                    "excludes_zero": e["excludes_zero"]}
    return None


def interval(d: dict | None) -> str:
    return "" if d is None else f"{d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]" + ("*" if d["excludes_zero"] else "")


def paper_fids() -> dict[str, float]:
    from tables.paper import _published

    out = {}
    for rid, entry in _published("table3"):
        v = entry["metrics"].get("fid")
        if v is not None and rid != "baseline" and "random_init" not in rid and "self_graft" not in rid:
            out[rid] = float(v)
    return out


def checks(rows: dict[str, dict], compared: list[dict] | None = None) -> dict:
    compared = compared or []
    paper = paper_fids()
    pairs = [(rid, fid(rows.get(rid)), p) for rid, p in sorted(paper.items())]
    finite = [(rid, t, p) for rid, t, p in pairs if t is not None]

    def rho(prefix: str = "") -> float | None:
        sel = [(t, p) for rid, t, p in finite if rid.startswith(prefix)]
        return spearman([t for t, _ in sel], [p for _, p in sel]) if len(sel) > 2 else None

    control = fid(rows.get("control-teacher-stage2"))
    self_graft = {site: fid(rows.get(f"{site}-self_graft-full")) for site in ("attn", "mlp")}
    within = {site: (v / control - 1) if v is not None and control else None for site, v in self_graft.items()}
    within_paired = {site: paired(compared, f"{site}-self_graft-full", "control-teacher-stage2") for site in self_graft}
    damage, damage_paired = {}, {}
    for rid in rows:
        if rid.startswith("attn-") and rid.endswith("-full") and "random_init" not in rid and "self_graft" not in rid:
            stem = rid[len("attn-"):-len("-full")]
            half = fid(rows.get(f"attn-{stem}-interleaved50"))
            full = fid(rows[rid])
            damage[stem] = full / half if half and full is not None else None
            damage_paired[stem] = paired(compared, rid, f"attn-{stem}-interleaved50")
    r6r3 = {}
    for ratio in RATIOS:
        r3, r6 = rows.get(f"mlp-mlp_r3-{ratio}"), rows.get(f"mlp-mlp_r6-{ratio}")
        if fid(r3) is None or fid(r6) is None:
            continue
        s3, s6 = fid_std(r3), fid_std(r6)
        spread = math.sqrt(s3 ** 2 + s6 ** 2) if s3 is not None and s6 is not None else 0.0
        d = paired(compared, f"mlp-mlp_r6-{ratio}", f"mlp-mlp_r3-{ratio}")
        r6r3[ratio] = {"r3": fid(r3), "r6": fid(r6), "diff": fid(r6) - fid(r3), "spread": spread, "paired": d,
                       "holds": d["lo"] <= 0 if d is not None else fid(r6) - fid(r3) <= spread}
    overall = rho()
    return {
        "rows_compared": len(finite), "rows_missing": [rid for rid, t, _ in pairs if t is None],
        "spearman": {"all": overall, "attn": rho("attn-"), "mlp": rho("mlp-")},
        "spearman_holds": overall is not None and overall >= 0.85 and len(finite) == len(pairs),
        "control_fid": control, "self_graft_fid": self_graft, "self_graft_vs_control": within,
        "self_graft_minus_control_paired": within_paired,
        "self_graft_holds": all(v is not None and abs(v) <= 0.25 for v in within.values()),
        "full_over_50": damage, "full_minus_50_paired": damage_paired, "damage_holds": bool(damage) and all(v is not None and v >= 2 for v in damage.values()),
        "r6_vs_r3": r6r3, "r6_holds": bool(r6r3) and all(v["holds"] for v in r6r3.values()),
        "fids": {rid: {"tiny": t, "paper": p} for rid, t, p in pairs},
    }


def fmt(v, pct=False):
    if v is None:
        return "–"
    return f"{100 * v:+.0f} %" if pct else f"{v:.2f}"


def table_rows(c: dict) -> list[list[str]]:
    ok = lambda b: "holds" if b else "FAILS"  # noqa: E731
    out = [["Spearman ρ vs Table 4 (all / attn / MLP)", f"{fmt(c['spearman']['all'])} / {fmt(c['spearman']['attn'])} / "
                                                          f"{fmt(c['spearman']['mlp'])} over {c['rows_compared']} rows",
            ok(c["spearman_holds"])],
           ["self-graft vs control (attn / MLP)", f"{fmt(c['self_graft_fid']['attn'])} / {fmt(c['self_graft_fid']['mlp'])}"
                                                  f" vs {fmt(c['control_fid'])} ({fmt(c['self_graft_vs_control']['attn'], True)}"
                                                  f" / {fmt(c['self_graft_vs_control']['mlp'], True)})",
            ok(c["self_graft_holds"])],
           ["  paired ΔFID self-graft − control (attn / MLP)",
            " / ".join(interval(c.get("self_graft_minus_control_paired", {}).get(s)) or "–" for s in ("attn", "mlp")),
            ""],
           ["100 % / 50 % attention FID", ", ".join(f"{k} {fmt(v)}×" for k, v in c["full_over_50"].items()),
            ok(c["damage_holds"])],
           ["  paired ΔFID 100 % − 50 %", ", ".join(f"{k} {interval(v) or '–'}"
                                                  for k, v in c.get("full_minus_50_paired", {}).items()), ""],
           ["MLP r=6 − r=3, paired 95 % interval (unpaired ±)",
            ", ".join(f"{RATIOS[k]}: {interval(v['paired']) or format(v['diff'], '+.2f')} (±{v['spread']:.2f})"
                      for k, v in c["r6_vs_r3"].items()),
            ok(c["r6_holds"])]]
    return out


def table1_conclusions(path: Path) -> dict:
    """Per site: the objective with the lowest FID, and each other objective's paired difference to it."""
    data = json.loads(Path(path).read_text())
    rows = {r["row"]: r for r in data["rows"]}
    out = {}
    for e in (data.get("comparisons") or {}).get("pairs", []):
        site = rows[e["b"]]["site"]
        best = rows[e["b"]]["extra"].get("objective")
        entry = out.setdefault(site, {"best": best, "best_fid": fid(rows[e["b"]]), "others": {}})
        entry["others"][rows[e["a"]]["extra"].get("objective")] = (
            {"fid": fid(rows[e["a"]]), **paired([e], e["a"], e["b"])} if paired([e], e["a"], e["b"]) else
            {"error": e.get("error")})
    for site in out.values():
        site["best_is_separated"] = all(o.get("excludes_zero") for o in site["others"].values())
    return out


def table1_rows(t1: dict) -> list[list[str]]:
    return [[f"Table 1 {site}: best objective {v['best']} ({fmt(v['best_fid'])}); others − best",
             ", ".join(f"{obj} {interval(o) if 'diff' in o else o.get('error')}" for obj, o in v["others"].items()),
             "separated" if v["best_is_separated"] else "not separated from all"] for site, v in t1.items()]


def in_repo(path: Path) -> str:
    """A summary's path as recorded: relative to the repository when inside it (the record then reads the same in
    any clone), else as given."""
    try:
        return str(Path(path).resolve().relative_to(common.REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--summary", type=Path, default=DEFAULT_SUMMARY, help="table3 summary JSON (the driver's or docs')")
    p.add_argument("--before", type=Path, help="an older summary to print beside it")
    p.add_argument("--table1", type=Path, default=DEFAULT_TABLE1 if DEFAULT_TABLE1.exists() else None,
                   help="a table1 summary JSON: also state Table 1's conclusion with its paired intervals")
    args = p.parse_args(argv)
    ctx = common.setup(args)
    new = checks(read_rows(args.summary), read_pairs(args.summary))
    results = {"summary": in_repo(args.summary), "checks": new}
    lines = table_rows(new)
    if args.table1:
        results["table1"] = table1_conclusions(args.table1)
        lines += table1_rows(results["table1"])
    table = common.format_table(["check (paired 95 % intervals: sampling noise only, * excludes 0)", "value", ""],
                                lines)
    if args.before:
        old = checks(read_rows(args.before), read_pairs(args.before))
        results.update(before=in_repo(args.before), before_checks=old)
        table = ("new: " + str(args.summary) + "\n" + table + "\n\nbefore: " + str(args.before) + "\n"
                 + common.format_table(["check", "value", ""], table_rows(old)))
    print(table)
    path = common.write_result(ctx, "conclusions", settings={"summary": in_repo(args.summary),
                                                             "before": in_repo(args.before) if args.before else None,
                                                             "table1": in_repo(args.table1) if args.table1 else None},
                               results=results, table=table)
    print(f"wrote {path}")
    all_hold = all(new[k] for k in ("spearman_holds", "self_graft_holds", "damage_holds", "r6_holds"))
    return 0 if all_hold else 1


if __name__ == "__main__":
    sys.exit(main())
