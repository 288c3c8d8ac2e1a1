"""Model families: what the one planner and the one set of step executors ask of a model, registered by name.

A family is one object (torchtitan's ``TrainSpec`` is the model): which runs are its (a node-body key, ``marker``:
PixArt-Σ's runs carry ``"pixart"``; DiT's, the default family, carry ``"teacher"``), which row kind it plans and the
nodes it adds for such a row (``expand``: its prerequisite nodes, e.g. PixArt-Σ's synthetic pairs), the sites its
blocks offer to the operators, and the job-side hooks the executors of ``benchmark.steps`` call: its teacher,
the data a capture and stage 2 read, the student built from a plan, evaluation, latency and cost. The family is
*looked up from* a node's body, never written into it, so run ids are what they were before families existed.

Built-in families (``benchmark.families.dit``, ``benchmark.families.pixart``) are imported on the first lookup, as
the operators' catalogue is; a plug-in module (``--plugin``, ``$GRAFTBENCH_PLUGINS``, the ``graftbench.operators``
entry points) calls ``register_family`` as it calls ``register_operator``.

Attention contract: the operators replace a block's single-stream self-attention (``attn1`` of a diffusers
``BasicTransformerBlock``, tokens in → tokens out) and its MLP (``ff``). DiT, PixArt-Σ and Latte blocks fit it; joint
text-image attention (SD3, Flux) or linear attention (Sana) does not: such a family lists the sites it does offer in
``sites``, and a row that grafts another site is refused in one line (``check_site``).
"""
from __future__ import annotations

import abc
import importlib
from typing import Any, Callable

BUILTIN_MODULES = ("benchmark.families.dit", "benchmark.families.pixart")


class Family(abc.ABC):
    """The hooks marked abstract are what every family must say about its model (a plug-in missing one is refused at
    registration, in one line naming them); the others have the DiT behaviour as default. See the module docstring."""

    name: str = ""
    marker: str = ""  # the node-body key that marks this family's runs ("" only for the default family)
    row_kind: str = ""  # the row kind whose nodes ``expand`` builds ("" : the planner's own rows)
    sites: tuple[str, ...] = ("attn", "mlp")  # the graftable sites its blocks offer
    executors: dict[str, Callable] = {}  # step kinds only this family has (its prerequisite nodes)

    @property
    def prerequisite_prefix(self) -> str:
        """How preflight tells the step kinds of this family's rows from the DiT/ImageNet ones."""
        return f"{self.name}:"

    def owns(self, config: dict) -> bool:
        return bool(self.marker) and self.marker in config

    def check_site(self, row_id: str, site: str) -> None:
        if site not in self.sites:
            raise ValueError(f"row {row_id!r}: the {self.name} family offers the sites {', '.join(self.sites)}, "
                             f"not {site!r} (its attention does not fit the operators' contract there)")

    # ------------------------------------------------------------------------------------------------- planning
    def expand(self, target: str, row, add: Callable, nodes: list):
        """The nodes of one row of ``row_kind`` (a family with a ``row_kind`` must override it: checked at
        registration); the default family's rows are the planner's own."""
        raise ValueError(f"family {self.name!r} plans no rows of its own (it declares no row_kind); "
                         f"row {getattr(row, 'id', row)!r} of target {target!r} must be a planner row")

    @abc.abstractmethod
    def capture_bytes(self, node) -> int:
        """Bytes of one capture node's stored activation pairs (disk and ``--dry-run``)."""

    @abc.abstractmethod
    def cost(self, node, gpu: bool) -> tuple[float, int]:
        """(minutes, samples) of a node for ``--dry-run``'s cost table."""

    def teacher_present(self, config: dict) -> bool:
        return True

    def train_steps(self, config: dict) -> int:
        return 0

    def summary(self, record: dict) -> dict:
        """The fields of an eval record that join a row's ``extra`` in the summary (none by default)."""
        return {}

    # ------------------------------------------------------------------------------------------------- resources
    # What ``benchmark.resources`` (the feasibility check before submission) asks of a family's model.
    block_probe: str = ""  # the probe of one of its blocks in benchmarks/results/paper_scale.json
    params_key: str = ""  # its parameter count's key there ...
    published_params: int = 0  # ... and the published count used when that file is absent
    published_cost_kinds: tuple[str, ...] = ()  # step kinds whose hours are the paper's bounds (``benchmark.cost``)
    resource_constants: dict = {}  # its assumed constants, listed in the ``--dry-run --json`` document

    @abc.abstractmethod
    def model_dims(self, config: dict) -> tuple[int, int, int]:
        """(width, tokens, layers) of the node's model, from its hashed body (no model built)."""

    def step_resources(self, kind: str, config: dict, gpus: int, cpus: int) -> dict:
        """Estimates of a step kind only this family knows: any of ``gpu_mem``, ``mem``, ``disk`` (GB), ``hours``; they
        replace the generic ones of ``benchmark.resources`` (none by default)."""
        return {}

    # ------------------------------------------------------------------------------------------------- job side
    @abc.abstractmethod
    def teacher(self, ctx, *, train_if_missing: bool = False):
        """The pretrained model a graft starts from, on the job's device."""

    @abc.abstractmethod
    def teacher_record(self, ctx) -> dict:
        """What the ``teacher`` step records (its identity, parameter count)."""

    def engine_preset(self, ctx, teacher):
        """The preset the engine (capture, finetune) reads, with this teacher's sizes and noise schedule."""
        return ctx.preset()

    @abc.abstractmethod
    def sizes(self, ctx):
        """The teacher's ``TeacherConfig`` (width, heads, tokens) that stage 1 builds operators at."""

    def capture_data(self, ctx, teacher) -> Any:
        return None  # the preset's data source

    def capture_record(self, ctx) -> dict:
        return {}

    def stage1_data(self, ctx, teacher, split: str) -> Any:
        """``x0`` and ``labels`` of a split (``stage1`` | ``heldout``) for the online stage 1 (``stage1_online``):
        the preset's data source's subset by default, as a capture of that split reads."""
        from graft_core.data.sources import source_of

        p = self.engine_preset(ctx, teacher)
        return source_of(p).subset(p, split)

    def stage2_data(self, ctx) -> Any:
        return None

    def checkpointing(self, ctx, teacher) -> bool:
        return False

    @abc.abstractmethod
    def build_student(self, teacher, plan: dict | None, dirs):
        """The teacher with the plan's operators (from their stage-1 folders ``dirs``) swapped in; a copy of the
        teacher when ``plan`` is None."""

    @abc.abstractmethod
    def evaluate(self, ctx) -> dict:
        """The ``eval`` step: the family's metrics of the node's model."""

    def latency(self, ctx) -> dict:
        """The ``latency`` step (only families whose rows plan latency nodes measure it: DiT, PixArt-Σ)."""
        raise ValueError(f"family {self.name!r} measures no latency: its rows must not plan a latency step "
                         f"(run {ctx.run.run_id}); implement Family.latency to add one")


