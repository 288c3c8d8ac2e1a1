"""The artefact cache (``graft_core.runtime.cache``) and the one atomic writer (``graft_core.runtime.paths``): two processes racing on
one key, a writer killed mid-write, corruption caught by the manifest, record permissions."""
import fcntl
import json
import multiprocessing
import os
import signal
import stat
import time

import pytest

from benchmark import store
from graft_core.runtime import cache, paths

CTX = multiprocessing.get_context("fork")  # the children only touch files: no torch, fast and deterministic
WAIT = 60  # seconds: an upper bound on every wait, never a synchronisation by itself


def _build_payload(log: str, payload: bytes, tmp, started=None, release=None) -> None:
    """A builder that records each run in ``log`` (O_APPEND: one line per run, across processes)."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "blob.bin").write_bytes(payload)
    (tmp / "meta.json").write_text(json.dumps({"n": len(payload)}))
    if started is not None:
        started.set()
    if release is not None:
        assert release.wait(WAIT), "the test never released the first writer"


def _race_worker(folder, log, payload, started, release, results) -> None:
    out = cache.get_or_build(folder, lambda tmp: _build_payload(log, payload, tmp, started, release))
    cache.verify(out)
    results.put((os.getpid(), str(out), (out / "sub" / "blob.bin").read_bytes()))


def _blocked_on_flock(pid: int) -> bool:
    """Whether ``pid`` waits for a flock (``/proc/locks`` lists waiters as ``-> FLOCK ... <pid> ...``)."""
    with open("/proc/locks") as f:
        return any("->" in line and "FLOCK" in line and f" {pid} " in line for line in f)


def _poll(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_two_processes_race_on_one_key_and_build_once(tmp_path):
    folder, log = tmp_path / "entries" / "k123", str(tmp_path / "builds.log")
    started, release, results = CTX.Event(), CTX.Event(), CTX.Queue()
    first = CTX.Process(target=_race_worker, args=(folder, log, b"first", started, release, results))
    first.start()
    assert started.wait(WAIT)  # the first writer holds the lock and sits in its builder
    second = CTX.Process(target=_race_worker, args=(folder, log, b"second", None, None, results))
    second.start()
    if os.path.exists("/proc/locks"):
        _poll(lambda: _blocked_on_flock(second.pid), "the second writer to block on the key's lock")
    assert not folder.exists() and second.is_alive()
    release.set()
    got = sorted(results.get(timeout=WAIT) for _ in range(2))
    first.join(WAIT)
    second.join(WAIT)
    assert first.exitcode == 0 and second.exitcode == 0
    assert open(log).read().split() == [str(first.pid)]  # the builder ran once, in the first process
    assert [g[1:] for g in got] == [(str(folder), b"first")] * 2  # both see the same bytes
    assert not list(folder.parent.glob(".*.tmp-*")) and (folder / cache.MANIFEST).exists()
    assert sorted(json.loads((folder / cache.MANIFEST).read_text())["files"]) == ["meta.json", "sub/blob.bin"]


def _killed_worker(folder, written, resume: bool) -> None:
    def build(tmp, res=None):
        (tmp / "part.bin").write_bytes(b"half")
        if res is not None:
            (res / "checkpoint").write_text("step 5")
        written.set()
        time.sleep(WAIT)  # killed here

    cache.get_or_build(folder, build, resume=resume)


@pytest.mark.parametrize("resume", [False, True])
def test_a_writer_killed_mid_write_is_recovered_by_the_next(tmp_path, resume):
    folder, written = tmp_path / "k", CTX.Event()
    proc = CTX.Process(target=_killed_worker, args=(folder, written, resume))
    proc.start()
    assert written.wait(WAIT)
    assert len(list(tmp_path.glob(".k.tmp-*"))) == 1  # its private temp folder, nothing at the final path
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(WAIT)
    assert proc.exitcode == -signal.SIGKILL and not folder.exists()
    seen = []

    def build(tmp, res=None):
        seen.append(None if res is None else (res / "checkpoint").read_text())
        (tmp / "part.bin").write_bytes(b"whole")

    out = cache.get_or_build(folder, build, resume=resume)  # the dead writer's flock went with it: no wait
    assert out == folder and (folder / "part.bin").read_bytes() == b"whole"
    assert seen == (["step 5"] if resume else [None])  # a resumable builder continues from the resume folder
    assert not list(tmp_path.glob(".k.tmp-*")) and not cache.resume_path(folder).exists()
    cache.verify(folder)
    with open(cache.lock_path(folder)) as f:  # and the lock is free
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_failing_builder_publishes_nothing_and_keeps_the_resume_folder(tmp_path):
    folder = tmp_path / "k"

    def build(tmp, res):
        (res / "checkpoint").write_text("step 1")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.get_or_build(folder, build, resume=True)
    assert not folder.exists() and not list(tmp_path.glob(".k.tmp-*"))
    assert (cache.resume_path(folder) / "checkpoint").read_text() == "step 1"


def test_corrupt_and_missing_files_are_caught_by_the_manifest(tmp_path):
    folder = cache.get_or_build(tmp_path / "k", lambda tmp: _build_payload(str(tmp_path / "log"), b"abcdef", tmp))
    cache.verify(folder)
    blob = folder / "sub" / "blob.bin"
    blob.write_bytes(b"abcdeX")
    with pytest.raises(cache.CorruptArtefactError, match="blob.bin is corrupt.*delete .* to rebuild"):
        cache.verify(folder)
    with pytest.raises(ValueError, match="corrupt"):  # a ValueError, as the loaders' own sha256 checks
        cache.verify(folder, ["sub/blob.bin"])
    cache.verify(folder, ["meta.json"])  # a reader that checks only what it loads is not held up
    blob.unlink()
    with pytest.raises(cache.CorruptArtefactError, match="missing"):
        cache.verify(folder)


def test_rebuild_replaces_an_entry_and_a_finished_entry_is_not_rebuilt(tmp_path):
    log = str(tmp_path / "log")
    folder = cache.get_or_build(tmp_path / "k", lambda tmp: _build_payload(log, b"one", tmp))
    cache.get_or_build(folder, lambda tmp: _build_payload(log, b"two", tmp))
    assert (folder / "sub" / "blob.bin").read_bytes() == b"one" and len(open(log).read().split()) == 1
    cache.get_or_build(folder, lambda tmp: _build_payload(log, b"two", tmp), rebuild=True)
    assert (folder / "sub" / "blob.bin").read_bytes() == b"two"
    assert not list(tmp_path.glob(".k.*"))  # neither a temp nor the replaced entry is left behind
    cache.verify(folder)


def test_a_folder_with_the_marker_but_no_manifest_is_a_finished_entry(tmp_path):
    """Shipped assets and entries written before the cache existed: recognised by their marker, not rebuilt."""
    legacy = tmp_path / "k"
    legacy.mkdir()
    (legacy / "weights").write_bytes(b"w")
    assert cache.find([tmp_path / "missing", legacy], "weights") == legacy
    assert cache.get_or_build(legacy, lambda tmp: pytest.fail("rebuilt"), marker="weights") == legacy
    cache.verify(legacy)  # no manifest: the loader's own check applies


def test_records_are_0644_under_umask_022_and_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        paths.atomic_write_json(tmp_path / "a.json", {"x": 1})
        store.atomic_write_json(tmp_path / "b.json", {"x": 2})  # the driver's records go through the same writer
        assert store.atomic_write_bytes is paths.atomic_write_bytes
        for name in ("a.json", "b.json"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
        os.umask(0o077)
        paths.atomic_write_bytes(tmp_path / "c.bin", b"c")
        assert stat.S_IMODE((tmp_path / "c.bin").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.bin"]  # no temp file left
