"""The project's import graph, read with ``ast`` (nothing is imported): layers import downward only.

Fails on (a) a cycle among project modules (a package's ``__init__`` importing its own submodules aside), (b)
``graft_core`` importing ``benchmark``, ``tables`` or ``submitit``, (c) ``tables`` importing ``benchmark``, (d) a
production module (``graft_core``, ``benchmark``, ``tables``; not the ``benchmarks/`` scripts) importing the test
fakes (``benchmark.fakes.steps``, ``benchmark.fakes.prerequisites``) or ``tests``; and on ``graft_core`` reading a ``SLURM_``
environment variable. Function-local imports count like module-level ones.

``python tests/test_import_graph.py`` prints the module count, the edge count and the longest import chain.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("graft_core", "benchmark", "tables", "benchmarks")
FAKES = ("benchmark.fakes", "tests")
PRODUCTION = ("graft_core", "benchmark", "tables")
# graft_core's parts from the bottom up (top-level modules by name): each imports only parts listed before it
GRAFT_CORE_LAYERS = ("errors", "config", "presets", "runtime", "operators", "table_rows", "data", "models", "metrics",
                     "evaluation", "grafting", "stages", "text_to_image")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    files = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            files[module_name(path)] = path
    return files


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name ``path`` imports (relative imports resolved; ``from a import b`` yields ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if _is_package(path) else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            out.add(prefix)
            out.update(f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*")
    return out


def resolve(imported: str, modules: set[str]) -> str | None:
    """The project module an imported name refers to (the longest matching module prefix), else None."""
    parts = imported.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def build_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module → project modules it imports, project module → every dotted name it imports)."""
    files = project_files()
    modules = set(files)
    graph: dict[str, set[str]] = {}
    raw: dict[str, set[str]] = {}
    for name, path in files.items():
        raw[name] = imported_names(name, path)
        deps = {resolve(i, modules) for i in raw[name]} - {None, name}
        if _is_package(path):  # a package re-exporting its own submodules is not a cycle
            deps = {d for d in deps if not d.startswith(name + ".")}
        graph[name] = deps
    return graph, raw


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a closed path ``[a, b, ..., a]``, or None (iterative DFS, deterministic order)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in graph}
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        colour[start] = GREY
        path = [start]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
                continue
            if child not in colour:
                continue
            if colour[child] == GREY:
                return path[path.index(child):] + [child]
            if colour[child] == WHITE:
                colour[child] = GREY
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest import chain without a repeated module (memoised when the graph is acyclic)."""
    acyclic = find_cycle(graph) is None
    memo: dict[str, list[str]] = {}

    def chain(n: str, seen: frozenset) -> list[str]:
        if acyclic and n in memo:
            return memo[n]
        best: list[str] = []
        for d in sorted(graph[n] - seen):
            c = chain(d, seen | {d})
            if len(c) > len(best):
                best = c
        memo[n] = [n] + best
        return memo[n]

    return max((chain(n, frozenset({n})) for n in sorted(graph)), key=len, default=[])


def _under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def forbidden(raw: dict[str, set[str]]) -> list[str]:
    rules = [("graft_core", ("benchmark", "tables", "submitit")), ("tables", ("benchmark",))]

    def shortest(hits: set[str]) -> list[str]:  # `from a.b import c` yields a.b and a.b.c: name a.b once
        return sorted(h for h in hits if not any(h.startswith(o + ".") for o in hits))

    bad = []
    for mod, names in sorted(raw.items()):
        for src, banned in rules:
            if _under(mod, (src,)):
                bad += [f"{mod} imports {n}" for n in shortest({n for n in names if _under(n, banned)})]
        if _under(mod, PRODUCTION) and not _under(mod, FAKES):
            bad += [f"{mod} (production) imports the test fake {n}"
                    for n in shortest({n for n in names if _under(n, FAKES)})]
    return bad


def upward_imports(graph: dict[str, set[str]], layers: tuple[str, ...] = GRAFT_CORE_LAYERS) -> list[str]:
    """``graft_core`` imports from a part higher in ``layers`` than the importer's own (a part is the folder or
    top-level module right under ``graft_core``); a module in no listed part is reported too."""
    def part(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[0] == "graft_core" else None

    bad = []
    for mod, deps in sorted(graph.items()):
        here = part(mod)
        if here is None:
            continue
        if here not in layers:
            bad.append(f"{mod} is in no part of GRAFT_CORE_LAYERS")
            continue
        bad += [f"{mod} ({here}) imports {d} ({part(d)}), a higher part" for d in sorted(deps)
                if part(d) in layers and layers.index(part(d)) > layers.index(here)]
    return bad


def slurm_env_reads(path: Path, root: Path = ROOT) -> list[str]:
    """``os.environ[...]`` / ``os.environ.get(...)`` / ``os.getenv(...)`` / ``env.get(...)`` / ``"SLURM_..." in env``
    with a literal key starting with ``SLURM_``."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def slurm(node) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("SLURM_")

    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and slurm(node.slice):
            hits.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("get", "getenv", "pop", "setdefault") and node.args and slurm(node.args[0]):
            hits.append(node.lineno)
        elif isinstance(node, ast.Compare) and slurm(node.left) and \
                any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            hits.append(node.lineno)
    return [f"{path.relative_to(root)}:{line}" for line in sorted(hits)]


