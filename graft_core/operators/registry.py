"""The one catalogue of replacement operators and of the table rows they give — torch-free.

Why a registry and not an if/elif chain on substrings (as the official ``replacement_factory.py``): a plan names its
operator by an exact string that ends up in run identities, so a lookup must either find that exact name or fail with
the list of known names. Why torch-free: the driver plans and hashes every run, and the tables render, without
loading torch (3-4 s on two cores); the operator class is imported only when an operator is built.

Everything the driver, the tables and the accounting need is declared once, at registration:

- ``register_operator(name, site=..., options=..., cost=..., label=..., latex=..., paper=...)`` — the operator: its
  site (``attn`` replaces ``attn1``, ``mlp`` replaces ``ff``), its hyperparameters with their defaults, whether its
  weights are tied to one token count (``seq_len_bound``), its analytic FLOP/parameter formula (``cost``), and — when
  ``label`` is given — its Table-3/4 grid row (stem = the operator name, default options).
- ``register_row(stem, operator=..., options=..., label=..., latex=..., paper=...)`` — a further grid row of an
  operator with other options (``mlp_r3`` = ``mlp`` with ratio 3), declared next to its operator.

Built-in operators are declared in ``graft_core.operators.catalogue`` (class referenced as ``"module:Class"``, imported
lazily); a plugin module decorates its class with ``@register_operator(...)`` and is named by ``--plugin MODULE`` (or
a ``.py`` path), by the ``GRAFTBENCH_PLUGINS`` environment variable (comma-separated; how ``--plugin`` reaches job
processes) or by an entry point in the ``graftbench.operators`` group. Any lookup loads them first. The same
modules may register a model family (the driver's ``benchmark.family.register_family``). A plugin that cannot be
imported raises ``PluginError``: one line naming the file and line at fault.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

SITES = ("attn", "mlp")
# Model-level sizes every ``build`` call receives; an operator's constructor gets the ones it declares.
MODEL_ARGS = ("num_heads", "seq_len")
PLUGIN_ENV = "GRAFTBENCH_PLUGINS"
ENTRY_POINT_GROUP = "graftbench.operators"
# The operator each DiT block has at each site (the teacher's; what self-grafting re-initialises and what the
# efficiency columns compare against): MHA, and the MLP with expansion ratio 4.
TEACHER_OPERATOR: dict[str, tuple[str, dict]] = {"attn": ("mha", {}), "mlp": ("mlp", {"ratio": 4})}


@dataclass(frozen=True)
class OpCost:
    """One layer's cost of an operator: FLOPs split op/ft, parameters, and whose formula gave the FLOPs."""

    flops_op: int
    flops_ft: int
    params: int
    source: str = "paper §4.8"


# cost(dim, seq_len, num_heads, **options) -> OpCost; options arrive complete (declared defaults filled in).
CostFn = Callable[..., OpCost]


