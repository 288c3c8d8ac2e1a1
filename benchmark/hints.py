"""The driver's commands for what the engine reports missing: ``graft_core`` states the facts in a typed error, the
driver (``benchmark.run``'s jobs, ``benchmark.prepare``) names the command that makes the missing artefact.

A leaf that imports nothing heavy (the error classes live in the leaf ``graft_core.errors``).
"""
from __future__ import annotations

from graft_core.errors import NotPrepared

PREPARE_IMAGENET = "python -m benchmark.prepare imagenet"
PREPARE_SUBSETS = "python -m benchmark.prepare subsets"


def hint(err: BaseException) -> str | None:
    """What to run to fix ``err``, or None when the driver has no command for it."""
    if isinstance(err, NotPrepared):
        if err.what == "shards":
            return f"run `{PREPARE_IMAGENET}` (it resumes)"
        if err.what == "subsets":
            return f"run `{PREPARE_SUBSETS}` (after `{PREPARE_IMAGENET} --src PATH`)"
        return f"run `{PREPARE_IMAGENET} --src PATH` first"
    return None


def with_hint(err: BaseException) -> str:
    """``str(err)``, followed by the command that fixes it when there is one."""
    extra = hint(err)
    return f"{err}; {extra}" if extra else str(err)
