"""Shared fixtures. Tests never touch the network or the user's cache."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Session-scoped fixtures run before function-scoped monkeypatching: point the cache at a temp folder at import time
# so nothing (not even a session fixture) writes into the user's ~/.cache/graftbench.
import tempfile  # noqa: E402

os.environ["GRAFTBENCH_CACHE"] = tempfile.mkdtemp(prefix="graftbench-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

# Micro configs gain nothing from intra-op threads, and on a 2-core machine two spinning OpenMP pools (pytest + any
# other torch process) slow each other down many-fold. One thread keeps the suite fast and its timings stable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes its cache into a per-session temp folder, never ~/.cache/graftbench."""
    monkeypatch.setenv("GRAFTBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def micro_preset():
    from graft_core.presets import get_preset

    return get_preset("micro")


@pytest.fixture(scope="session")
def micro_teacher(micro_preset, tmp_path_factory):
    """A micro teacher trained in ~1 s (20 steps): real weights, real code path, no quality."""
    from graft_core.teacher import load_teacher_dir, teacher_key, train_teacher

    folder = tmp_path_factory.mktemp("teacher") / teacher_key(micro_preset.teacher, micro_preset.data)
    train_teacher(micro_preset, folder, progress=False)
    return load_teacher_dir(folder)
