"""Which code made a result: the git revision (one format everywhere), whether the checkout was dirty, package versions.

Format of ``git_rev()``: the 40-hex HEAD commit, with ``-dirty`` appended when tracked files differ from it;
``$GRAFTBENCH_GIT_REV`` replaces it when set (a pinned value for reproducible outputs); ``None`` outside a checkout.
``summary.json`` records it and the tables print the summary's value next to their own, so a table names the code
that produced its numbers. A torch-free leaf of the engine, so that the driver (``environment.json``, summaries),
``tables`` (which may not import ``benchmark``) and ``benchmarks/`` all read it from here.
"""
from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "diffusers", "numpy", "scipy", "submitit", "torch-fidelity", "clean-fid", "scikit-learn",
            "mlxtend", "einops", "peft", "graftbench")


def head_commit(repo: Path = REPO) -> str | None:
    """HEAD commit read from the ``.git`` files (HEAD, loose refs, packed-refs; worktrees too), no git process."""
    git = repo / ".git"
    try:
        if git.is_file():  # worktree / submodule: "gitdir: PATH"
            git = (repo / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        for base in (git, common):
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
    except (OSError, IndexError):
        return None
    return None


def is_dirty(repo: Path = REPO) -> bool | None:
    """Tracked files differ from HEAD (``git status --porcelain --untracked-files=no``); None without git."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(proc.stdout.strip()) if proc.returncode == 0 else None


def git_rev(repo: Path = REPO) -> str | None:
    """``<40-hex commit>[-dirty]``, or ``$GRAFTBENCH_GIT_REV``, or None (see the module docstring)."""
    return os.environ.get("GRAFTBENCH_GIT_REV") or _checkout_rev(repo)


@functools.lru_cache(maxsize=8)
def _checkout_rev(repo: Path) -> str | None:
    """Cached per process: a launcher asks once however many summaries it writes (``git status`` takes a while)."""
    commit = head_commit(repo)
    if commit is None:
        return None
    return commit + ("-dirty" if is_dirty(repo) else "")


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance() -> dict:
    """What ``environment.json`` and the benchmark records store about the code."""
    return {"git_rev": git_rev(), "packages": dict(package_versions())}