_FAMILIES: dict[str, Family] = {}
_STATE = {"ready": False}


def register_family(family: Family | type) -> Family:
    """Register ``family`` (an instance, or a class: it is instantiated; usable as a class decorator). A family
    missing a required hook, or planning a row kind without ``expand``, is refused here in one line, not when a job
    first calls the hook."""
    cls = family if isinstance(family, type) else type(family)
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise ValueError(f"family {cls.__name__} ({cls.__module__}) does not implement the required hook(s) "
                         f"{', '.join(missing)} of benchmark.family.Family")
    if getattr(cls, "row_kind", "") and cls.expand is Family.expand:
        raise ValueError(f"family {cls.__name__} ({cls.__module__}) plans rows of kind {cls.row_kind!r} but does not "
                         f"implement Family.expand")
    obj = family() if isinstance(family, type) else family
    if not obj.name:
        raise ValueError(f"{type(obj).__name__}: a family needs a name")
    known = _FAMILIES.get(obj.name)
    if known is not None and type(known).__qualname__ != type(obj).__qualname__:
        raise ValueError(f"family {obj.name!r} is registered already (by {type(known).__module__})")
    clash = next((f for f in _FAMILIES.values() if f.name != obj.name and
                  ((obj.marker and f.marker == obj.marker) or (obj.row_kind and f.row_kind == obj.row_kind))), None)
    if clash is not None:
        raise ValueError(f"family {obj.name!r}: marker {obj.marker!r} / row kind {obj.row_kind!r} is family "
                         f"{clash.name!r}'s already")
    _FAMILIES[obj.name] = obj
    return family


def _ensure_loaded() -> None:
    if _STATE["ready"]:
        return
    _STATE["ready"] = True
    for module in BUILTIN_MODULES:  # by name, as the operators' catalogue: the family modules import this one
        importlib.import_module(module)
    from graft_core.operators.registry import load_plugins

    load_plugins()  # entry points and $GRAFTBENCH_PLUGINS, which may register families


def families() -> list[Family]:
    _ensure_loaded()
    return list(_FAMILIES.values())


def default_family() -> Family:
    _ensure_loaded()
    return next(f for f in _FAMILIES.values() if not f.marker)


def family_of(config: dict) -> Family:
    """The family whose marker key the node body carries; the default (DiT) family otherwise."""
    return next((f for f in families() if f.owns(config)), None) or default_family()


def family_for_row(kind: str) -> Family | None:
    """The family that plans rows of ``kind`` (None: the planner's own row kinds)."""
    return next((f for f in families() if f.row_kind and f.row_kind == kind), None)


def row_kinds() -> tuple[str, ...]:
    return tuple(f.row_kind for f in families() if f.row_kind)