@dataclass(frozen=True)
class OperatorInfo:
    """What plans, targets and accounting need to know about an operator without building it."""

    name: str
    site: str  # "attn" | "mlp"
    impl: Any = field(repr=False)  # the nn.Module class, or "module:Class" imported on first use
    defaults: tuple[tuple[str, Any], ...] = ()  # the operator's hyperparameters and their default values
    seq_len_bound: bool = False  # weights only valid for the token count they were built for
    cost: CostFn | None = field(default=None, repr=False, compare=False)
    module: str = ""  # the module that registered it (a plugin's name travels with its runs)

    @property
    def builtin(self) -> bool:
        return self.module == "graft_core.operators.catalogue"

    @property
    def cls(self) -> type:
        """The operator class (imported on first use; its keyword defaults must equal the declared ones)."""
        return _resolve(self)

    def options(self) -> tuple[str, ...]:
        """Hyperparameters accepted beyond ``dim`` and the model-level sizes."""
        return tuple(k for k, _ in self.defaults)

    def resolved_options(self, options: dict | None = None) -> dict[str, Any]:
        """The declared defaults overridden by ``options`` (unknown names: ``ValueError``)."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ValueError(f"operator {self.name!r} does not take option(s) {unknown}; "
                             f"accepted: {list(self.options()) or 'none'}")
        return {**dict(self.defaults), **options}


@dataclass(frozen=True)
class CatalogueRow:
    """One operator configuration of the Table-3/4 grid (run at 50 / 75 / 100 % of the layers of its site).

    ``stem`` names the rows (``<site>-<stem>-<strategy>``) and the summary's ``operator`` field; ``label`` is plain
    text (driver, logs), ``latex`` the table label, ``short`` the figure legend, ``paper`` the operator name of the
    published row in ``tables/paper/table4.csv`` (``None``: not in the paper).
    """

    stem: str
    site: str
    operator: str
    options: tuple[tuple[str, Any], ...]
    label: str
    latex: str | None  # None: the tables escape ``label``
    short: str
    paper: str | None = None
    module: str = ""

    @property
    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)


_OPERATORS: dict[str, OperatorInfo] = {}
_ROWS: dict[str, CatalogueRow] = {}
_RESOLVED: dict[str, type] = {}
_LOADED: list[str] = []  # plugin specs imported so far, in order
_STATE = {"ready": False, "loading": False}


# ---------------------------------------------------------------------------------------------------- declaring
def register_operator(name: str, *, site: str, impl: str | None = None, options: dict | None = None,
                      seq_len_bound: bool = False, cost: CostFn | None = None, label: str | None = None,
                      latex: str | None = None, short: str | None = None, paper: str | None = None):
    """Declare an operator; with ``label`` also its grid row (stem = ``name``, default options).

    As a class decorator (``@register_operator("my_op", site="attn", ...)``) the options default to the
    constructor's keyword defaults. With ``impl="module:Class"`` (the built-ins) it registers at once, ``options``
    must list every hyperparameter, and the class is checked against them when first imported.
    """
    if site not in SITES:
        raise ValueError(f"operator {name!r}: site must be one of {SITES}, got {site!r}")
    module = _caller_module()
    _ensure_loaded()  # built-ins first, so that plugin rows come after the paper's

    def declare(target) -> OperatorInfo:
        if name in _OPERATORS:
            raise ValueError(f"operator {name!r} registered twice ({_OPERATORS[name].module} and {module})")
        if label is not None and name in _ROWS:
            raise ValueError(f"catalogue row {name!r} registered twice ({_ROWS[name].module} and {module})")
        declared = options
        if isinstance(target, type):
            if not _is_module_class(target):
                raise ValueError(f"operator {name!r}: {target.__name__} is not an nn.Module")
            declared = _constructor_defaults(target) if options is None else options
        info = OperatorInfo(name=name, site=site, impl=target, defaults=_freeze(declared or {}),
                            seq_len_bound=seq_len_bound, cost=cost, module=module)
        if isinstance(target, type):
            _check_defaults(info, target)  # before anything is registered: a refused operator leaves no trace
            _RESOLVED[name] = target
        _OPERATORS[name] = info
        if label is not None:
            _add_row(name, info, {}, label, latex, short, paper, module)
        return info

    if impl is not None:
        return declare(impl)

    def deco(cls: type) -> type:
        declare(cls)
        return cls

    return deco


def register_row(stem: str, *, operator: str, options: dict | None = None, label: str, latex: str | None = None,
                 short: str | None = None, paper: str | None = None) -> CatalogueRow:
    """Declare a further grid row of a registered operator with other options (``mlp_r3``: ``mlp``, ratio 3)."""
    module = _caller_module()
    _ensure_loaded()
    info = _OPERATORS.get(operator)
    if info is None:
        raise ValueError(f"row {stem!r}: operator {operator!r} is not registered (register it first)")
    info.resolved_options(options)  # unknown option names fail here, not at run time
    return _add_row(stem, info, options or {}, label, latex, short, paper, module)


def _add_row(stem, info, options, label, latex, short, paper, module) -> CatalogueRow:
    if stem in _ROWS:
        raise ValueError(f"catalogue row {stem!r} registered twice ({_ROWS[stem].module} and {module})")
    row = CatalogueRow(stem=stem, site=info.site, operator=info.name, options=_freeze(options), label=label,
                       latex=latex,
                       short=short if short is not None else label, paper=paper, module=module)
    _ROWS[stem] = row
    return row


# ---------------------------------------------------------------------------------------------------- looking up
def available(site: str | None = None) -> tuple[str, ...]:
    """Registered operator names (sorted), optionally only those that fit ``site``."""
    if site is not None and site not in SITES:
        raise ValueError(f"unknown site {site!r}; choose one of {SITES}")
    _ensure_loaded()
    return tuple(sorted(n for n, i in _OPERATORS.items() if site is None or i.site == site))


def operator_info(name: str) -> OperatorInfo:
    """Metadata of one operator; an unknown name raises ``ValueError`` listing the known ones."""
    _ensure_loaded()
    try:
        return _OPERATORS[name]
    except KeyError:
        raise ValueError(f"unknown operator {name!r}; known operators: {', '.join(available())} (a plugin's operator "
                         f"needs its module: --plugin MODULE or ${PLUGIN_ENV})") from None


def catalogue_rows(site: str | None = None) -> tuple[CatalogueRow, ...]:
    """The grid rows in registration order (built-ins in the paper's order, then plugins), optionally of one site."""
    _ensure_loaded()
    return tuple(r for r in _ROWS.values() if site is None or r.site == site)


def catalogue_row(stem: str) -> CatalogueRow:
    _ensure_loaded()
    try:
        return _ROWS[stem]
    except KeyError:
        raise ValueError(f"unknown catalogue row {stem!r}; known: {', '.join(_ROWS)}") from None


def build(name: str, dim: int, *, num_heads: int, seq_len: int, **options):
    """A freshly initialised operator mapping ``[B, N, D] -> [B, N, D]``.

    ``num_heads`` and ``seq_len`` describe the host model; they are passed on only to operators whose constructor
    uses them. ``options`` are the operator's own hyperparameters (e.g. ``ratio=3`` for ``mlp``), on top of the
    declared defaults; an unknown option is a ``ValueError`` naming the accepted ones.
    """
    info = operator_info(name)
    resolved = info.resolved_options(options)
    cls = info.cls
    params = inspect.signature(cls.__init__).parameters
    model_kwargs = {k: v for k, v in (("num_heads", num_heads), ("seq_len", seq_len)) if k in params}
    return cls(dim, **model_kwargs, **resolved)


# ---------------------------------------------------------------------------------------------------- plugins
def load_plugins(specs: Iterable[str] = ()) -> list[str]:
    """Import plugin modules (dotted names or ``.py`` paths) that register operators; returns every spec loaded.

    Called without arguments it loads the built-ins, the ``graftbench.operators`` entry points and
    ``$GRAFTBENCH_PLUGINS`` (what every lookup does first). A spec already loaded is not imported again.
    """
    _ensure_loaded()
    for spec in specs:
        _load_one(spec)
    return list(_LOADED)


def use_plugins(specs: Iterable[str]) -> list[str]:
    """``--plugin``: load ``specs`` here and name them in ``$GRAFTBENCH_PLUGINS``, which the processes this one
    starts (local subprocesses, Slurm jobs: both inherit the environment) read before their first lookup."""
    specs = [str(Path(s).resolve()) if _is_path(s) else s for s in specs]
    load_plugins(specs)
    merged = list(dict.fromkeys(plugin_specs_from_env() + specs))
    if merged:
        os.environ[PLUGIN_ENV] = ",".join(merged)
    return merged


def plugin_specs_from_env() -> list[str]:
    return [s.strip() for s in os.environ.get(PLUGIN_ENV, "").split(",") if s.strip()]


def _ensure_loaded() -> None:
    if _STATE["ready"] or _STATE["loading"]:
        return
    _STATE["loading"] = True
    try:
        importlib.import_module("graft_core.operators.catalogue")
        for ep in _entry_points():
            _load_one(ep.value.partition(":")[0], label=f"entry point {ep.name!r}")
        for spec in plugin_specs_from_env():
            _load_one(spec, label=f"${PLUGIN_ENV}")
        _STATE["ready"] = True
    finally:
        _STATE["loading"] = False


def _entry_points():
    from importlib import metadata

    try:
        return tuple(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except TypeError:  # Python < 3.10
        return tuple(metadata.entry_points().get(ENTRY_POINT_GROUP, ()))


def _load_one(spec: str, label: str = "--plugin") -> None:
    key = str(Path(spec).resolve()) if _is_path(spec) else spec
    if key in _LOADED:
        return
    path = Path(key) if _is_path(spec) else None
    name = f"graftbench_plugin_{path.stem}" if path is not None else spec
    try:
        if path is not None:
            if not path.is_file():
                raise PluginError(f"plugin {spec!r} ({label}) cannot be imported: no such file {path}")
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except PluginError:
        raise
    except Exception as err:  # a syntax error, a missing module, a name that clashes: one line, file and line
        sys.modules.pop(name, None)
        raise PluginError(f"plugin {spec!r} ({label}) cannot be imported: {_where(err, path or _origin(spec))}{type(err).__name__}: "
                          f"{getattr(err, 'msg', None) if isinstance(err, SyntaxError) else err}") from None
    _LOADED.append(key)


class PluginError(ImportError):
    """A plug-in that cannot be imported; its message is one line naming the file and line at fault."""


def _origin(spec: str) -> Path | None:
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError):
        return None
    return Path(found.origin).resolve() if found is not None and found.origin else None


def _where(err: BaseException, path: Path | None) -> str:
    """``file:line: `` of the fault: a syntax error's own position, else the plug-in's deepest frame in the
    traceback (the import or the registration that failed), else the deepest frame outside importlib."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}: "
    machinery = (importlib.__file__, __file__)
    frames = [(f.f_code.co_filename, line) for f, line in traceback.walk_tb(err.__traceback__)
              if not f.f_code.co_filename.startswith("<") and f.f_code.co_filename not in machinery]
    own = [fr for fr in frames if path is not None and Path(fr[0]).resolve() == path]
    chosen = (own or frames or [None])[-1]
    return f"{chosen[0]}:{chosen[1]}: " if chosen else ""


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec


# ---------------------------------------------------------------------------------------------------- helpers
def _resolve(info: OperatorInfo) -> type:
    cls = _RESOLVED.get(info.name)
    if cls is None:
        module_name, _, attr = str(info.impl).partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        if not _is_module_class(cls):
            raise ValueError(f"operator {info.name!r}: {info.impl} is not an nn.Module")
        _check_defaults(info, cls)
        _RESOLVED[info.name] = cls
    return cls


def _is_module_class(cls: type) -> bool:
    from torch import nn  # the class exists, so torch is loaded already

    return isinstance(cls, type) and issubclass(cls, nn.Module)


def _constructor_defaults(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    out = {}
    for p in params.values():
        if p.name in ("self", "dim") + MODEL_ARGS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is p.empty:
            raise ValueError(f"{cls.__name__}: option {p.name!r} needs a default (plans may omit it)")
        out[p.name] = p.default
    return out


def _check_defaults(info: OperatorInfo, cls: type) -> None:
    """The class's keyword defaults are the declared ones (the declaration is what plans and accounting read)."""
    actual = _freeze(_constructor_defaults(cls))
    if actual != info.defaults:
        raise ValueError(f"operator {info.name!r}: {cls.__name__} takes options {dict(actual)}, but the "
                         f"registration declares {dict(info.defaults)}")


def _freeze(options: dict) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in dict(options).items()))


def _caller_module() -> str:
    frame = inspect.currentframe()
    try:
        frame = frame.f_back.f_back
        return frame.f_globals.get("__name__", "") if frame else ""
    finally:
        del frame

