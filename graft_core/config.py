"""Frozen configs and their content hash.

Every cached artefact (teacher, classifier, activation capture, stage-1 operator, run) is keyed by the hash of the
config that produced it, so two callers asking for the same thing share one file and a changed field gets a new one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import PurePath
from typing import Any


OMIT_DEFAULT = {"omit_default": True}  # ``field(default=..., metadata=OMIT_DEFAULT)``: see ``to_jsonable``


def added_field(default: Any) -> Any:
    """A config field added after run ids were published: left out of the canonical form while it equals its
    default, so adding it does not change the id of any existing run."""
    return dataclasses.field(default=default, metadata=OMIT_DEFAULT)


def retired_field(default: Any, why: str) -> Any:
    """A config field no code reads any more but that stays hashed: removing it would re-key every run (and the
    shipped artefacts) made with it. ``why`` says what replaced it; :func:`retired_fields` lists them, and a test
    checks that no project code reads one. Hidden from ``repr``, as it says nothing about what a run does."""
    return dataclasses.field(default=default, repr=False, metadata={"retired": why})


def retired_fields(cls) -> dict[str, str]:
    """``{name: why}`` of the fields of dataclass ``cls`` (and of its nested config dataclasses, dotted) declared
    with :func:`retired_field`."""
    out = {}
    for f in dataclasses.fields(cls):
        if "retired" in f.metadata:
            out[f.name] = f.metadata["retired"]
        sub = _resolve(cls, f.type)
        if sub is not None:
            out.update({f"{f.name}.{k}": v for k, v in retired_fields(sub).items()})
    return out


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and dicts → plain JSON types (sorted keys), so that hashing is stable.

    Dataclass fields declared with :func:`added_field` are omitted while they hold their default value."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_default") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return obj  # keep 1.0 as 1.0: json renders it "1.0", distinct from int 1 on purpose
    return obj


def plain(obj: Any, *, finite: bool = False) -> Any:
    """``obj`` as plain JSON types, for records (which are not hashed, so dict order is kept): dataclasses as
    ``to_jsonable`` writes them, objects with a ``to_dict()`` (``GraftPlan``) by it, tuples as lists, paths as str,
    numpy / torch scalars as Python numbers and their arrays / tensors as nested lists. ``finite``: NaN and ±inf become
    None (for ``json.dumps(allow_nan=False)``)."""
    if callable(getattr(obj, "to_dict", None)) and not isinstance(obj, type):
        return plain(obj.to_dict(), finite=finite)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(to_jsonable(obj), finite=finite)
    if isinstance(obj, dict):
        return {str(k): plain(v, finite=finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, finite=finite) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if callable(getattr(obj, "tolist", None)) and hasattr(obj, "ndim"):  # numpy / torch: 0-d → number, else lists
        return plain(obj.tolist(), finite=finite)
    if finite and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the sorted-key JSON of ``obj`` (first ``length`` hex digits)."""
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def from_dict(cls, data: dict):
    """Rebuild a (possibly nested) frozen dataclass from ``to_jsonable`` output; unknown keys are an error."""
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    for name, value in data.items():
        ftype = fields[name].type
        sub = _resolve(cls, ftype)
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _resolve(cls, ftype):
    import sys
    import typing

    if isinstance(ftype, str):
        module = sys.modules[cls.__module__]
        ftype = getattr(module, ftype, None)
    if dataclasses.is_dataclass(ftype):
        return ftype
    for arg in typing.get_args(ftype) or ():
        if dataclasses.is_dataclass(arg):
            return arg
    return None
