"""Regenerate the LaTeX tables and figures from the result store.

    python -m tables.build --results results                    # every preset and target found under results/
    python -m tables.build --results results --preset tiny --target table3
    python -m tables.build --results results --preset paper --include-missing   # placeholders for unrun targets
    python -m tables.build --results results --target table3 --plugin mypkg.my_op  # a plugin operator's rows

Reads ``<results>/<preset>/<target>/summary.json`` and writes ``<results>/<preset>/tables/<target>.tex`` and
``<results>/<preset>/figures/<name>.{png,pdf,csv}``; a full build also writes ``tables/all.tex``, a standalone
document that inputs every table. Problems in the result store (missing or malformed files, rows not yet done) are
listed on stderr; they never stop the build. A target whose summary.json exists but cannot be read (truncated,
not JSON) is skipped with a stderr line and its files already rendered are left as they are (exit code 1): a
corrupt summary never replaces a table with "not yet run" placeholders. The benchmark driver calls
``build_target`` when a target finishes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from graft_core.runtime import provenance
from graft_core.operators.registry import load_plugins
from graft_core.presets import PRESETS

from .common import LATEX_PACKAGES
from .loader import Summary, load_summary_with_meta, summary_path
from .registry import ALIASES, TARGETS, canonical_target, skipped

TABLE_TARGETS = ("table1", "table2", "table3", "table5", "table6", "fig4a", "fig4b", "search")
NO_OUTPUT = ("baseline",)  # driver targets without a table of their own (their rows appear in every other table)
FIGURE_TARGETS = ("table1", "table3", "fig2", "fig4a", "fig4b", "search")


def _renderer(target: str) -> Callable[..., str]:
    from . import fig4, search, table1, table2, table3, table5, table6

    return {
        "table1": table1.render_table1, "table2": table2.render_table2, "table3": table3.render_table3,
        "table5": table5.render_table5, "table6": table6.render_table6, "fig4a": fig4.render_fig4a,
        "fig4b": fig4.render_fig4b, "search": search.render_search,
    }[target]


def _write(path: Path, data: bytes) -> Path:
    from graft_core.runtime.paths import atomic_write_bytes

    atomic_write_bytes(path, data)
    return path


def render_target(summary: Summary, *, git_rev_: str, results_dir: Path) -> dict[str, bytes]:
    """``{relative output path: bytes}`` for one loaded target (pure: no disk access)."""
    target, name, preset = summary.target, summary.name, summary.preset
    out: dict[str, bytes] = {}
    try:
        source = summary.path.relative_to(results_dir).as_posix()
    except ValueError:
        source = summary.path.as_posix()
    if not summary.found:
        source += " (not found)"
    if target in TABLE_TARGETS:
        tex = _renderer(target)(summary.rows, preset=preset, git_rev=git_rev_, results_rev=summary.git_rev,
                                source=source, target=name)
        if summary.comparisons:  # paired FID differences: a float after the table, a forest plot
            from .paired import paired_frame, plot_paired, render_paired

            tex += render_paired(summary.comparisons, summary.rows, preset=preset, target=name)
            frame = paired_frame(summary.comparisons, summary.rows)
            if frame["diff"].notna().any():
                from .figures import save_figure

                for file, data in save_figure(plot_paired(frame, preset, name), Path(f"{name}_paired")).items():
                    out[f"figures/{file}"] = data
                out[f"figures/{name}_paired.csv"] = frame.to_csv(index=False, lineterminator="\n").encode()
        out[f"tables/{name}.tex"] = tex.encode()
    if target in FIGURE_TARGETS:
        from .figures import figure_outputs

        for name, data in figure_outputs(target, summary.rows, preset).items():
            out[f"figures/{name}"] = data
    return out


def code_rev() -> str:
    """The revision of the code building the tables, in the format ``summary.json`` records
    (``graft_core.runtime.provenance.git_rev``: ``<sha>[-dirty]`` or ``$GRAFTBENCH_GIT_REV``); ``unknown`` outside a
    checkout."""
    return provenance.git_rev() or "unknown"


def build_target(results_dir: str | Path, preset: str, target: str, *, git_rev: str | None = None,
                 out_dir: str | Path | None = None) -> list[Path]:
    """Render one target of one preset and write its files; returns the paths written.

    ``out_dir`` defaults to ``<results_dir>/<preset>``; ``git_rev`` (the code revision named in every header)
    defaults to ``code_rev()``. Never raises on bad or missing results; writes nothing for an unreadable summary.
    """
    if target in NO_OUTPUT:
        return []
    return _build(results_dir, preset, target, git_rev, out_dir)[0]


def _build(results_dir, preset, target, rev, out_dir) -> tuple[list[Path], Summary]:
    results_dir = Path(results_dir)
    canonical_target(target)  # an unknown name fails here, listing the known ones
    summary = load_summary_with_meta(results_dir, preset, target)
    if summary.unreadable:  # keep what an earlier, good summary rendered: placeholders would be worse
        return [], summary
    out_dir = Path(out_dir) if out_dir else results_dir / preset
    files = render_target(summary, git_rev_=rev or code_rev(), results_dir=results_dir)
    return [_write(out_dir / rel, data) for rel, data in sorted(files.items())], summary


def standalone_document(table_names: list[str]) -> str:
    """A document that ``\\input``s the given tables (compile it inside ``<preset>/tables``)."""
    lines = [
        "% generated by `python -m tables.build`; do not edit",
        r"\documentclass[10pt]{article}",
        r"\usepackage[a4paper,margin=1.2cm]{geometry}",
        rf"\usepackage{{{','.join(LATEX_PACKAGES)}}}",
        r"\begin{document}",
    ]
    lines += [rf"\input{{{name}}}" for name in table_names]
    lines += [r"\end{document}", ""]
    return "\n".join(lines)


def discover_presets(results_dir: Path) -> list[str]:
    if not results_dir.is_dir():
        return []
    found = []
    for d in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        if any((d / t / "summary.json").exists() for t in list(TARGETS) + list(ALIASES)):
            found.append(d.name)
    return found


def _report(summary: Summary) -> list[str]:
    where = f"{summary.preset}/{summary.name}"
    lines = [f"{where}: {p}" for p in summary.problems]
    rows = [r for r in summary.rows if not skipped(r)]  # diagnostic rows a preset does not plan are not "missing"
    not_done: dict[str, int] = {}
    for r in rows:
        if r["status"] != "done":
            not_done[r["status"]] = not_done.get(r["status"], 0) + 1
    if not_done:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(not_done.items()))
        ids = [r["row"] for r in rows if r["status"] != "done"]
        shown = ", ".join(ids[:8]) + (f", … (+{len(ids) - 8})" if len(ids) > 8 else "")
        lines.append(f"{where}: {sum(not_done.values())} of {len(rows)} rows not done ({detail}): {shown}")
    for r in summary.rows:
        error = (r.get("extra") or {}).get("error")
        if r["status"] == "failed" and error:
            lines.append(f"{where}: {r['row']} failed: {str(error).splitlines()[-1][:300]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tables.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, type=Path, help="result store root (holds <preset>/<target>/)")
    parser.add_argument("--preset", action="append", help="preset(s) to build (default: every preset found)")
    parser.add_argument("--target", action="append",
                        help=f"target(s) to build: {', '.join(TARGETS)} (table4 = table3); default: all found")
    parser.add_argument("--include-missing", action="store_true",
                        help="also build targets with no summary.json yet (every reproduced cell a placeholder)")
    parser.add_argument("--git-rev", default=None, help="code revision to name in the headers (default: HEAD)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE (dotted name or .py path) first, so that the grid rows of the operators "
                             "it registers are table rows with their own labels (repeatable)")
    args = parser.parse_args(argv)
    try:
        load_plugins(args.plugin)
    except ImportError as e:
        parser.error(str(e))

    try:
        targets = [t for t in args.target if canonical_target(t)] if args.target else list(TARGETS)
    except ValueError as e:
        parser.error(str(e))
    targets = list(dict.fromkeys(targets))
    if not args.results.is_dir():
        parser.exit(2, f"error: --results {args.results} is not a folder; give the result store root that "
                       f"`python -m benchmark.run --results-dir` wrote (default: results)\n")
    presets = args.preset or discover_presets(args.results) or ["tiny"]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        parser.exit(2, f"error: unknown preset {unknown[0]!r}; choose one of: {', '.join(sorted(PRESETS))}\n")
    rev = args.git_rev or code_rev()
    t_all = time.perf_counter()
    n_files = failures = skipped = 0
    for preset in presets:
        built_tables = []
        for target in targets:
            exists = summary_path(args.results, preset, target).exists()
            if not exists and not args.target and not args.include_missing:
                continue
            t0 = time.perf_counter()
            try:
                paths, summary = _build(args.results, preset, target, rev, None)
            except Exception as e:  # a bug in one renderer must not stop the other targets
                failures += 1
                print(f"{preset}/{target}: FAILED ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
                continue
            if summary.unreadable:
                skipped += 1
                print(f"{preset}/{target}: SKIPPED, its files left as they were: {summary.unreadable}",
                      file=sys.stderr, flush=True)
                continue
            n_files += len(paths)
            dt = time.perf_counter() - t0
            state = "" if summary.found else " [no summary: placeholders only]"
            print(f"{preset}/{target}: {len(paths)} files in {dt:.2f} s{state}", flush=True)
            for line in _report(summary):
                print(line, file=sys.stderr, flush=True)
            built_tables += [p.stem for p in paths if p.suffix == ".tex"]
        if built_tables and not args.target:
            tables_dir = args.results / preset / "tables"
            present = {p.stem for p in tables_dir.glob("*.tex")}
            names = [t for t in TABLE_TARGETS if t in present]
            if "table4" in present and "table3" not in present:  # same table; never both (duplicate labels)
                names.insert(2, "table4")
            _write(tables_dir / "all.tex", standalone_document(names).encode())
            n_files += 1
    total = time.perf_counter() - t_all
    print(f"built {n_files} files for preset(s) {', '.join(presets)} in {total:.2f} s")
    return 1 if failures or skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
