"""Task-homogeneous batches: every step draws its whole global batch from one dataset/task, so
in-batch negatives are meaningful, and splits it into one distinct slice per rank."""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


# Length grouping sorts examples within random windows of this many global batches: wide enough
# that a batch finds inputs of similar length, narrow enough that batches still mix across epochs.
LENGTH_GROUP_BATCHES = 16


def example_rng(seed: int, epoch: int, index: int) -> random.Random:
    """Per-example randomness that any process can recompute (string seeds hash deterministically)."""
    return random.Random(f"{seed}/{epoch}/{index}")


class TaskBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's slice of each global batch as ``[(example_index, epoch), ...]``.

    All ranks compute the same epoch plan from ``seed`` and ``epoch``, so they agree on the task of
    every step without communicating. ``positive_of(index, epoch)`` names the positive an example
    will use; two examples with the same positive share a batch only when the task has too few
    distinct positives to fill one (the loss then masks the false negatives). Incomplete batches
    are dropped so every step has the same shape. With ``length_of``, batches are grouped by
    length inside random windows of ``group_size`` batches (less padding).
    """

    def __init__(
        self,
        groups: dict[str, Sequence[int]],
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        weights: dict[str, float] | None = None,
        positive_of: Callable[[int, int], str] | None = None,
        length_of: Callable[[int], int] | None = None,
        group_size: int = LENGTH_GROUP_BATCHES,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if weights is not None and (unknown := set(weights) - set(groups)):
            raise ValueError(f"weights name unknown task(s) {sorted(unknown)}; tasks are {sorted(groups)}")
        self.groups = {task: list(indices) for task, indices in groups.items()}
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.weights = weights
        self.positive_of = positive_of
        self.length_of = length_of
        self.group_size = group_size
        self.epoch = 0
        self.global_batch_size = batch_size * world_size
        small = [t for t, idx in self.groups.items() if len(idx) < self.global_batch_size]
        if small:
            logger.warning("tasks with fewer examples than one global batch are never drawn: %s", small)
        if len(small) == len(self.groups):
            raise ValueError(
                f"no task has a full global batch of {self.global_batch_size} examples "
                f"(sizes: { {t: len(i) for t, i in self.groups.items()} })"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _task_batches(self, task: str, rng: random.Random, epoch: int) -> list[list[int]]:
        order = list(self.groups[task])
        rng.shuffle(order)
        if self.length_of is not None:
            # length grouping: sort within random windows of group_size batches, so a batch holds
            # inputs of similar length (less padding) while batch contents stay random across epochs
            window = self.global_batch_size * self.group_size
            order = [i for s in range(0, len(order), window) for i in sorted(order[s : s + window], key=self.length_of)]
        queue = deque(order)
        batches: list[list[int]] = []
        while len(queue) >= self.global_batch_size:
            batch: list[int] = []
            used: set[str] = set()
            skipped: list[int] = []
            while queue and len(batch) < self.global_batch_size:
                index = queue.popleft()
                positive = self.positive_of(index, epoch) if self.positive_of else None
                if positive is not None and positive in used:
                    skipped.append(index)
                    continue
                batch.append(index)
                if positive is not None:
                    used.add(positive)
            if len(batch) < self.global_batch_size:
                # fewer distinct positives than the batch needs (e.g. a 10-text pool): share them;
                # the loss masks a shared positive out of the other queries' negatives
                fill = self.global_batch_size - len(batch)
                if len(batch) + len(skipped) < self.global_batch_size:
                    break
                batch += skipped[:fill]
                skipped = skipped[fill:]
            batches.append(batch)
            queue.extendleft(reversed(skipped))  # skipped examples go first into the next batch
        return batches

    def plan(self, epoch: int) -> list[list[int]]:
        """The global batches of ``epoch``, in step order (identical on every rank)."""
        rng = random.Random(f"{self.seed}/plan/{epoch}")
        per_task = {t: self._task_batches(t, rng, epoch) for t in sorted(self.groups)}
        if self.weights is None:
            batches = [b for t in sorted(per_task) for b in per_task[t]]
            rng.shuffle(batches)  # tasks appear in proportion to their size
            return batches
        tasks = [t for t in sorted(per_task) if per_task[t] and self.weights.get(t, 0) > 0]
        steps = sum(len(per_task[t]) for t in tasks)
        cursors = dict.fromkeys(tasks, 0)
        batches = []
        for _ in range(steps):
            task = rng.choices(tasks, weights=[self.weights[t] for t in tasks])[0]
            if cursors[task] == len(per_task[task]):  # a heavily weighted task cycles with a fresh shuffle
                per_task[task] = self._task_batches(task, rng, epoch)
                cursors[task] = 0
            batches.append(per_task[task][cursors[task]])
            cursors[task] += 1
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.plan(epoch):
            yield [(index, epoch) for index in batch[lo:hi]]

    def __len__(self) -> int:
        return len(self.plan(self.epoch))
