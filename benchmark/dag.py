"""Rows → step runs (a small DAG per row), with run ids that are hashes of exactly what can change a result.

Step kinds and what their config (= identity) holds; every config also carries ``kind``, ``version`` and the preset
name, never a path or an executor setting:

==========  =====================================================================================================
teacher     teacher config (+ data config when trained here)                       → ``graft_core.models.teacher``
capture     teacher, data, split (stage1 | heldout), seed, dtype (+ the one (layer, site) pair when all pairs would
            exceed PER_PAIR_CAPTURE_BYTES; + capture_input when not "noised")      → ``capture.capture_activations``
stage1      teacher, data, capture ids, site, operator, options, layer, Stage1Config with objective and lr resolved
            (so "L1 by default" and "L1 asked for" are one run), bf16                → ``distill.distill_layer``
stage1_online
            every layer of a plan at once, from one teacher forward per batch (no capture): the family's teacher and
            data (PixArt-Σ: the synthetic pairs' runs and the two splits' ranges), plan, Stage1Config resolved as for
            stage1, seed of the draws, bf16 (Table 5)                              → ``online.distill_online``
stage2      teacher, data, plan (or none: the control), init (stage-1 run ids per layer | random), Stage2Config
                                                                                     → ``finetune.finetune``
eval        teacher, data, classifier, EvalConfig, the model (teacher | stage-2 run | plan + stage-1 runs | random)
            → ``evaluate.evaluate_model`` (``in_process``); with ``eval.protocol == "adm"`` also the sample run ids,
            and the step merges their shards and scores them                       → ``adm_eval.evaluate_npz``
sample      the eval body + task i of ``eval.sample_tasks`` (adm protocol only)      → ``sample_at_scale``
floor/noise data, classifier, EvalConfig                                      → ``metric_floor`` / ``noise_control``
locality    teacher, LocalityConfig                                                  → ``graft_core.grafting.locality``
activation_stats
            teacher, data, site, layers, outlier σ, the stage-1 capture id of each layer's (layer, site) (Table 1
            i/ii)                                             → ``activation_stats.activation_statistics``
latency     teacher, the model (as eval), batch and repeats         → ``depth_width.measure_speedup`` (Table 6)
search      teacher, data, the search (strategy, site, primary operator, budget: layers or FLOPs to save, the probe
            config), its candidates (layer, operator, FLOPs saved, stage-1 run id)  → ``graft_core.grafting.selection``
synthetic   the PixArt-Σ family's prerequisite: the teacher, the sampler, the pair count and shard size, task i of the
            array (Table 5)                                             → ``pixart.synthetic_shards``
==========  =====================================================================================================

Depth→width (Table 6) uses the same kinds: a capture of site ``block`` (every block's input and output; on the
paper preset one capture run per pair of blocks), a ``stage1`` run per block pair (site ``block_pair``, operator
``parallel_pair``, L1 at lr 1e-4 resolved into its Stage1Config), a ``stage2`` whose plan is
``{"restructure": "parallel_pairs"}`` and whose init names the pairs' stage-1 runs, an ``eval`` and a ``latency``
run; the row's result is the eval record plus the latency record (``RowPlan.extras``). A model family that plans
rows of its own kind (``benchmark.family``; PixArt-Σ's ``t2i`` rows of Table 5) expands them through its ``expand``
hook into the same kinds plus its prerequisite nodes (PixArt-Σ: ``synthetic``, the teacher's synthetic pairs); its
bodies carry its marker key (``pixart``), which is how the jobs look its family up.

A ``search`` run resolves a row's layers as a locality run does for Fig. 4b: the row waits for it, then is planned
from its record; its stage-2 and eval bodies hold only the plan it chose, so a search that picks table3's interleaved
layers shares table3's runs. A per-layer choice of several operators (``cost_aware``) is a plan that is a list of
``GraftPlan`` dicts, one per operator.

Two rows that need the same step get the same node (same key ``kind/run_id``), so it runs once: the 50 % and 75 %
rows of an operator reuse the stage-1 layers of its 100 % row, fig4a's 10 % rows are table3's 50 % rows, etc.
Planning imports no torch itself, except for a family's rows that need it (PixArt-Σ's teacher config comes from
``graft_core.text_to_image.pixart``, which imports torch).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterable

from benchmark.family import family_for_row
from benchmark.rows import LocalityConfig, Row
from graft_core.stages.capture_size import capture_bytes
from graft_core.config import stable_hash, to_jsonable
from graft_core.grafting.plan import NEEDS_LOCALITY, select_layers
from graft_core.presets import Preset

PARALLEL_PAIRS = {"restructure": "parallel_pairs"}  # the stage-2 / eval plan of the depth→width student (Table 6)
BLOCK_PAIR_STAGE1 = {"objective": "l1", "lr": 1e-4}  # paper §4.9: L1; the stage-1 lr of §3.1

STEP_VERSIONS = {"teacher": 1, "capture": 1, "stage1": 1, "stage1_online": 1, "stage2": 1, "sample": 1, "eval": 1,
                 "floor": 1, "noise": 1, "locality": 1, "activation_stats": 1, "latency": 1, "synthetic": 1, "search": 1,
                 "encode": 1}
STEP_KINDS = tuple(STEP_VERSIONS)
CAPTURE_DTYPE = "float16"
# Above this many bytes per split for all (layer, site) pairs, each pair is its own capture run (DiT-XL/2: 528 GB
# per split for all 56 pairs, 4.7 GB per array): a stage-1 job then waits only for its own layer, and nothing that no
# planned run needs is stored. Below it (tiny, micro), one run captures every pair in one teacher pass.
PER_PAIR_CAPTURE_BYTES = 2 * 10**9
ACTIVATION_OUTLIER_SIGMA = 6.0  # Table 1 i/ii: an outlier is |x − mean| > 6σ (our choice; the paper's is UNKNOWN)


def per_pair_captures(p: Preset) -> bool:
    return capture_bytes(p, dtype=CAPTURE_DTYPE) > PER_PAIR_CAPTURE_BYTES


@dataclass(frozen=True)
class Node:
    """One run: ``kind/run_id`` is its key and its folder under ``runs/``."""

    kind: str
    run_id: str
    config: dict = field(compare=False, hash=False, repr=False)
    deps: tuple[str, ...] = field(default=(), compare=False, hash=False)
    desc: str = field(default="", compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.run_id}"


def make_node(kind: str, body: dict, deps: Iterable[Node] = (), desc: str = "") -> Node:
    config = to_jsonable({"kind": kind, "version": STEP_VERSIONS[kind], **body})
    return Node(kind=kind, run_id=stable_hash(config), config=config, deps=tuple(d.key for d in deps), desc=desc)


@dataclass
class RowPlan:
    target: str
    row: Row
    nodes: list[Node]  # topological order, each node once
    final: Node | None  # the node whose record is the row's result
    waiting_for: Node | None = None  # set when the row's layers depend on a locality run not done yet
    layers: tuple[int, ...] | None = None
    extras: tuple[Node, ...] = ()  # runs whose records join the final one in the row's result (Table 6 latency)

    @property
    def blocked(self) -> bool:
        return self.waiting_for is not None


# Reads a DONE locality run's per-layer scores at ``select_k`` (None when not available yet).
LocalityReader = Callable[[Node, LocalityConfig], "list[float] | None"]
# Reads a DONE search run's chosen [layer, operator, options] triples (None when not available yet).
SearchReader = Callable[[Node], "list[list] | None"]


class Planner:
    """Expands rows into nodes; ``locality_reader`` resolves top/low-local layers from a finished locality run,
    ``search_reader`` a searched row's layers from a finished search run."""

    def __init__(self, locality_reader: LocalityReader | None = None, search_reader: SearchReader | None = None):
        self.locality_reader = locality_reader or (lambda node, cfg: None)
        self.search_reader = search_reader or (lambda node: None)

    # ------------------------------------------------------------------------------------------------------ nodes
    @staticmethod
    def teacher(p: Preset) -> Node:
        body = {"preset": p.name, "teacher": p.teacher, "data": None if p.teacher.pretrained else p.data}
        return make_node("teacher", body, desc="teacher")

    def capture(self, p: Preset, split: str, pair: tuple[int, str] | None = None) -> Node:
        """The capture of one split: every (layer, site) in one run when all of them are small, else the one
        (layer, site) ``pair`` a stage-1 run needs (its own run, shared by every row that grafts that layer)."""
        t = self.teacher(p)
        body = {"preset": p.name, "teacher": p.teacher, "data": p.data, "split": split, "seed": p.stage1.seed,
                "dtype": CAPTURE_DTYPE}
        if p.stage1.capture_input != "noised":
            body["capture_input"] = p.stage1.capture_input
        where = ""
        if pair is not None and per_pair_captures(p):
            body["pairs"] = [[int(pair[0]), pair[1]]]
            where = f" L{pair[0]} {pair[1]}"
        return make_node("capture", body, [t], desc=f"capture {split}{where}")

    def block_capture(self, p: Preset, split: str, index: int) -> Node:
        """Every block's input and output (site ``block``) in one run, or on the paper preset only blocks
        ``2·index`` and ``2·index + 1`` (what stage 1 of pair ``index`` reads) in one teacher pass."""
        t = self.teacher(p)
        body = {"preset": p.name, "teacher": p.teacher, "data": p.data, "split": split, "seed": p.stage1.seed,
                "dtype": CAPTURE_DTYPE}
        if p.stage1.capture_input != "noised":
            body["capture_input"] = p.stage1.capture_input
        if per_pair_captures(p):
            body["pairs"] = [[2 * index, "block"], [2 * index + 1, "block"]]
            where = f" blocks {2 * index},{2 * index + 1}"
        else:
            body["sites"], where = ["block"], " blocks"
        return make_node("capture", body, [t], desc=f"capture {split}{where}")

    def stage1_pair(self, p: Preset, index: int) -> Node:
        s1 = dataclasses.replace(p.stage1, **BLOCK_PAIR_STAGE1)
        train, held = self.block_capture(p, "stage1", index), self.block_capture(p, "heldout", index)
        body = {"preset": p.name, "teacher": p.teacher, "data": p.data, "stage1": s1, "site": "block_pair",
                "operator": "parallel_pair", "options": {}, "layer": index, "bf16": p.stage2.bf16,
                "inputs": {"capture_train": train.run_id, "capture_heldout": held.run_id}}
        return make_node("stage1", body, [train, held],
                         desc=f"stage1 block pair {index} (blocks {2 * index},{2 * index + 1}) {s1.objective} "
                              f"{s1.epochs}ep")

    def latency(self, p: Preset, model: dict, deps: list[Node], settings: dict) -> Node:
        body = {"preset": p.name, "teacher": p.teacher, "data": p.data, "model": model, "latency": settings}
        return make_node("latency", body, [self.teacher(p), *deps],
                         desc=f"latency (batch {settings['batch']}, {settings['repeats']} repeats)")

    def captures(self, p: Preset, site: str, layer: int) -> tuple[Node, Node]:
        return self.capture(p, "stage1", (layer, site)), self.capture(p, "heldout", (layer, site))

    def stage1(self, p: Preset, site: str, operator: str, options: dict, layer: int) -> Node:
        s1 = dataclasses.replace(p.stage1, objective=p.stage1.objective_for(site), lr=p.stage1.lr_for(site))
        train, held = self.captures(p, site, layer)
        body = {"preset": p.name, "teacher": p.teacher, "data": p.data, "stage1": s1, "site": site,
                "operator": operator, "options": options, "layer": layer, "bf16": p.stage2.bf16,
                "inputs": {"capture_train": train.run_id, "capture_heldout": held.run_id}}
        return make_node("stage1", body, [train, held], desc=f"stage1 {site}:{operator}{_opts(options)} L{layer} "
                                                            f"{s1.objective} {s1.epochs}ep")

    def stage2(self, p: Preset, plan: dict | list | None, init, deps: list[Node]) -> Node:
        body = {"preset": p.name, "teacher": p.teacher, "data": p.data, "stage2": p.stage2, "plan": plan,
                "init": init}
        what = ("teacher (no graft)" if plan is None else "parallel pairs" if plan == PARALLEL_PAIRS
                else " + ".join(f"{q['site']}:{q['operator']}{_opts(q['options'])}"
                                for q in (plan if isinstance(plan, list) else [plan])))
        return make_node("stage2", body, [self.teacher(p), *deps],
                         desc=f"stage2 {what} {p.stage2.steps} steps, data {p.stage2.data_fraction:g}")

    def evaluate(self, p: Preset, model: dict, deps: list[Node], what: str) -> list[Node]:
        """The nodes that evaluate ``model``, the eval node last.

        ``in_process``: one eval node. ``adm`` (paper §3.3): ``eval.sample_tasks`` sample nodes — one Slurm array,
        task ``i`` drawing the shards ``s ≡ i (mod tasks)``, each resumable shard by shard — and an eval node that
        merges their shards and scores them against ADM's reference batch."""
        body = {"preset": p.name, "teacher": p.teacher, "data": p.data, "classifier": p.classifier, "eval": p.eval,
                "model": model}
        if p.eval.protocol == "in_process":
            return [make_node("eval", body, [self.teacher(p), *deps],
                              desc=f"eval {what} ({p.eval.num_samples} samples)")]
        if p.eval.protocol != "adm":
            raise ValueError(f"unknown eval protocol {p.eval.protocol!r}; choose one of in_process, adm")
        tasks = p.eval.sample_tasks
        samples = [make_node("sample", {**body, "task": i, "tasks": tasks}, [self.teacher(p), *deps],
                             desc=f"sample {what} (task {i + 1}/{tasks} of {p.eval.num_samples} samples, "
                                  f"{p.eval.steps} steps)") for i in range(tasks)]
        metrics = make_node("eval", {**body, "samples": [n.run_id for n in samples]}, samples,
                            desc=f"ADM metrics {what} ({p.eval.num_samples} samples vs the reference batch)")
        return [*samples, metrics]

    @staticmethod
    def reference(p: Preset, kind: str) -> Node:
        body = {"preset": p.name, "data": p.data, "classifier": p.classifier, "eval": p.eval}
        return make_node(kind, body, desc="metric floor" if kind == "floor" else "noise control")

    def locality(self, p: Preset, cfg: LocalityConfig) -> Node:
        body = {"preset": p.name, "teacher": p.teacher, "locality": cfg}
        return make_node("locality", body, [self.teacher(p)], desc=f"locality k={list(cfg.ks)}")

    def activation_stats(self, p: Preset, site: str) -> tuple[list[Node], Node]:
        """(the stage-1 captures read, the node) of one site's per-layer output statistics (paper Table 1 i/ii,
        statistic our choice: the paper's is UNKNOWN). Every layer's stage-1 capture: the one all-pairs capture on
        small presets, on the paper preset the per-(layer, site) captures that table3's stage-1 runs share."""
        layers = list(range(p.teacher.num_layers))
        caps = [self.capture(p, "stage1", (layer, site)) for layer in layers]
        body = {"preset": p.name, "teacher": p.teacher, "data": p.data, "site": site, "layers": layers,
                "outlier_sigma": ACTIVATION_OUTLIER_SIGMA,
                "captures": {str(layer): n.run_id for layer, n in zip(layers, caps)}}
        unique = list({n.key: n for n in caps}.values())
        return unique, make_node("activation_stats", body, unique,
                                 desc=f"activation stats {site} ({len(layers)} layers, {len(unique)} capture"
                                      f"{'s' if len(unique) != 1 else ''})")

    def search(self, p: Preset, site: str, spec) -> tuple[list[Node], Node]:
        """(the captures and stage-1 runs it reads, the node) of a layer search: every layer × every operator of
        ``spec`` (a ``benchmark.rows.SearchSpec``), each candidate with the FLOPs it saves per forward."""
        from graft_core.grafting.selection import op_key

        t = p.teacher
        old = layer_flops(site, None, {}, t)
        inputs: list[Node] = []
        candidates = []
        for operator, options in spec.operators:
            opts = dict(options)
            saved = old - layer_flops(site, operator, opts, t)
            for layer in range(t.num_layers):
                s1 = self.stage1(p, site, operator, opts, layer)
                inputs += [*self.captures(p, site, layer), s1]
                candidates.append({"layer": layer, "op": op_key(operator, opts), "operator": operator,
                                   "options": opts, "saved_flops": saved, "stage1": s1.run_id})
        primary = op_key(spec.operators[0][0], dict(spec.operators[0][1]))
        body = {"preset": p.name, "teacher": p.teacher, "data": p.data,
                "search": {"strategy": spec.strategy, "site": site, "primary": primary, "layers": spec.layers,
                           "flops": spec.flops, "probe": spec.probe},
                "candidates": candidates}
        budget = f"{spec.layers} layers" if spec.layers else f"{spec.flops:.3g} FLOPs saved"
        inputs = list({n.key: n for n in inputs}.values())
        return inputs, make_node("search", body, [self.teacher(p), *inputs],
                                 desc=f"search {spec.strategy} {site}:{'/'.join(o for o, _ in spec.operators)} "
                                      f"({budget}, {len(candidates)} candidates)")

    # ------------------------------------------------------------------------------------------------------ rows
    def expand(self, target: str, row: Row) -> RowPlan:
        p = row.preset
        nodes: list[Node] = []

        def add(*new: Node) -> Node:
            for n in new:
                if n.key not in {m.key for m in nodes}:
                    nodes.append(n)
            return new[-1]

        if row.kind == "teacher":
            add(self.teacher(p))
            final = add(*self.evaluate(p, {"source": "teacher"}, [], "teacher"))
            return RowPlan(target, row, nodes, final)
        if row.kind in ("floor", "noise"):
            return RowPlan(target, row, [self.reference(p, row.kind)], self.reference(p, row.kind))
        if row.kind == "locality":
            add(self.teacher(p))
            final = add(self.locality(p, row.locality))
            return RowPlan(target, row, nodes, final)
        if row.kind == "activation_stats":
            add(self.teacher(p))
            caps, node = self.activation_stats(p, row.site)
            final = add(*caps, node)
            return RowPlan(target, row, nodes, final)
        if row.kind == "parallel_pairs":
            return self.parallel_pairs(target, row, add, nodes)
        family = family_for_row(row.kind)
        if family is not None:  # a family's own rows (PixArt-Σ's t2i): its prerequisite nodes and its bodies
            return family.expand(target, row, add, nodes)
        if row.kind == "finetune_teacher":
            add(self.teacher(p))
            s2 = add(self.stage2(p, None, None, []))
            final = add(*self.evaluate(p, {"source": "stage2", "run": s2.run_id}, [s2], "teacher + stage 2"))
            return RowPlan(target, row, nodes, final)

        # kind == "graft"
        graft = row.graft
        add(self.teacher(p))
        if graft.layers is None and row.search is not None:
            inputs, search = self.search(p, graft.site, row.search)
            add(*inputs, search)
            chosen = self.search_reader(search)
            if chosen is None:
                return RowPlan(target, row, nodes, None, waiting_for=search)
            ops = {(operator, tuple(sorted(options.items()))) for _, operator, options in chosen}
            if len(ops) > 1:
                return self.mixed(target, row, chosen, add, nodes)
            (operator, options), = ops
            graft = dataclasses.replace(graft, operator=operator, options=options,
                                        layers=tuple(sorted(layer for layer, _, _ in chosen)))
        elif graft.layers is None:
            if graft.strategy not in NEEDS_LOCALITY or row.locality is None:
                raise ValueError(f"row {row.id!r}: layers unresolved and no locality config to resolve them")
            loc = add(self.locality(p, row.locality))
            scores = self.locality_reader(loc, row.locality)
            if scores is None:
                return RowPlan(target, row, nodes, None, waiting_for=loc)
            graft = dataclasses.replace(graft, layers=select_layers(graft.strategy, p.teacher.num_layers,
                                                                    locality=scores))
        plan = graft.plan().to_dict()
        options = plan["options"]
        if row.init == "stage1":
            s1 = [add(*self.captures(p, graft.site, layer), self.stage1(p, graft.site, graft.operator, options, layer))
                  for layer in graft.layers]
            init = {"stage1": {str(n.config["layer"]): n.run_id for n in s1}}
            deps = s1
        else:
            init, deps = "random", []
        what = f"{graft.site}:{graft.operator}{_opts(options)} {graft.strategy}"
        if row.finetune:
            s2 = add(self.stage2(p, plan, init, deps))
            final = add(*self.evaluate(p, {"source": "stage2", "run": s2.run_id}, [s2], what + " + stage 2"))
        else:
            final = add(*self.evaluate(p, {"source": "assembled", "plan": plan, "init": init}, deps,
                                      what + (" (random init)" if init == "random" else " (stage 1 only)")))
        return RowPlan(target, row, nodes, final, layers=graft.layers)

    def mixed(self, target: str, row: Row, chosen: list[list], add, nodes: list[Node]) -> RowPlan:
        """A searched row with a per-layer choice of operators: one ``GraftPlan`` dict per operator, stage-1 runs of
        each layer's own operator, then stage 2 (or not) and eval as any graft row."""
        from graft_core.grafting.plan import GraftPlan

        p, site = row.preset, row.graft.site
        by_op: dict[tuple, list[int]] = {}
        for layer, operator, options in chosen:
            by_op.setdefault((operator, tuple(sorted(options.items()))), []).append(int(layer))
        plan = [GraftPlan(site=site, operator=op, layers=tuple(layers), options=opts).to_dict()
                for (op, opts), layers in sorted(by_op.items())]
        s1 = [add(*self.captures(p, site, layer), self.stage1(p, site, q["operator"], q["options"], layer))
              for q in plan for layer in q["layers"]]
        init = {"stage1": {str(n.config["layer"]): n.run_id for n in s1}}
        what = " + ".join(f"{site}:{q['operator']}{_opts(q['options'])} L{','.join(map(str, q['layers']))}"
                          for q in plan)
        if row.finetune:
            s2 = add(self.stage2(p, plan, init, s1))
            final = add(*self.evaluate(p, {"source": "stage2", "run": s2.run_id}, [s2], what + " + stage 2"))
        else:
            final = add(*self.evaluate(p, {"source": "assembled", "plan": plan, "init": init}, s1,
                                      what + " (stage 1 only)"))
        layers = tuple(sorted(int(layer) for layer, _, _ in chosen))
        resolved = dataclasses.replace(row, extra={**row.extra, "operators": {str(int(layer)): operator
                                                                              for layer, operator, _ in chosen}})
        return RowPlan(target, resolved, nodes, final, layers=layers)

    def parallel_pairs(self, target: str, row: Row, add, nodes: list[Node]) -> RowPlan:
        """Depth→width: captures → stage 1 per block pair → stage 2 (``row.finetune``) → eval, + latency."""
        p = row.preset
        add(self.teacher(p))
        pairs = []
        for index in range(p.teacher.num_layers // 2):
            add(self.block_capture(p, "stage1", index), self.block_capture(p, "heldout", index))
            pairs.append(add(self.stage1_pair(p, index)))
        init = {"stage1": {str(n.config["layer"]): n.run_id for n in pairs}}
        if not row.finetune:
            model = {"source": "assembled", "plan": PARALLEL_PAIRS, "init": init}
            final = add(*self.evaluate(p, model, pairs, "parallel pairs (stage 1 only)"))
            return RowPlan(target, row, nodes, final)
        s2 = add(self.stage2(p, PARALLEL_PAIRS, init, pairs))
        model = {"source": "stage2", "run": s2.run_id}
        final = add(*self.evaluate(p, model, [s2], "parallel pairs + stage 2"))
        latency = add(self.latency(p, model, [s2], row.extra["latency"]))
        return RowPlan(target, row, nodes, final, extras=(latency,))


def layer_flops(site: str, operator: str | None, options: dict, t) -> float:
    """Analytic FLOPs per forward of one layer's operator at ``site`` (op + ft, ``graft_core.grafting.accounting``); the
    teacher's own when ``operator`` is None."""
    from graft_core.grafting.accounting import operator_cost, teacher_cost

    dims = {"num_heads": t.num_attention_heads, "seq_len": t.num_tokens}
    c = teacher_cost(site, t.hidden_size, **dims) if operator is None else \
        operator_cost(operator, t.hidden_size, **dims, **options)
    return float(c.flops_op + c.flops_ft)


def _opts(options: dict) -> str:
    return "(" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + ")" if options else ""


def topological(nodes: Iterable[Node]) -> list[Node]:
    """Dependency order (deps first), stable with respect to the input order; unknown deps are ignored."""
    nodes = list(nodes)
    by_key = {n.key: n for n in nodes}
    out: list[Node] = []
    seen: set[str] = set()

    def visit(n: Node, stack: tuple[str, ...] = ()):
        if n.key in seen:
            return
        if n.key in stack:
            raise ValueError(f"dependency cycle through {n.key}")
        for d in n.deps:
            if d in by_key:
                visit(by_key[d], stack + (n.key,))
        seen.add(n.key)
        out.append(n)

    for n in nodes:
        visit(n)
    return out
