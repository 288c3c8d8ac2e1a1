"""The artefact cache: how everything built by hash key (teachers, PixArt teachers, digit classifiers, captures,
reference features) gets onto disk exactly once, even with several jobs asking for the same key at the same time.

An entry is a folder ``<parent>/<key>/`` (the final layout of each artefact is unchanged). Building one:

1. take the key's lock: ``fcntl.flock`` on ``<parent>/<key>.lock`` (the file stays; it is never deleted, which
   would let two writers lock two different files). The kernel drops a flock when its process dies, so a killed
   job leaves no stale lock. On NFS, Linux emulates flock with POSIX byte-range locks (lockd); Lustre needs the
   ``flock`` mount option.
2. look again: a writer that waited on the lock finds the entry the first one built and just returns it;
3. remove stale temp folders of the key: a writer only creates its temp folder while it holds the lock, so any temp
   folder seen by the lock holder belongs to a dead writer;
4. the builder writes into a private folder ``.<key>.tmp-<pid>-<random>``; resumable builders also get
   ``<key>.resume/``, touched only under the lock, kept when a build dies and removed after a successful one;
5. the sha256 of every file goes into ``MANIFEST.json`` (written last, files fsynced), then one ``os.rename`` puts
   the folder into place. A finished entry is never deleted in place: when a build replaces one (``rebuild``), the
   old folder is first renamed aside, the new one renamed in, then the aside copy removed.

Loading checks the files against the manifest (``verify``; a mismatch raises ``CorruptArtefactError`` naming the
file and what to do). Folders without a manifest — the shipped assets under ``graft_core/assets/`` and entries
written before this module existed — are recognised by a marker file (e.g. the weights) and keep their own sha256
checks in their loaders.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from graft_core.errors import CorruptArtefactError
from graft_core.runtime.paths import atomic_write_json

MANIFEST = "MANIFEST.json"
MANIFEST_VERSION = 1
TMP_TAG = ".tmp-"   # .<key>.tmp-<pid>-<hex>: a writer's private build folder
OLD_TAG = ".old-"   # .<key>.old-<pid>-<hex>: a replaced entry on its way out
RESUME_SUFFIX = ".resume"
LOCK_SUFFIX = ".lock"

_VERIFIED: dict[str, tuple] = {}  # file path → stat signature of the last successful sha256 check in this process


def lock_path(folder: Path) -> Path:
    folder = Path(folder)
    return folder.with_name(folder.name + LOCK_SUFFIX)


def resume_path(folder: Path) -> Path:
    """The resume folder of an entry: private to whoever holds the key's lock."""
    folder = Path(folder)
    return folder.with_name(folder.name + RESUME_SUFFIX)


@contextlib.contextmanager
def key_lock(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``folder``'s key; blocks while another process builds it."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def is_entry(folder: Path, marker: str | None = None) -> bool:
    """A finished entry: it has a manifest, or (shipped / older entries) the ``marker`` file."""
    folder = Path(folder)
    return (folder / MANIFEST).is_file() or (marker is not None and (folder / marker).exists())


def find(folders: Iterable[Path], marker: str | None = None) -> Path | None:
    """The first finished entry among ``folders`` (read-only lookups such as the shipped assets go first)."""
    return next((Path(f) for f in folders if is_entry(f, marker)), None)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    out = []
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if rel != MANIFEST:
                out.append(Path(rel).as_posix())
    return sorted(out)


def write_manifest(folder: Path) -> dict:
    """Hash (and fsync) every file under ``folder``, then write ``MANIFEST.json``: the entry's last file."""
    folder = Path(folder)
    files = {}
    for rel in _files(folder):
        path = folder / rel
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            os.fsync(f.fileno())  # builders (safetensors, save_pretrained, memmaps) do not fsync their files
        files[rel] = {"sha256": h.hexdigest(), "size": path.stat().st_size}
    manifest = {"version": MANIFEST_VERSION, "files": files}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise CorruptArtefactError(f"{path} does not parse ({err}); delete {Path(folder)} to rebuild it") from None


def _signature(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def verify(folder: Path, names: Iterable[str] | None = None) -> None:
    """Check ``names`` (default: every file of the manifest) against the manifest's sha256.

    A folder without a manifest (shipped asset, older entry) passes: its loader checks its own recorded sha256.
    Each file is hashed once per process while its stat is unchanged, so reloading a large entry costs nothing.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return
    files = manifest["files"]
    for rel in (sorted(files) if names is None else names):
        path = folder / rel
        if rel not in files:
            raise CorruptArtefactError(f"{path} is not listed in {folder / MANIFEST}; delete {folder} to rebuild it")
        try:
            st = path.stat()
        except FileNotFoundError:
            raise CorruptArtefactError(f"{path} is missing from the cache entry {folder}; delete {folder} to rebuild "
                                       f"it") from None
        if _VERIFIED.get(str(path)) == _signature(st):
            continue
        want = files[rel]["sha256"]
        got = sha256_file(path)
        if got != want:
            raise CorruptArtefactError(f"{path} is corrupt (sha256 {got[:12]} != {want[:12]} recorded in its "
                                       f"{MANIFEST}); delete {folder} to rebuild it")
        _VERIFIED[str(path)] = _signature(st)


def stale_temps(folder: Path) -> list[Path]:
    """Temp and aside folders of ``folder``'s key, plus the shared ``<key>.partial`` of the older writers."""
    folder = Path(folder)
    pat = glob.escape(str(folder.parent / f".{folder.name}"))
    found = glob.glob(pat + TMP_TAG + "*") + glob.glob(pat + OLD_TAG + "*") + glob.glob(pat + ".partial-*")
    legacy = folder.with_name(folder.name + ".partial")
    return sorted(Path(p) for p in found) + ([legacy] if legacy.exists() else [])


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened / fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _private_name(folder: Path, tag: str) -> Path:
    return folder.with_name(f".{folder.name}{tag}{os.getpid()}-{secrets.token_hex(4)}")


def _publish(tmp: Path, folder: Path) -> None:
    """Rename the finished ``tmp`` onto ``folder``; an existing folder is renamed aside first, then removed."""
    if folder.exists() or folder.is_symlink():
        old = _private_name(folder, OLD_TAG)
        os.rename(folder, old)
        os.rename(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, folder)
    _fsync_dir(folder.parent)


def get_or_build(folder: Path, build: Callable[..., object], *, marker: str | None = None, rebuild: bool = False,
                 resume: bool = False) -> Path:
    """Return the finished entry ``folder``, building it once with ``build(tmp)`` (``build(tmp, resume_dir)`` when
    ``resume``) if it is not there. ``rebuild`` builds even over a finished entry (``--retrain``).

    Concurrent callers of one key: one builds, the others wait on the lock and return the same folder. If ``build``
    raises, its temp folder is removed and nothing is published; the resume folder is kept for the next writer.
    """
    folder = Path(folder)
    if not rebuild and is_entry(folder, marker):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with key_lock(folder):
        if not rebuild and is_entry(folder, marker):  # another writer finished it while we waited
            return folder
        for stale in stale_temps(folder):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = _private_name(folder, TMP_TAG)
        tmp.mkdir()
        try:
            if resume:
                res = resume_path(folder)
                res.mkdir(exist_ok=True)
                build(tmp, res)
            else:
                build(tmp)
            write_manifest(tmp)
            _fsync_dir(tmp)
            _publish(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if resume:
            shutil.rmtree(resume_path(folder), ignore_errors=True)
    return folder
