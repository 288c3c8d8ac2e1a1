"""Shared fixtures. Tests never touch the network or the user's cache."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Session-scoped fixtures run before function-scoped monkeypatching: point the cache at a temp folder at import time
# so nothing (not even a session fixture) writes into the user's ~/.cache/graftbench.
import tempfile  # noqa: E402

os.environ["GRAFTBENCH_CACHE"] = tempfile.mkdtemp(prefix="graftbench-test-cache-")
# The Hugging Face cache too, before huggingface_hub is imported (it reads HF_HOME into its constants at import): no
# test reads weights from, or writes them into, the user's cache; a test of missing hub weights finds none.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="graftbench-test-hf-home-")
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "DIFFUSERS_CACHE"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402
import torch  # noqa: E402

# Micro configs gain nothing from intra-op threads, and on a 2-core machine two spinning OpenMP pools (pytest + any
# other torch process) slow each other down many-fold. One thread keeps the suite fast and its timings stable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes its cache into a per-session temp folder, never ~/.cache/graftbench (HF_HOME: above)."""
    monkeypatch.setenv("GRAFTBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.manual_seed(0)


# Under CI a skip must not hide a part of the suite that did not run: only a missing GPU may skip (its reason must
# name the GPU / CUDA); any other skip (no pdflatex, no sbatch, too few CPUs, a missing reference) is a failure.
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
GPU_REASON = ("gpu", "cuda")


def skip_allowed_under_ci(reason: str) -> bool:
    return any(word in reason.lower() for word in GPU_REASON)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not skip_allowed_under_ci(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true, where only GPU skips are allowed: {reason}"


@pytest.fixture(scope="session")
def micro_preset():
    from graft_core.presets import get_preset

    return get_preset("micro")


@pytest.fixture(scope="session")
def micro_teacher(micro_preset, tmp_path_factory):
    """A micro teacher trained in ~1 s (20 steps): real weights, real code path, no quality."""
    from graft_core.models.teacher import load_teacher_dir, teacher_key, train_teacher

    folder = tmp_path_factory.mktemp("teacher") / teacher_key(micro_preset.teacher, micro_preset.data)
    train_teacher(micro_preset, folder, progress=False)
    return load_teacher_dir(folder)


@pytest.fixture
def lock_waits(monkeypatch):
    """An event set each time ``benchmark.jobs.run_lock`` sleeps between polls, i.e. a waiter is blocked on a held
    lock: tests wait for it (with a deadline) instead of sleeping and hoping the other thread got there."""
    import threading
    import time as real_time

    from benchmark import jobs

    event = threading.Event()

    class Clock:  # benchmark.jobs' view of the time module
        def __getattr__(self, name):
            return getattr(real_time, name)

        @staticmethod
        def sleep(seconds):
            event.set()
            real_time.sleep(seconds)

    monkeypatch.setattr(jobs, "time", Clock())
    return event
