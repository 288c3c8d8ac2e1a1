"""``python -m benchmark.run`` — run paper targets (tables / figures) on a preset, resumably, through submitit.

    python -m benchmark.run --list                                   # targets and their row counts
    python -m benchmark.run table3                                   # tiny preset, Slurm if sbatch answers else local
    python -m benchmark.run table3 --preset paper --dry-run          # planned runs, layers, resources, GPU-hours
    python -m benchmark.run all --preset paper --dry-run --json      # every step's memory / hours / disk vs profile
    python -m benchmark.run table3 --preset paper --executor slurm --profile paper --slurm partition=h100
    python -m benchmark.run table3 --status                          # done / running / pending / failed / missing
    python -m benchmark.run all --executor local

A second run of the same command launches nothing new (finished runs are found on disk, alive jobs in Slurm);
failed or corrupt runs are launched again. A command plans its targets once and hands the plans to the launch and
the summaries. Results: ``results/<preset>/runs/<kind>/<id>/`` and one
``results/<preset>/<target>/summary.json`` per target (then ``tables.build``). Exit codes: 0 ok, 1 some runs failed,
2 usage or setup error (one line on stderr, nothing launched; also an OS error such as a full disk or a read-only
results folder, after which the same command resumes: ``--debug`` shows the traceback instead).
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import json
import os
import signal
import sys
import threading
import time
from typing import Callable

from benchmark import resources, targets as registry
from benchmark.cost import estimate, teacher_present
from benchmark.dag import Planner
from benchmark.executors import EXECUTORS, LaunchError, launch, make_launcher, resolve_executor
from benchmark.family import family_for_row, family_of
from benchmark.hints import with_hint
from benchmark.launch import all_nodes, plan_targets, refresh_blocked, select_rows, to_launch, write_summaries
from benchmark.preflight import problems as prerequisite_problems
from benchmark.profiles import Profile, ProfileError, available as available_profiles, default_profile
from benchmark.status import counts_line, node_states, row_state
from benchmark.store import Store
from graft_core.grafting.accounting import efficiency
from graft_core.stages.capture_size import format_bytes
from graft_core.config import stable_hash
from graft_core.errors import SETUP_ERRORS
from graft_core.operators.registry import use_plugins
from graft_core.presets import PRESETS, get_preset


class UsageError(Exception):
    pass


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (``--jobs 0`` or ``-3`` would launch nothing, silently)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmark.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="targets: " + ", ".join(registry.names()))
    p.add_argument("targets", nargs="*", help="targets to run (see --list); 'all' = every target")
    p.add_argument("--preset", default="tiny", help="tiny (default, CPU minutes) | paper (DiT-XL/2) | paper-smoke "
                                                    "(the paper preset at rehearsal scale) | micro (tests)")
    p.add_argument("--executor", default="auto", help="auto (Slurm when sbatch answers, else local) | debug (in "
                                                      "this process) | local (subprocesses) | slurm")
    p.add_argument("--profile", help=f"Slurm resource profile in slurm/profiles/ ({', '.join(available_profiles())}; "
                                     f"default: paper for --preset paper, else cpu) or a path to a .json file")
    p.add_argument("--slurm", action="append", default=[], metavar="[KIND.]KEY=VALUE",
                   help="override a profile setting, e.g. partition=h100, account=x, stage2.timeout_min=2880")
    p.add_argument("--rows", help="launch only these rows (comma-separated ids or shell patterns, e.g. "
                                   "'baseline,attn-hyena_x-*'); summaries still list every row")
    p.add_argument("--results-dir", default=os.environ.get("GRAFTBENCH_RESULTS", "results"),
                   help="results root (default: ./results or $GRAFTBENCH_RESULTS)")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="--executor local: rows run at a time in subprocesses, each with cores/jobs threads (default: "
                        "one per core, up to 2: on 2 cores two 1-thread jobs did 35 %% more stage-2 steps and 19 %% "
                        "more sampling than one 2-thread job, benchmarks/results/levers-threads.json)")
    p.add_argument("--wait", action="store_true", help="Slurm: block until the submitted jobs end")
    p.add_argument("--dry-run", action="store_true", help="print planned runs, layers, resources and cost; write "
                                                          "nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: print one JSON document instead (every "
                                                       "step's estimated GPU memory, hours and disk vs the profile)")
    p.add_argument("--status", action="store_true", help="print each row's state (asks Slurm for recorded jobs)")
    p.add_argument("--list", action="store_true", help="list the targets")
    p.add_argument("--validate", action="store_true", help="instantiate every target on every preset and every "
                                                           "resource profile")
    p.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE (dotted name or .py path) first: it registers operators and their Table-3 "
                        "rows, or a model family and its target (repeatable; the jobs get it through "
                        "$GRAFTBENCH_PLUGINS)")
    p.add_argument("--steps", metavar="MODULE:FUNCTION",
                   help="run every step through this function instead of graft_core (a driver check, e.g. "
                        "benchmark.fakes.steps:fake_execute: records derived from the run ids, no torch)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an OS or setup error instead of "
                                                        "its one-line summary")
    return p.parse_args(argv)


def fail(msg: str) -> int:
    """Each line of ``msg`` as one ``error:`` line (preflight reports every missing prerequisite at once)."""
    for line in msg.splitlines() or [""]:
        print(f"error: {line}", file=sys.stderr)
    return 2


def results_dir_problem(results_dir, *, write: bool) -> str | None:
    """Why ``--results-dir`` cannot hold the store (None when it can). Checked before anything reads or writes there,
    so that a file in its place or a read-only folder is one line instead of a traceback from deep in a launch.
    ``write``: probe with a real file (``os.access`` says yes to root on a read-only folder)."""
    import tempfile
    from pathlib import Path

    path = Path(results_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())  # "/" always exists
    if not existing.is_dir():
        return (f"--results-dir {results_dir}: {existing} is a file, not a folder; pass a folder (it is created "
                f"if missing) or move the file away")
    if not write:
        return None
    try:  # in the nearest folder that exists: a refused launch must not leave a new empty folder behind
        with tempfile.TemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as err:
        return (f"--results-dir {results_dir}: cannot write in {existing} ({err.strerror or err}); pass a folder "
                f"you can write to, or fix its permissions")
    return None


def os_error_line(err: OSError, results_dir) -> str:
    """One line for an OS error of the store: the path, what went wrong, what to do. Finished runs are never touched
    by the failed write (every record is written atomically), so the advice is always "fix it and run again"."""
    where = err.filename or f"a file under {results_dir}"
    what = err.strerror or str(err) or type(err).__name__
    again = "then run the same command again: finished runs are kept and not redone"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        todo = f"free space on that disk (or pass --results-dir on another one), {again}"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        todo = f"pass a --results-dir you can write to or fix the folder's permissions, {again}"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        todo = f"a file is in the place of a folder there; move it away, {again}"
    else:
        todo = f"fix the cause, {again}"
    return f"{where}: {what}; {todo}"


# ------------------------------------------------------------------------------------------------------------ views
def cmd_list(preset: str) -> int:
    print(f"targets (rows on the {preset} preset):")
    for m in registry.TARGET_MODULES:
        alias = f" (alias of {m.ALIAS_OF})" if getattr(m, "ALIAS_OF", None) else ""
        print(f"  {m.NAME:<9} {len(m.rows(preset)):>3} rows  {m.TITLE}{alias}")
    print(f"  {'all':<9}          every paper target above (not aliases, not studies beyond the paper: search)")
    return 0


def cmd_validate() -> int:
    count = 0
    for preset in PRESETS:
        for m in registry.TARGET_MODULES:
            for row in m.rows(preset):
                Planner().expand(m.NAME, row)
                count += 1
    for name in available_profiles():
        Profile.load(name)
    print(f"ok: {count} rows on {len(PRESETS)} presets, {len(available_profiles())} profiles "
          f"({', '.join(available_profiles())})")
    return 0


def _layers(rp) -> str:
    if rp.blocked:
        return f"{rp.row.strategy} (after {rp.waiting_for.desc} {rp.waiting_for.run_id})"
    if rp.layers is None:
        return "–"
    return f"[{','.join(map(str, rp.layers))}] ({len(rp.layers)})"


def cmd_status(store: Store, plans, log=print) -> int:
    states = node_states(store, all_nodes(plans))
    for tp in plans:
        log(f"{tp.name} ({store.preset}) — {tp.module.TITLE}")
        row_states = []
        for rp in tp.row_plans:
            state, error = row_state(rp, states)
            row_states.append(state)
            job = ""
            alive = [states[n.key] for n in rp.nodes if states[n.key].alive]
            if alive:
                job = f"job {alive[0].job_id}"
            detail = ""
            if error and state == "failed":
                bad = next((n for n in rp.nodes if states[n.key].state == "failed"), None)
                where = f" [{store.run(bad.kind, bad.run_id).log.relative_to(store.results_dir)}]" if bad else ""
                detail = f"  {error}{where}"
            log(f"  {rp.row.id:<40} {state:<8} {job}{detail}")
        log(counts_line(row_states))
    return 0


def cmd_dry_run(store: Store, plans, profile: Profile | None, executor_name: str, log=print) -> int:
    nodes = all_nodes(plans)
    states = node_states(store, nodes, ask_slurm=False)
    todo = to_launch(states)
    gpu = any(tp.row_plans and tp.row_plans[0].row.preset.teacher.pretrained for tp in plans)
    for tp in plans:
        log(f"{tp.name} ({store.preset}) — {tp.module.TITLE}: {len(tp.row_plans)} rows")
        for rp in tp.row_plans:
            kinds: dict[str, list[int]] = {}
            for n in rp.nodes:
                k = kinds.setdefault(n.kind, [0, 0])
                k[0] += 1
                k[1] += n.key in todo
            runs = ", ".join(f"{k}×{t}" if t > 1 else k for k, (t, _) in kinds.items())
            new = sum(v[1] for v in kinds.values())
            state, _ = row_state(rp, states)
            log(f"  {rp.row.id:<36} layers {_layers(rp):<48}{_table4_columns(rp)} runs: {runs}  "
                f"[{state}; {new} to launch]")
    planned = [n for n in nodes if n.key in todo]
    counts: dict[str, int] = {}
    for n in planned:
        counts[n.kind] = counts.get(n.kind, 0) + 1
    log(f"runs: {len(nodes)} planned (shared steps counted once), {len(nodes) - len(planned)} done or running, "
        f"{len(planned)} to launch: " + (", ".join(f"{c} {k}" for k, c in counts.items()) or "none"))
    if profile is not None:
        log(f"resources (profile {profile.name}, used with --executor slurm):")
        for kind in [k for k in counts] + ["collect"]:
            log(f"  {kind:<9} {profile.describe(kind)}")
    captures = [n for n in nodes if n.kind == "capture"]
    if captures:
        need = sum(capture_disk(n) for n in captures)
        new_need = sum(capture_disk(n) for n in captures if n.key in todo)
        log(f"capture disk: {format_bytes(need)} for {len(captures)} capture run(s) of the plan "
            f"({format_bytes(new_need)} still to write; fp16 operator inputs + targets, under the results folder)")
    if resources.applies(profile):
        for line in resources.dry_run_lines(nodes, profile, capture_disk):
            log(line)
    log(f"estimated cost to launch: {estimate(planned, gpu=gpu).line()}")
    log(f"estimated cost of all planned runs: {estimate(nodes, gpu=gpu).line()}")
    later = runs_after_blocked(plans, {n.key for n in nodes})
    if later:
        blocked = sum(rp.blocked for tp in plans for rp in tp.row_plans)
        log(f"plus, once the {blocked} row(s) waiting for a locality or search result are planned (their stage 2 and "
            f"eval, counted per row with stand-in layers of the same number): {estimate(later, gpu=gpu).line()}")
    log(f"executor: {executor_name}; dry run — nothing was written or submitted")
    return 0


def runs_after_blocked(plans, planned: set[str]) -> list:
    """The runs that rows still waiting for a locality or search result will add once it exists, estimated by planning
    them with stand-in results of the same size (the first layers; the primary operator). Each row counts its own runs
    (two searches usually choose differently), so rows whose results coincide are counted twice: an upper bound."""
    def stand_in_search(node):
        s = node.config["search"]
        layers = s["layers"] or max(1, round(s["flops"] / max(c["saved_flops"] for c in node.config["candidates"])))
        first = [c for c in node.config["candidates"] if c["op"] == s["primary"]][:layers]
        return [[c["layer"], c["operator"], c["options"]] for c in first]

    planner = Planner(locality_reader=lambda node, cfg: list(range(node.config["teacher"]["num_layers"])),
                      search_reader=stand_in_search)
    later: dict[str, object] = {}
    for tp in plans:
        for rp in tp.row_plans:
            if rp.blocked:
                for n in planner.expand(tp.name, rp.row).nodes:
                    if n.key not in planned:
                        later.setdefault(f"{tp.name}/{rp.row.id}/{n.key}", n)
    return list(later.values())


def _table4_columns(rp) -> str:
    """The row's analytic ΔFLOPs(op) / ΔFLOPs(ft) / ΔParam in % (Table 4's columns, ``graft_core.grafting.accounting``)."""
    graft, layers = rp.row.graft, rp.layers
    if graft is None or not layers or rp.row.kind != "graft":
        return ""
    if "operators" in rp.row.extra:  # a searched per-layer choice of operators: the sum over its plans
        from benchmark.families.dit import efficiency as plan_efficiency

        stage2 = next((n for n in rp.nodes if n.kind == "stage2"), None)
        e = plan_efficiency(rp.row.preset, stage2.config["plan"] if stage2 else rp.final.config["model"]["plan"])
        return f" ΔFLOPs op {e['d_flops_op']:+.2f} ft {e['d_flops_ft']:+.2f} ΔParam {e['d_param']:+.2f} %"
    t = rp.row.preset.teacher
    plan = dataclasses.replace(graft, layers=tuple(layers)).plan()
    e = efficiency(plan, num_layers=t.num_layers, dim=t.hidden_size, num_heads=t.num_attention_heads,
                   seq_len=t.num_tokens)
    return f" ΔFLOPs op {e['d_flops_op']:+.2f} ft {e['d_flops_ft']:+.2f} ΔParam {e['d_param']:+.2f} %"


def capture_disk(node) -> int:
    """Bytes one capture run writes (``graft_core.stages.capture_size`` at its family's sizes: ``Family.capture_bytes``)."""
    return family_of(node.config).capture_bytes(node)


# ------------------------------------------------------------------------------------------------------------ checks
def preflight(store: Store, plans, log=print, real_steps: bool = True) -> None:
    """Problems that must stop a launch (LaunchError); ``real_steps``: the jobs run graft_core (not a ``--steps``
    stand-in), so every prerequisite is checked by content and an untrained teacher will be trained."""
    if real_steps:  # a --steps stand-in needs no data; the real steps need every prerequisite, checked by content
        needed: dict[str, tuple] = {}
        for tp in plans:
            for rp in tp.row_plans:
                # a family's own rows (PixArt-Σ's) need its prerequisites, not the DiT/ImageNet ones
                family = family_for_row(rp.row.kind)
                prefix = family.prerequisite_prefix if family is not None else ""
                kinds = {prefix + n.kind for n in rp.nodes if not store.run(n.kind, n.run_id).done.exists()}
                if kinds:
                    # rows of one preset differ in their stage-2 data (table2: 0.63/5/10 %, fig4a: 20 %): each
                    # distinct row preset is checked, so every subset the launch needs is
                    entry = needed.setdefault(stable_hash(rp.row.preset), (rp.row.preset, set()))
                    entry[1].update(kinds)
        problems = prerequisite_problems(needed)
        if problems:
            raise LaunchError("\n".join(problems + ["nothing launched"]))
    teachers = {n.key: n for tp in plans for rp in tp.row_plans for n in rp.nodes if n.kind == "teacher"}
    for n in teachers.values() if real_steps else ():
        if not store.run(n.kind, n.run_id).done.exists() and not teacher_present(n.config):
            steps = family_of(n.config).train_steps(n.config)
            log(f"note: no trained {n.config['preset']} teacher in graft_core/assets or the cache: it will be "
                f"trained first ({steps} steps, ~{steps * 0.36 / 60:.0f} min on 2 CPU cores)")


# ------------------------------------------------------------------------------------------------------------ main
def load_steps(spec: str) -> Callable:
    """``module:function`` → the step runner it names (``UsageError`` when it does not exist)."""
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr, None) if attr else None
    except ImportError as err:
        raise UsageError(f"--steps {spec}: cannot import {module_name} ({err})") from None
    if not callable(fn):
        raise UsageError(f"--steps {spec}: expected MODULE:FUNCTION naming a callable (e.g. "
                         f"benchmark.fakes.steps:fake_execute)")
    return fn


