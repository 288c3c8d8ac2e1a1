"""Does the tiny Table-3 grid still tell the paper's story? The four checks of issue 18, from a table3 summary.

    python -m benchmarks.conclusions                                   # docs/results-tiny/table3-summary.json
    python -m benchmarks.conclusions --summary results/tiny/summaries/table3-summary.json
    python -m benchmarks.conclusions --summary NEW.json --before OLD.json   # both, side by side

Checks (each prints its value and whether it holds):

* Spearman ρ of the tiny FIDs against Table 4's over the hybrid rows the paper reports a finite FID for (18 rows:
  Mamba-2 included), overall and within the attention and MLP rows; target ρ ≥ 0.85 overall;
* self-grafting (attention and MLP) within 25 % of the control row (the teacher through the same stage 2);
* every 100 % attention row at least 2× the FID of its 50 % row (grafting damage is visible);
* MLP r=6 not worse than r=3 beyond the reported spread at each ratio: FID(r6) − FID(r3) ≤ the two bootstrap
  standard deviations combined (√(σ₆² + σ₃²)).

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


def paper_fids() -> dict[str, float]:
    from tables.paper import _published

    out = {}
    for rid, entry in _published("table3"):
        v = entry["metrics"].get("fid")
        if v is not None and rid != "baseline" and "random_init" not in rid and "self_graft" not in rid:
            out[rid] = float(v)
    return out


def checks(rows: dict[str, dict]) -> dict:
    paper = paper_fids()
    pairs = [(rid, fid(rows.get(rid)), p) for rid, p in sorted(paper.items())]
    finite = [(rid, t, p) for rid, t, p in pairs if t is not None]

    def rho(prefix: str = "") -> float | None:
        sel = [(t, p) for rid, t, p in finite if rid.startswith(prefix)]
        return spearman([t for t, _ in sel], [p for _, p in sel]) if len(sel) > 2 else None

    control = fid(rows.get("control-teacher-stage2"))
    self_graft = {site: fid(rows.get(f"{site}-self_graft-full")) for site in ("attn", "mlp")}
    within = {site: (v / control - 1) if v is not None and control else None for site, v in self_graft.items()}
    damage = {}
    for rid in rows:
        if rid.startswith("attn-") and rid.endswith("-full") and "random_init" not in rid and "self_graft" not in rid:
            stem = rid[len("attn-"):-len("-full")]
            half = fid(rows.get(f"attn-{stem}-interleaved50"))
            full = fid(rows[rid])
            damage[stem] = full / half if half and full is not None else None
    r6r3 = {}
    for ratio in RATIOS:
        r3, r6 = rows.get(f"mlp-mlp_r3-{ratio}"), rows.get(f"mlp-mlp_r6-{ratio}")
        if fid(r3) is None or fid(r6) is None:
            continue
        s3, s6 = fid_std(r3), fid_std(r6)
        spread = math.sqrt(s3 ** 2 + s6 ** 2) if s3 is not None and s6 is not None else 0.0
        r6r3[ratio] = {"r3": fid(r3), "r6": fid(r6), "diff": fid(r6) - fid(r3), "spread": spread,
                       "holds": fid(r6) - fid(r3) <= spread}
    overall = rho()
    return {
        "rows_compared": len(finite), "rows_missing": [rid for rid, t, _ in pairs if t is None],
        "spearman": {"all": overall, "attn": rho("attn-"), "mlp": rho("mlp-")},
        "spearman_holds": overall is not None and overall >= 0.85 and len(finite) == len(pairs),
        "control_fid": control, "self_graft_fid": self_graft, "self_graft_vs_control": within,
        "self_graft_holds": all(v is not None and abs(v) <= 0.25 for v in within.values()),
        "full_over_50": damage, "damage_holds": bool(damage) and all(v is not None and v >= 2 for v in damage.values()),
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
           ["100 % / 50 % attention FID", ", ".join(f"{k} {fmt(v)}×" for k, v in c["full_over_50"].items()),
            ok(c["damage_holds"])],
           ["MLP r=6 − r=3 (spread)", ", ".join(f"{RATIOS[k]}: {v['diff']:+.2f} "
                                                  f"(±{v['spread']:.2f})" for k, v in c["r6_vs_r3"].items()),
            ok(c["r6_holds"])]]
    return out


def main(argv=None) -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--summary", type=Path, default=DEFAULT_SUMMARY, help="table3 summary JSON (the driver's or docs')")
    p.add_argument("--before", type=Path, help="an older summary to print beside it")
    args = p.parse_args(argv)
    ctx = common.setup(args)
    new = checks(read_rows(args.summary))
    results = {"summary": str(args.summary), "checks": new}
    table = common.format_table(["check", "value", ""], table_rows(new))
    if args.before:
        old = checks(read_rows(args.before))
        results.update(before=str(args.before), before_checks=old)
        table = ("new: " + str(args.summary) + "\n" + table + "\n\nbefore: " + str(args.before) + "\n"
                 + common.format_table(["check", "value", ""], table_rows(old)))
    print(table)
    path = common.write_result(ctx, "conclusions", settings={"summary": str(args.summary),
                                                             "before": str(args.before) if args.before else None},
                               results=results, table=table)
    print(f"wrote {path}")
    all_hold = all(new[k] for k in ("spearman_holds", "self_graft_holds", "damage_holds", "r6_holds"))
    return 0 if all_hold else 1


if __name__ == "__main__":
    sys.exit(main())
