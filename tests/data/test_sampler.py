from collections import Counter

import pytest

from jfe.data.sampler import TaskBatchSampler

GROUPS = {"a": list(range(0, 100)), "b": list(range(100, 140)), "c": list(range(140, 150))}


def _task(index):
    return "a" if index < 100 else "b" if index < 140 else "c"


def test_batches_are_task_homogeneous_and_ranks_split_them():
    ranks = [TaskBatchSampler(GROUPS, batch_size=4, world_size=2, rank=r, seed=3) for r in range(2)]
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) == 100 // 8 + 40 // 8 + 10 // 8
    for step, (b0, b1) in enumerate(zip(*per_rank, strict=True)):
        indices = [i for i, _ in b0 + b1]
        assert len(b0) == len(b1) == 4
        assert len(set(indices)) == 8, f"step {step}: ranks overlap"
        assert len({_task(i) for i in indices}) == 1, f"step {step}: mixed tasks"
    # every example is used at most once per epoch
    used = Counter(i for batches in per_rank for b in batches for i, _ in b)
    assert max(used.values()) == 1


def test_plan_is_deterministic_per_seed_and_epoch():
    s = TaskBatchSampler(GROUPS, batch_size=4, world_size=2, rank=0, seed=3)
    again = TaskBatchSampler(GROUPS, batch_size=4, world_size=2, rank=0, seed=3)
    assert list(s) == list(again)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    assert all(epoch == 1 for b in s for _, epoch in b)
    assert list(TaskBatchSampler(GROUPS, batch_size=4, world_size=2, rank=0, seed=4)) != first


def test_no_duplicate_positive_in_a_batch():
    # examples share positives in pairs: i and i+1 (even i) have the same positive
    groups = {"a": list(range(64))}
    s = TaskBatchSampler(groups, batch_size=8, seed=0, positive_of=lambda i, e: f"p{i // 2}")
    batches = list(s)
    assert len(batches) >= 6
    for b in batches:
        positives = [f"p{i // 2}" for i, _ in b]
        assert len(positives) == len(set(positives))


def test_weights_steer_the_task_mix():
    s = TaskBatchSampler(GROUPS, batch_size=2, seed=0, weights={"a": 0.0, "b": 1.0, "c": 1.0})
    tasks = Counter(_task(b[0][0]) for b in s)
    assert tasks["a"] == 0
    assert tasks["b"] > 0 and tasks["c"] > 0
    assert abs(tasks["b"] - tasks["c"]) <= 0.4 * sum(tasks.values())


def test_default_mix_is_proportional_to_size():
    s = TaskBatchSampler(GROUPS, batch_size=5, seed=0)
    tasks = Counter(_task(b[0][0]) for b in s)
    assert tasks == {"a": 20, "b": 8, "c": 2}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="rank 2 is outside world size 2"):
        TaskBatchSampler(GROUPS, batch_size=4, world_size=2, rank=2)
    with pytest.raises(ValueError, match=r"weights name unknown task\(s\) \['z'\]"):
        TaskBatchSampler(GROUPS, batch_size=4, weights={"z": 1.0})
    with pytest.raises(ValueError, match="no task has a full global batch of 400"):
        TaskBatchSampler(GROUPS, batch_size=200, world_size=2)


def test_length_grouping_reduces_the_spread_inside_batches():
    lengths = {i: (i * 7919) % 200 for i in range(400)}  # scrambled lengths
    groups = {"a": list(range(400))}

    def spread(sampler):
        return sum(max(lengths[i] for i, _ in b) - min(lengths[i] for i, _ in b) for b in sampler)

    plain = TaskBatchSampler(groups, batch_size=8, seed=0)
    grouped = TaskBatchSampler(groups, batch_size=8, seed=0, length_of=lengths.__getitem__, group_size=10)
    assert spread(grouped) < 0.3 * spread(plain)
    # still every example once per epoch, and still reshuffled across epochs
    assert sorted(i for b in grouped for i, _ in b) == list(range(400))
    first = list(grouped)
    grouped.set_epoch(1)
    assert list(grouped) != first
