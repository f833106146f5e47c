"""Training examples: a query, its instruction, one positive and k hard negatives, images loaded."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

import torch

from jfe.data.instructions import Instructions
from jfe.data.mbeir import Query, Record, dataset_id_of
from jfe.data.mimic import MimicOptions, augment
from jfe.data.sampler import example_rng
from jfe.formatting import EmbedInput
from jfe.inputs import BadInputError, load_image
from jfe.lengths import guessed_length

logger = logging.getLogger(__name__)


class Pool(Protocol):
    def __getitem__(self, did: str) -> Record: ...
    def __contains__(self, did: str) -> bool: ...
    def dids_by_dataset(self) -> dict[str, list[str]]: ...


@dataclass
class ExampleOptions:
    """Set from the training options of the same names (documented in :class:`jfe.train.config.TrainConfig`)."""

    num_negatives: int = 0
    fill_random_negatives: bool = True
    skip_bad_inputs: bool = False
    seed: int = 0  # seeds positives, negatives, instructions and MiMIC draws
    mimic: MimicOptions = field(default_factory=MimicOptions)


class Stream(IntEnum):
    """Independent random streams per example: each is ``example_rng(seed + stream, epoch, index)``,
    so drawing more of one (say, negatives) never shifts another (the positive)."""

    POSITIVE = 0
    NEGATIVES = 1
    INSTRUCTION = 2
    AUGMENTATION = 3


class ContrastiveDataset(torch.utils.data.Dataset):
    """Indexed by ``(example_index, epoch)`` (what :class:`TaskBatchSampler` yields), so each epoch
    redraws positives, negatives, instructions and augmentations, reproducibly on every rank."""

    def __init__(
        self,
        queries: list[Query],
        pool: Pool,
        instructions: Instructions | None = None,
        mined: dict[str, list[str]] | None = None,
        options: ExampleOptions | None = None,
    ):
        self.queries = queries
        self.pool = pool
        self.instructions = instructions
        self.mined = mined or {}
        self.options = options or ExampleOptions()
        self._by_dataset: dict[str, list[str]] | None = None
        for q in queries:
            missing = [d for d in q.positives if d not in pool]
            if missing or not q.positives:
                raise BadInputError(f"query {q.id}: positive(s) {missing or '[]'} not in the candidate pool")

    def __len__(self) -> int:
        return len(self.queries)

    def groups(self) -> dict[str, list[int]]:
        """Example indices by dataset/task, for task-homogeneous batching."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, q in enumerate(self.queries):
            groups[q.dataset].append(i)
        return dict(groups)

    def length_of(self, index: int) -> int:
        """A cheap proxy of the query's token count, for length-grouped batches."""
        q = self.queries[index]
        return guessed_length(q.text, q.image is not None)

    def _rng(self, stream: Stream, epoch: int, index: int) -> random.Random:
        return example_rng(self.options.seed + stream, epoch, index)

    def positive_of(self, index: int, epoch: int) -> str:
        return self._rng(Stream.POSITIVE, epoch, index).choice(self.queries[index].positives)

    def negatives_of(self, index: int, epoch: int) -> list[str]:
        q = self.queries[index]
        k = self.options.num_negatives
        if k == 0:
            return []
        rng = self._rng(Stream.NEGATIVES, epoch, index)
        positives = set(q.positives)
        listed = self.mined.get(q.id, q.negatives)
        hard = [d for d in dict.fromkeys(listed) if d not in positives and d in self.pool]
        chosen = rng.sample(hard, k) if len(hard) > k else hard
        if len(chosen) < k and self.options.fill_random_negatives:
            if self._by_dataset is None:
                self._by_dataset = self.pool.dids_by_dataset()
            same = self._by_dataset.get(dataset_id_of(q.positives[0]), [])
            taken = positives | set(chosen)
            for _ in range(10 * k):
                if len(chosen) == k or len(taken) >= len(same):
                    break
                did = rng.choice(same)
                if did not in taken:
                    chosen.append(did)
                    taken.add(did)
        return chosen

    def instruction_of(self, index: int, epoch: int) -> str | None:
        q = self.queries[index]
        if q.instruction is not None or self.instructions is None:
            return q.instruction
        return self.instructions.for_train(q, self._rng(Stream.INSTRUCTION, epoch, index))

    def _load(self, record: Record, side: str, rng) -> EmbedInput:
        image = load_image(record.image, f"{side} {record.id}") if record.image else None
        text = record.text
        if self.options.mimic.applies(side):
            text, image = augment(text, image, self.options.mimic, rng)
        return EmbedInput(text=text, image=image)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        q = self.queries[index]
        rng = self._rng(Stream.AUGMENTATION, epoch, index)
        try:
            query = self._load(q, "query", rng)
            positive = self._load(self.pool[self.positive_of(index, epoch)], "candidate", rng)
        except BadInputError as err:
            if not self.options.skip_bad_inputs:
                raise
            return {"qid": q.id, "skipped": str(err)}
        negatives, negative_ids, bad = [], [], []
        for did in self.negatives_of(index, epoch):
            try:
                negatives.append(self._load(self.pool[did], "candidate", rng))
                negative_ids.append(did)
            except BadInputError as err:
                if not self.options.skip_bad_inputs:
                    raise
                bad.append(str(err))
        return {
            "qid": q.id,
            "query": query,
            "instruction": self.instruction_of(index, epoch),
            "positive": positive,
            "negatives": negatives,
            "positive_id": self.positive_of(index, epoch),
            "negative_ids": negative_ids,
            "relevant_ids": list(q.positives),
            "bad": bad,
        }
