"""Print the README "Performance" tables from the JSON records in ``benchmarks/results/``.

    python -m benchmarks.report                    # markdown on stdout (paste into README.md / benchmarks/README.md)
    python -m benchmarks.report --results DIR

Reads the latest non-quick record of each benchmark (``<name>.json`` and tagged ``<name>-<tag>.json``; for
``operators`` the rows of several records are merged per sequence length, the newest record winning) and states the
machine and load each was measured under. Nothing is measured here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS_DIR, fmt_flops, fmt_num, fmt_time, format_table
from benchmarks import row_costs
from benchmarks.grid import wall_targets

BENCHMARKS = ("operators", "mamba2_scan", "mamba2_row", "pixart_speedup", "sampling", "grid", "conclusions",
              "paired_samples", "eval_overhead")
OP_ORDER = ("hyena_x", "hyena_x_cm", "hyena_y", "hyena_y_cm", "hyena_se", "hyena_se_cm", "swa", "swa_blocked",
            "mamba2")


def load(results: Path, name: str, quick: bool = False) -> list[dict]:
    """Records of ``name`` (non-quick, or only the ``--quick`` ones), oldest first."""
    out = []
    for path in sorted(results.glob(f"{name}*.json")):
        stem = path.stem
        if stem.endswith("-quick") != quick or not (stem == name or stem.startswith(name + "-")):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if record.get("benchmark") == name and bool(record.get("quick")) == quick:
            record["_file"] = path.name
            out.append(record)
    return sorted(out, key=lambda r: r.get("timestamp", ""))


def machine_line(records: list[dict]) -> str:
    parts = []
    for r in records:
        m, c = r["machine"], r.get("contention", {})
        dev = (m.get("gpu") or {}).get("name") or m.get("device", "cpu")
        load = c.get("loadavg_before")
        parts.append(f"`{r['_file']}`: {r['timestamp'][:16]}, {m['cpu_model']}, {m['usable_cpus']} cores, "
                     f"{m['torch_threads']} torch thread{'s' if m['torch_threads'] != 1 else ''}, torch {m['torch']}, "
                     f"{dev} {m.get('dtype', '')}, {r.get('clock', 'wall')} clock; load average "
                     f"{load[0] if load else '?'}"
                     + (" (**loaded**: other jobs were running)" if c.get("machine_loaded") else " (idle)"))
    return "Measured: " + "; ".join(parts) + "."


def section_operators(records: list[dict]) -> list[str]:
    rows: dict[tuple[int, str], dict] = {}
    for r in records:  # oldest first: newer records overwrite
        for row in r["results"]["rows"]:
            rows[(row["n"], row["operator"])] = row
    ns = sorted({n for n, _ in rows})
    ops = [o for o in OP_ORDER if any((n, o) in rows for n in ns)]
    labels = {o: next(rows[(n, o)]["label"] for n in ns if (n, o) in rows) for o in ops}
    table = format_table(["operator"] + [f"N={n}" for n in ns],
                         [[labels[o]] + [(f"{fmt_num(rows[(n, o)]['speedup_vs_mha'], 2, '×')} / "
                                          f"{fmt_num(rows[(n, o)]['flop_ratio'], 2, '×')} "
                                          f"({fmt_num(rows[(n, o)]['fraction_of_flop_ratio'], 2)})")
                                         if (n, o) in rows else "–" for n in ns] for o in ops])
    mha = format_table(["MHA (SDPA) forward"] + [f"N={n}" for n in ns],
                       [["median"] + [fmt_time(rows[(n, "mha")]["median_s"]) if (n, "mha") in rows else "–"
                                      for n in ns]])
    out = ["### Operators vs MHA (`python -m benchmarks.operators`)", "",
           f"D={records[-1]['settings']['dim']}, {records[-1]['settings']['heads']} heads, batch "
           f"{records[-1]['settings']['batch']}, forward only. Cell: measured speed-up over MHA / analytic FLOP ratio "
           "(op+ft FLOPs, paper §4.8) (fraction of the FLOP-ratio speed-up reached). "
           "Target: Hyena-X/Y ≥ 0.8 at N=16384.", "", table, "", mha, ""]
    for r in records:
        for key, t in r.get("summary", {}).get("targets", {}).items():
            out.append(f"- {key}: {t['value']:.2f} (target {t['target']}) → {'met' if t['met'] else '**missed**'}")
    out += ["", machine_line(records), ""]
    return out


def section_mamba(r: dict) -> list[str]:
    rows = r["results"]["rows"] if isinstance(r["results"], dict) else r["results"]
    table = format_table(["B×N×H", "chunked", "recurrent", "speed-up", "max abs err"],
                         [[x["setting"] + (" (paper)" if x["paper_setting"] else ""), fmt_time(x["chunked"]["median_s"]),
                           fmt_time(x["recurrent"]["median_s"]), fmt_num(x["speedup"], 1, "×"),
                           f"{x['max_abs_err']:.1e}"] for x in rows])
    s = r["summary"]
    out = ["### Mamba-2 chunked scan vs sequential recurrence (`python -m benchmarks.mamba2_scan`)", "",
           "headdim 16, d_state 64, chunk 64, fp32. Targets: speed-up ≥ 10×, max abs err ≤ 1e-4.", "", table, "",
           f"- all targets met: {'yes' if s['all_targets_met'] else '**no**'} (min speed-up {s['min_speedup']:.1f}×, "
           f"max abs err {s['max_abs_err']:.1e})"]
    diag = r["results"].get("diagnostics") if isinstance(r["results"], dict) else None
    if diag:
        ns = diag["exp_ns_per_element"]
        out.append("- `torch.exp` per element on this CPU: " + ", ".join(f"{k} {v:.1f} ns" for k, v in ns.items())
                   + " — the chunked scan exponentiates underflowing arguments (see benchmarks/README.md)")
    out += ["", machine_line([r]), ""]
    return out


def section_pixart(r: dict) -> list[str]:
    s, res = r["summary"], r["results"]
    f = res["analytic_flops"]
    rows = []
    for mode in ("compose", "full"):
        if mode in res:
            rows.append([mode, fmt_time(res[mode]["ungrafted_s"]), fmt_time(res[mode]["grafted_s"]),
                         fmt_num(res[mode]["speedup"], 2, "×")])
    rows.append(["analytic FLOPs", fmt_flops(f["ungrafted"]), fmt_flops(f["grafted"]),
                 fmt_num(f["speedup"], 2, "×")])
    rows.append(["paper (H100, one forward)", "–", "–", f"{s['paper_speedup']:.2f}×"])
    out = ["### PixArt-Σ, Hyena-X in 14 of 28 layers (`python -m benchmarks.pixart_speedup`)", "",
           f"{f['tokens']} tokens, batch 1, 300 caption tokens, random weights. "
           + ("compose = per-block timings at full size, composed to 28 layers (not a whole-model measurement)."
              if "compose" in res else ""), "",
           format_table(["", "ungrafted", "grafted", "speed-up"], rows), ""]
    if "mha_share_of_latency" in s:
        out.append(f"- self-attention share of the ungrafted forward: {s['mha_share_of_latency']:.0%} measured, "
                   f"{f['mha_share_of_flops']:.0%} of FLOPs (paper: > 62 % of latency)")
    out += ["", machine_line([r]), ""]
    return out


def section_sampling(r: dict) -> list[str]:
    set_ = r["settings"]
    table = format_table(["precision", "suite sampler", "DiTPipeline", "suite / pipeline", "max output diff"],
                         [[x["precision"], fmt_time(x["suite"]["median_s"]), fmt_time(x["pipeline"]["median_s"]),
                           fmt_num(x["ratio"], 2, "×"), f"{x['max_abs_output_diff']:.1e}"] for x in r["results"]])
    return ["### Sampling throughput (`python -m benchmarks.sampling`)", "",
            f"{set_['num_samples']} samples, batch {set_['batch_size']}, DDIM {set_['steps']}, CFG "
            f"{set_['guidance_scale']}, tiny DiT ({set_['model']['num_layers']} layers, {set_['model']['tokens']} "
            f"tokens), same model/scheduler/noise on both sides. Target ≥ 1×.", "", table, "", machine_line([r]), ""]


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def section_grid(r: dict) -> list[str]:
    """Cold / warm wall-clock against the README's targets, read from the record (also from records written before
    ``grid.py`` stored its targets), and the summed step time per kind."""
    s = r["summary"]
    targets = {**wall_targets(s, idle=not r.get("contention", {}).get("machine_loaded", True),
                              full_grid=r["settings"].get("rows") in (None, "all")),
               **{k: v for k, v in s.items() if k in ("target_cold", "target_warm")}}
    cold = s["cold_wall_s"]
    rows = [["preset / rows", f"{r['settings']['preset']} / {r['settings']['rows']}"],
            ["cold run", (f"{fmt_time(cold)} ({cold / 60:.1f} min)" if cold else "– (not in this record)")
             + (f"; {targets['target_cold']['target']}: {_met(targets['target_cold']['met'])}"
                if "target_cold" in targets else "")],
            ["warm re-run", fmt_time(s["warm_wall_s"]) + (" (nothing launched)" if s["warm_launched_nothing"] else "")
             + f"; {targets['target_warm']['target']}: {_met(targets['target_warm']['met'])}"],
            ["capture runs / executions", f"{s['capture_runs']} / {s['capture_executions']}"],
            ["teacher forward passes during capture", s["teacher_forward_passes_in_capture"]],
            ["stage-1 runs sharing them", s["stage1_runs"]],
            ["one capture for the whole grid", _met(s["target_one_capture"]["met"])]]
    kinds = (r.get("results") or {}).get("store", {}).get("kinds", {})
    if kinds:
        rows.append(["summed step time", ", ".join(f"{k} {fmt_time(v['step_seconds'])} ({v['runs']} runs)"
                                                   for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]
                                                                      ["step_seconds"]) if v["step_seconds"] >= 10)])
    out = ["### Table-3 grid through the driver (`python -m benchmarks.grid`)", "", format_table(["", ""], rows), ""]
    comparison = (r.get("results") or {}).get("row_comparison")
    if comparison:
        op, base = comparison["operator"], comparison["baseline"]
        out += [f"Row costs, `{op}` vs `{base}` rows with the same layers (summed step time; target ≤ "
                f"{comparison['target']}×: {_met(comparison['met'])}). Floor: {row_costs.FLOOR_NOTE}.", "",
                format_table(list(row_costs.TABLE_HEADERS), row_costs.table_rows(comparison)), ""]
    return out + [machine_line([r]), ""]


def section_conclusions(r: dict) -> list[str]:
    return ["### The tiny grid's conclusions vs Table 4 (`python -m benchmarks.conclusions`)", "",
            f"Checked on `{r['results']['summary']}`" + (f" (before: `{r['results']['before']}`)"
                                                         if r["results"].get("before") else "") + ".", "",
            r["table"], ""]


def section_paired_samples(r: dict) -> list[str]:
    st = r["settings"]
    return ["### Close calls vs sample count (`python -m benchmarks.paired_samples`)", "",
            f"Paired FID difference ± its paired bootstrap std ({st['draws']} shared draws) at each sample count, from "
            f"one {st['max_samples']:,}-sample draw per model of `{st['results']}` (the first n samples = an n-sample "
            "eval); * = 95 % interval excludes 0. Sampling noise only, not training-seed variance.", "",
            r["table"], "", machine_line([r]), ""]


def section_eval_overhead(r: dict) -> list[str]:
    su = r["summary"]
    return ["### Eval step with per-sample data for paired comparisons (`python -m benchmarks.eval_overhead`)", "",
            f"Eval step body of {len(r['settings']['runs'])} tiny table3 runs, this code vs "
            f"`{r['settings']['baseline_code']}`, best of {r['settings']['rounds']} alternating rounds; FIDs "
            f"identical: {su.get('fids_identical')}; target ≤ 1.05×: {_met(bool(su.get('target', {}).get('met')))}.",
            "", r["table"], "", machine_line([r]), ""]


def section_mamba2_row(r: dict) -> list[str]:
    st = r["settings"]
    return ["### Mamba-2 vs Hyena-X in the tiny DiT (`python -m benchmarks.mamba2_row`)", "",
            f"Operator in layers {st['layers']} of the tiny DiT, {st['threads']} thread; stage 2 = one step at batch "
            f"{st['stage2_batch']}, sample = one CFG forward at batch {st['sample_batch']}, stage 1 = one operator "
            f"step at batch {st['stage1_batch']}. Target: Mamba-2 ≤ 1.5× Hyena-X.", "", r["table"], "",
            machine_line([r]), ""]


def render(results: Path) -> str:
    lines = ["## Performance", "",
             "Latest figures from `benchmarks/` (JSON records with every timing in `benchmarks/results/`; regenerate "
             "this section with `python -m benchmarks.report`). Each script compares its cases round-robin in one run "
             "on one machine and reports medians.", ""]
    sections = {"operators": lambda rs: section_operators(rs), "mamba2_scan": lambda rs: section_mamba(rs[-1]),
                "pixart_speedup": lambda rs: section_pixart(rs[-1]), "sampling": lambda rs: section_sampling(rs[-1]),
                "grid": lambda rs: section_grid(rs[-1]), "conclusions": lambda rs: section_conclusions(rs[-1]),
                "mamba2_row": lambda rs: section_mamba2_row(rs[-1]),
                "paired_samples": lambda rs: section_paired_samples(rs[-1]),
                "eval_overhead": lambda rs: section_eval_overhead(rs[-1])}
    for name in BENCHMARKS:
        records = load(results, name)
        quick = not records
        if quick:
            records = load(results, name, quick=True)
        if records:
            section = sections[name](records)
            if quick:
                section[0] += " — `--quick` record only"
            lines += section
        else:
            lines += [f"### {name}", "", f"(no record yet: run `python -m benchmarks.{name}`)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    print(render(p.parse_args(argv).results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
