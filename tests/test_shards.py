"""The one shard array (``graft_core.runtime.shards``) that sampling, synthetic pairs and ImageNet encoding share."""
from __future__ import annotations

import json

import pytest

from graft_core.errors import SettingsMismatch
from graft_core.runtime.shards import ShardArray, check_settings, check_task, consecutive_seed, spaced_seed


def test_tasks_cover_every_shard_once_whatever_their_number(tmp_path):
    array = ShardArray(10, 3, lambda s: tmp_path / f"DONE_{s}")
    assert array.num_shards == 4 and [array.bounds(s) for s in range(4)] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    for world in (1, 2, 3, 4, 7):
        shards = sorted(s for rank in range(world) for s in array.mine(rank, world))
        assert shards == [0, 1, 2, 3]
    assert array.mine(1, 3) == [1] and array.missing() == [0, 1, 2, 3]
    array.mark_done(1, {"shard": 1})
    assert json.loads((tmp_path / "DONE_1").read_text()) == {"shard": 1}
    assert array.todo(1, 2) == ([3], [1]) and array.missing() == [0, 2, 3] and array.missing([1, 3, 3]) == [3]
    for rank, world in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="outside"):
            check_task(rank, world)
    with pytest.raises(ValueError, match="positive"):
        ShardArray(0, 3, lambda s: tmp_path)


def test_per_shard_seeds_do_not_overlap():
    """Batch ``i`` of shard ``s`` draws from ``seed(s) + i``: the ranges of two shards never meet."""
    batches = 7
    spaced = [set(range(spaced_seed(3, s), spaced_seed(3, s) + 999)) for s in range(5)]
    consecutive = [set(range(consecutive_seed(3, s, batches), consecutive_seed(3, s, batches) + batches))
                   for s in range(5)]
    for ranges in (spaced, consecutive):
        assert sum(len(r) for r in ranges) == len(set().union(*ranges))
    assert sorted(set().union(*consecutive)) == list(range(3, 3 + 5 * batches))


def test_settings_are_written_once_and_other_settings_refused(tmp_path):
    path = tmp_path / "plan.json"
    check_settings(path, {"seed": 0, "shape": (2, 3)}, what="samples", info={"note": "not compared"})
    assert json.loads(path.read_text()) == {"seed": 0, "shape": [2, 3], "note": "not compared"}
    check_settings(path, {"seed": 0, "shape": (2, 3)}, what="samples", info={"note": "other"})  # the same set
    with pytest.raises(SettingsMismatch, match=r"holds samples made with other settings \{'seed': \(0, 1\)\}"):
        check_settings(path, {"seed": 1, "shape": (2, 3)}, what="samples")
    assert json.loads(path.read_text())["seed"] == 0  # nothing overwritten