# ------------------------------------------------------------------------------------------------------------ tests
def test_no_import_cycles():
    graph, _ = build_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layering_rules():
    _, raw = build_graph()
    bad = forbidden(raw)
    assert not bad, "forbidden imports:\n  " + "\n  ".join(bad)


def test_graft_core_parts_import_downward_only():
    """The folder layout says the architecture: runtime → operators → data → models → evaluation → grafting → stages
    → text-to-image, never back up (a module that imports across would make the folders lie)."""
    graph, _ = build_graph()
    bad = upward_imports(graph)
    assert not bad, "graft_core imports against its layout:\n  " + "\n  ".join(bad)
    assert upward_imports({"graft_core.data.x": {"graft_core.stages.y"}, "graft_core.stages.y": {"graft_core.data.x"},
                           "graft_core.zzz": set()}) == [
        "graft_core.data.x (data) imports graft_core.stages.y (stages), a higher part",
        "graft_core.zzz is in no part of GRAFT_CORE_LAYERS"]


def test_graft_core_reads_no_slurm_variables():
    hits = [h for path in sorted((ROOT / "graft_core").rglob("*.py")) for h in slurm_env_reads(path)]
    assert not hits, "graft_core reads Slurm variables (make them parameters the driver passes): " + ", ".join(hits)


def test_errors_module_is_a_leaf():
    """The error classes are caught by the driver before anything heavy is imported: their module imports only the
    standard library, and every engine module takes them from there (one definition each)."""
    _, raw = build_graph()
    assert {n.split(".")[0] for n in raw["graft_core.errors"]} <= {"__future__", "pathlib"}
    import graft_core.errors as errors

    names = [n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)]
    defined = {n: [m for m, path in project_files().items() if f"\nclass {n}(" in path.read_text()] for n in names}
    assert all(where == ["graft_core.errors"] for where in defined.values()), defined


def test_the_checker_sees_cycles_and_rules(tmp_path):
    """The helpers catch what they must (a checker that finds nothing proves nothing)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert longest_chain({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) == ["a", "b", "c"]
    raw = {"graft_core.x": {"submitit.helpers"}, "tables.y": {"benchmark.store"},
           "benchmark.z": {"benchmark", "benchmark.fakes.steps"},  # `from benchmark import testing`
           "benchmark.fakes.steps": {"benchmark.store"}, "benchmarks.grid": {"benchmark.fakes.steps"}}
    assert forbidden(raw) == ["benchmark.z (production) imports the test fake benchmark.fakes.steps",
                              "graft_core.x imports submitit.helpers", "tables.y imports benchmark.store"]
    src = tmp_path / "m.py"
    src.write_text("import os\nos.environ.get('SLURM_ARRAY_TASK_ID')\nos.environ['SLURM_X']\n"
                   "def f(env):\n    return 'SLURM_Y' in env\nos.environ.get('RANK')\n")
    assert slurm_env_reads(src, root=tmp_path) == ["m.py:2", "m.py:3", "m.py:5"]


if __name__ == "__main__":
    g, r = build_graph()
    print(f"{len(g)} modules, {sum(len(v) for v in g.values())} edges")
    print("cycle:", " -> ".join(find_cycle(g) or ["none"]))
    c = longest_chain(g)
    print(f"longest chain ({len(c)} modules): {' -> '.join(c)}")
    for line in forbidden(r):
        print("forbidden:", line)
    sys.exit(0)