def main(argv: list[str] | None = None, *, execute: Callable | None = None) -> int:
    """The command line; ``execute`` replaces the real steps of every job (as ``--steps`` does)."""
    args = parse_args(argv)
    log = print
    try:
        get_preset(args.preset)
        use_plugins(args.plugin)  # before planning: a plugin adds rows to the targets
    except (ValueError, ImportError) as err:
        return fail(str(err))
    if args.list:
        return cmd_list(args.preset)
    if args.validate:
        return cmd_validate()
    if args.json and not args.dry_run:
        return fail("--json goes with --dry-run (e.g. `python -m benchmark.run all --preset paper --dry-run --json`)")
    if args.executor not in EXECUTORS:
        return fail(f"unknown executor {args.executor!r}; choose one of: {', '.join(EXECUTORS)}")
    requested = args.targets or (list(registry.TARGETS) if args.status else [])
    if not requested:
        return fail("no target given; run `python -m benchmark.run --list` to see them "
                    "(e.g. `python -m benchmark.run table3`)")
    try:
        modules = registry.expand(requested)
    except registry.UnknownTarget as err:
        return fail(str(err))
    try:
        profile = Profile.load(args.profile or default_profile(args.preset), args.slurm)
    except ProfileError as err:
        return fail(str(err))
    if args.steps:
        try:
            execute = load_steps(args.steps)
        except UsageError as err:
            return fail(str(err))
    problem = results_dir_problem(args.results_dir, write=not (args.status or args.dry_run))
    if problem:
        return fail(problem)
    store = Store(args.results_dir, args.preset)
    row_patterns = [r.strip() for r in (args.rows or "").split(",") if r.strip()]
    plans = plan_targets(store, modules)  # the one planning of this command
    selected = select_rows(plans, row_patterns)
    if row_patterns and not any(tp.row_plans for tp in selected):
        return fail(f"--rows {args.rows!r} matches no row of {', '.join(tp.name for tp in plans)}; "
                    f"see `python -m benchmark.run {' '.join(requested)} --dry-run`")
    if args.status:
        return cmd_status(store, plans, log)
    if args.dry_run and args.json:
        nodes = all_nodes(selected)
        todo = to_launch(node_states(store, nodes, ask_slurm=False))
        print(json.dumps(resources.dry_run_document(nodes, todo, profile, args.preset, capture_disk), indent=1))
        return 0
    if args.dry_run:
        return cmd_dry_run(store, selected, profile, args.executor, log)

    start = time.time()
    main_thread = threading.current_thread() is threading.main_thread()
    # a killed launcher cancels its local jobs as Ctrl-C does
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        executor = resolve_executor(args.executor, log)
        preflight(store, selected, log, real_steps=execute is None)
        if executor in ("slurm", "local") and resources.applies(profile):  # every step fits before any is submitted
            todo = to_launch(node_states(store, all_nodes(selected), ask_slurm=False))
            refusal = resources.launch_refusal([n for n in all_nodes(selected) if n.key in todo], profile,
                                                capture_disk)
            if refusal:
                raise LaunchError(refusal)
        launcher = make_launcher(executor, store, profile=profile, jobs=args.jobs, progress=not args.quiet, log=log,
                                 target_names=[m.NAME for m in modules], profile_overrides=args.slurm,
                                 execute=execute, rows=row_patterns, debug=args.debug)
        result = launch(launcher, selected)
    except LaunchError as err:
        return fail(str(err))
    except OSError as err:  # no space, permissions, a file in the way: the launcher's own record writes
        if args.debug:
            raise
        return fail(os_error_line(err, args.results_dir))
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, a re-run resumes", file=sys.stderr)
        return 130
    except Exception as err:  # the errors the graft_core functions raise for missing weights / metrics
        if _is_setup_error(err) and not args.debug:
            return fail(with_hint(err).splitlines()[0])
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if executor == "slurm" and args.wait and result.jobs:
        wait_for_slurm(store, plans, log)
    try:
        plans = refresh_blocked(store, plans)  # rows whose locality result arrived during the launch
        summaries = write_summaries(store, plans, log=log)
    except OSError as err:  # the runs are recorded; only the summaries are missing
        if args.debug:
            raise
        return fail(os_error_line(err, args.results_dir))
    launched = result.launched
    if launched:
        log(f"launched {launched} run{'s' if launched != 1 else ''} in {len(result.units)} job"
            f"{'s' if len(result.units) != 1 else ''} ({executor}); {time.time() - start:.1f} s")
    else:
        log(f"launched 0 runs: nothing to launch, every planned run is done or already queued "
            f"({time.time() - start:.1f} s)")
    bad = 0
    for name, summary in summaries.items():
        states = [r["status"] for r in summary["rows"]]
        bad += states.count("failed")
        log(f"{name}: {counts_line(states)} → {store.summary_path(name)}")
    return 1 if bad else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _is_setup_error(err: Exception) -> bool:
    """Missing weights or prepared data: the user's to fix (one line, exit 2), not a bug."""
    return isinstance(err, SETUP_ERRORS)


def wait_for_slurm(store: Store, plans, log=print, poll: float = 30.0) -> None:
    nodes = all_nodes(plans)
    last = None
    while True:
        states = node_states(store, nodes)
        alive = [s for s in states.values() if s.alive]
        line = counts_line([s.state for s in states.values()], noun="runs")
        if line != last:
            log(f"{time.strftime('%H:%M:%S')} {line}")
            last = line
        if not alive:
            return
        time.sleep(poll)


if __name__ == "__main__":
    sys.exit(main())
