"""Slurm resource profiles: ``slurm/profiles/<name>.json``, chosen with ``--profile``, overridden with ``--slurm``.

A profile has ``defaults`` (every step kind) and ``steps.<kind>`` overrides (kinds: teacher, capture, stage1,
stage1_online, stage2, sample, eval, floor, noise, locality, activation_stats, latency, synthetic, encode, search,
collect). Keys are submitit's generic ones
(``timeout_min``, ``nodes``, ``tasks_per_node``, ``cpus_per_task``, ``gpus_per_node``, ``mem_gb``) plus a ``slurm``
dict of submitit's Slurm parameters without their ``slurm_`` prefix (``partition``, ``account``, ``qos``,
``constraint``, ``signal_delay_s``, ``max_num_timeout``, ``array_parallelism``, ``setup``, ``additional_parameters``,
…). Unknown keys are refused with the list of valid ones, so a profile can be validated without a cluster
(``python -m benchmark.run --validate``).

Driver keys (``DRIVER_KEYS``) are graftbench's own execution settings, not submitit's: validated here, never passed to
submitit, handed to the job instead (``job_settings`` → ``benchmark.jobs.RunUnit(settings=...)``). They change how a
step runs, never its results, so they are not part of any run id. ``grad_accumulation`` (integer ≥ 1, stage 2 and
``stage1_online``, ``"stage2": {"grad_accumulation": 4}`` or ``--slurm stage2.grad_accumulation=4``): micro-batches
per GPU and step when the per-GPU batch does not fit in memory (``graft_core.stages.finetune``,
``graft_core.stages.online``).

Declared keys (``DECLARED_KEYS``) say what the machines offer, for the feasibility check that ``--dry-run`` prints
and a real launch enforces (``benchmark.resources``): ``gpu_mem_gb`` (memory of one GPU, e.g. 80 for an H100) and
``disk_gb`` (the disk the results folder may fill). Never passed to submitit.

Command-line overrides, applied after the file: ``--slurm partition=h100`` (every kind) or
``--slurm stage2.timeout_min=2880`` (one kind); values are parsed as JSON when they parse (``8``, ``true``,
``{"a": 1}``), else kept as strings. Times are integer minutes. Keep ``signal_delay_s`` longer than a checkpoint save
and ``timeout_min`` ≥ 50 (submitit's ``min(0.8·T, T − 10 min)`` timeout-vs-preemption rule).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parents[1] / "slurm" / "profiles"
GENERIC = ("timeout_min", "nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node", "mem_gb")
# submitit 1.5.4 SlurmExecutor._valid_parameters() (without ``dependency``: the driver sets it) plus its
# constructor's max_num_timeout (checked in a test). Prefer the generic keys for time / cpus / gpus / nodes.
SLURM_KEYS = ("account", "additional_parameters", "array_parallelism", "comment", "constraint", "cpus_per_gpu",
              "cpus_per_task", "exclude", "exclusive", "gpus_per_node", "gpus_per_task", "gres", "job_name",
              "mail_type", "mail_user", "mem", "mem_per_cpu", "mem_per_gpu", "nodelist", "nodes", "ntasks_per_node",
              "num_gpus", "partition", "qos", "setup", "signal_delay_s", "srun_args", "stderr_to_stdout",
              "teardown", "time", "use_srun", "wckey", "max_num_timeout")
# graftbench's execution settings: key -> the step kinds that read it (a key set on another kind would do nothing)
DRIVER_KEYS = {"grad_accumulation": ("stage2", "stage1_online"), "activation_checkpointing": ("stage2",)}
# what the machines offer, for the feasibility check before submission (benchmark.resources): numbers, never passed
# to submitit. gpu_mem_gb: memory of one GPU; disk_gb: the disk the results folder may fill.
DECLARED_KEYS = ("gpu_mem_gb", "disk_gb")
BOOL_KEYS = ("activation_checkpointing",)  # driver keys that are true/false (the others: integers >= 1)
KINDS = ("teacher", "capture", "stage1", "stage1_online", "stage2", "sample", "eval", "floor", "noise", "locality",
         "activation_stats", "latency", "synthetic", "encode", "search", "collect")
DEFAULT_PROFILE = {"paper": "paper", "paper-smoke": "paper-smoke"}  # other presets: "cpu"


class ProfileError(ValueError):
    pass


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def default_profile(preset: str) -> str:
    return DEFAULT_PROFILE.get(preset, "cpu")


def _check(section: dict, where: str, kind: str | None = None) -> None:
    """Refuse unknown keys and bad values of one section (``kind`` None: the defaults of every kind)."""
    for key, value in section.items():
        if key == "slurm":
            if not isinstance(value, dict):
                raise ProfileError(f"{where}.slurm must be an object")
            bad = sorted(set(value) - set(SLURM_KEYS))
            if bad:
                raise ProfileError(f"{where}.slurm: unknown key(s) {bad}; valid: {', '.join(SLURM_KEYS)}")
        elif key in DRIVER_KEYS:
            if kind is not None and kind not in DRIVER_KEYS[key]:
                raise ProfileError(f"{where}.{key}: applies to {', '.join(DRIVER_KEYS[key])} only")
            if key in BOOL_KEYS:
                if not isinstance(value, bool):
                    raise ProfileError(f"{where}.{key} must be true or false, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ProfileError(f"{where}.{key} must be an integer >= 1, got {value!r}")
        elif key in DECLARED_KEYS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ProfileError(f"{where}.{key} must be a positive number of GB, got {value!r}")
        elif key not in GENERIC:
            raise ProfileError(f"{where}: unknown key {key!r}; valid: "
                               f"{', '.join(GENERIC + tuple(DRIVER_KEYS) + DECLARED_KEYS)} and a 'slurm' object")
        elif key == "timeout_min" and not isinstance(value, int):
            raise ProfileError(f"{where}.timeout_min must be integer minutes, got {value!r}")


@dataclass
class Profile:
    name: str
    data: dict

    @classmethod
    def load(cls, name_or_path: str, overrides: list[str] | None = None) -> "Profile":
        path = Path(name_or_path)
        if not path.suffix:
            path = PROFILE_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise ProfileError(f"unknown profile {name_or_path!r}; choose one of: {', '.join(available())} "
                               f"(files in {PROFILE_DIR}) or give a path to a .json file")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ProfileError(f"profile {path}: not valid JSON ({err})") from None
        prof = cls(path.stem, data)
        prof.validate()
        for item in overrides or ():
            prof.override(item)
        return prof

    def validate(self) -> None:
        _check(self.data.get("defaults", {}), f"{self.name}.defaults")
        for kind, section in self.data.get("steps", {}).items():
            if kind not in KINDS:
                raise ProfileError(f"{self.name}.steps: unknown step kind {kind!r}; valid: {', '.join(KINDS)}")
            _check(section, f"{self.name}.steps.{kind}", kind)

    def override(self, item: str) -> None:
        """Apply one ``[kind.]key=value`` override."""
        if "=" not in item:
            raise ProfileError(f"--slurm expects key=value (e.g. partition=gpu or stage2.timeout_min=600), "
                               f"got {item!r}")
        key, raw = item.split("=", 1)
        kind = None
        if "." in key:
            kind, key = key.split(".", 1)
            if kind not in KINDS:
                raise ProfileError(f"--slurm {item}: unknown step kind {kind!r}; valid: {', '.join(KINDS)}")
        key = key.strip().removeprefix("slurm_")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        section = self.data.setdefault("defaults", {}) if kind is None else \
            self.data.setdefault("steps", {}).setdefault(kind, {})
        if key in GENERIC or key in DRIVER_KEYS or key in DECLARED_KEYS:
            section[key] = value
        elif key in SLURM_KEYS:
            section.setdefault("slurm", {})[key] = value
        else:
            raise ProfileError(f"--slurm {item}: unknown key {key!r}; "
                               f"valid: {', '.join(GENERIC + tuple(DRIVER_KEYS) + DECLARED_KEYS + SLURM_KEYS)}")
        self.validate()

    def resources(self, kind: str) -> dict:
        """Merged settings of one step kind: generic keys + ``slurm`` dict."""
        out = copy.deepcopy(self.data.get("defaults", {}))
        step = copy.deepcopy(self.data.get("steps", {}).get(kind, {}))
        slurm = {**out.pop("slurm", {}), **step.pop("slurm", {})}
        out.update(step)
        out["slurm"] = slurm
        return out

    def executor_parameters(self, kind: str) -> tuple[dict, dict]:
        """(``AutoExecutor`` constructor kwargs, ``update_parameters`` kwargs) for a Slurm job of ``kind``."""
        res = self.resources(kind)
        slurm = dict(res.pop("slurm"))
        init = {}
        if "max_num_timeout" in slurm:
            init["slurm_max_num_timeout"] = slurm.pop("max_num_timeout")
        params = {k: v for k, v in res.items() if v is not None and k not in DRIVER_KEYS and k not in DECLARED_KEYS}
        params.update({f"slurm_{k}": v for k, v in slurm.items() if v is not None})
        return init, params

    def job_settings(self, kind: str) -> dict:
        """The driver keys that apply to ``kind`` (merged defaults + step), for the job rather than for submitit."""
        res = self.resources(kind)
        return {k: res[k] for k, kinds in DRIVER_KEYS.items() if kind in kinds and res.get(k) is not None}

    def all_job_settings(self) -> dict[str, dict]:
        """``job_settings`` of every kind that has any: what a job carries (``RunUnit(settings=...)``)."""
        return {kind: s for kind in KINDS if (s := self.job_settings(kind))}

    def describe(self, kind: str) -> str:
        r = self.resources(kind)
        s = r.get("slurm", {})
        gpus = r.get("gpus_per_node") or 0
        parts = [f"{gpus} GPU" + ("s" if gpus != 1 else "") if gpus else "no GPU"]
        if (r.get("tasks_per_node") or 1) > 1:
            parts.append(f"{r['tasks_per_node']} tasks")
        parts += [f"{r.get('cpus_per_task', '?')} CPU/task", f"{r.get('mem_gb', '?')} GB",
                  f"{r.get('timeout_min', '?')} min"]
        parts += [f"{k}={s[k]}" for k in ("partition", "qos", "account") if s.get(k)]
        parts += [f"{k}={v}" for k, v in self.job_settings(kind).items()]
        return ", ".join(parts)
