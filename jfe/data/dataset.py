"""Training examples: a query, its instruction, one positive and k hard negatives, images loaded."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Protocol

import torch

from jfe.data.instructions import Instructions
from jfe.data.mbeir import Query, Record, dataset_id_of
from jfe.data.mimic import MimicOptions, augment
from jfe.data.sampler import example_rng
from jfe.data.uniir import dataset_name, format_query, format_string
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
    uniir_format: bool = False  # UniIR's format_string on texts, the joined prompt and query text included


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
        self.queries, self.missing_positives = present_positives(queries, pool)

    def __len__(self) -> int:
        return len(self.queries)

    def groups(self) -> dict[str, list[int]]:
        """Example indices by task group (see :func:`group_labels`), for task-homogeneous batching."""
        # the instruction table names the dataset ids (getattr: it may be a stand-in without names)
        names = getattr(self.instructions, "names", None)
        keys = [group_key(q) for q in self.queries]
        labels = group_labels(self.queries, names)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            groups[labels[key]].append(i)
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

    def _candidate(self, did: str, rng) -> EmbedInput:
        record = self.pool[did]
        text = (format_string(record.text) or None) if self.options.uniir_format else record.text
        return self._load(record, "candidate", rng, text)

    def _load(self, record: Record, side: str, rng, text: str | None) -> EmbedInput:
        image = load_image(record.image, f"{side} {record.id}") if record.image else None
        if self.options.mimic.applies(side):
            text, image = augment(text, image, self.options.mimic, rng)
        return EmbedInput(text=text, image=image)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        q = self.queries[index]
        rng = self._rng(Stream.AUGMENTATION, epoch, index)
        instruction, text = self.instruction_of(index, epoch), q.text
        if self.options.uniir_format:
            # as UniIR embeds a query: format_string(f"{format_string(prompt)} {query_txt}")
            instruction, text = format_query(instruction, q.text)
        try:
            query = self._load(q, "query", rng, text)
            positive = self._candidate(self.positive_of(index, epoch), rng)
        except BadInputError as err:
            if not self.options.skip_bad_inputs:
                raise
            return {"qid": q.id, "skipped": str(err)}
        negatives, negative_ids, bad = [], [], []
        for did in self.negatives_of(index, epoch):
            try:
                negatives.append(self._candidate(did, rng))
                negative_ids.append(did)
            except BadInputError as err:
                if not self.options.skip_bad_inputs:
                    raise
                bad.append(str(err))
        return {
            "qid": q.id,
            "query": query,
            "instruction": instruction,
            "positive": positive,
            "negatives": negatives,
            "positive_id": self.positive_of(index, epoch),
            "negative_ids": negative_ids,
            "relevant_ids": list(q.positives),
            "bad": bad,
        }


def present_positives(queries: list[Query], pool: Pool) -> tuple[list[Query], int]:
    """``queries`` with only the positives ``pool`` holds, and how many were dropped.

    UniIR draws one positive per query and needs only that one in the pool, so a missing positive is
    dropped and counted (logged once); a query with none left raises :class:`BadInputError`.
    """
    kept, dropped, affected, examples = [], 0, 0, []
    for q in queries:
        present = tuple(d for d in q.positives if d in pool)
        if not present:
            what = (
                f"none of its positive(s) {list(q.positives)} is" if q.positives else "it has no positive, so none is"
            )
            raise BadInputError(f"query {q.id}: {what} in the candidate pool")
        if len(present) < len(q.positives):
            missing = [d for d in q.positives if d not in pool]
            dropped += len(missing)
            affected += 1
            if len(examples) < 3:
                examples.append(f"{q.id}: {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
            q = replace(q, positives=present)
        kept.append(q)
    if dropped:
        logger.warning(
            "%d positive(s) of %d query row(s) are not in the candidate pool and are never drawn (e.g. %s)",
            dropped,
            affected,
            "; ".join(examples),
        )
    return kept, dropped


GroupKey = tuple[str, int | None]


def group_key(q: Query) -> GroupKey:
    """An M-BEIR query's (dataset id of its qid, task_id): one file may hold many datasets and tasks,
    as UniIR's union training file does. A pair-format query (no task_id): its ``task``."""
    return (q.dataset_id, q.task_id) if q.task_id is not None else (q.dataset, None)


def group_labels(queries: list[Query], names: dict[str, str] | None = None) -> dict[GroupKey, str]:
    """A readable, unique name per :func:`group_key` of ``queries`` (``task_weights`` use them).

    - a group that is exactly the queries of one per-dataset file (M-BEIR's layout): the dataset's
      name from the file name, e.g. ``digits_t2i``, as jfe named groups before it grouped by task;
    - otherwise (a union file): the dataset id's name (``names``, e.g. from the instruction table,
      then UniIR's), with ``/task<N>`` when that dataset has several tasks, e.g. ``MSCOCO/task0``;
    - a pair-format group: its ``task``.
    """
    files: dict[GroupKey, set[str]] = defaultdict(set)
    keys_of_file: dict[str, set[GroupKey]] = defaultdict(set)
    tasks: dict[str, set[int]] = defaultdict(set)
    for q in queries:
        key = group_key(q)
        files[key].add(q.dataset)
        keys_of_file[q.dataset].add(key)
        if key[1] is not None:
            tasks[key[0]].add(key[1])
    labels: dict[GroupKey, str] = {}
    for key, where in files.items():
        prefix, task = key
        file = next(iter(where)) if len(where) == 1 else ""
        if task is None:
            labels[key] = prefix
        elif file and keys_of_file[file] == {key}:
            labels[key] = file
        else:
            name = dataset_name(prefix, names)
            labels[key] = name if len(tasks[prefix]) == 1 else f"{name}/task{task}"
    # names from different sources could meet; ids cannot
    seen: dict[str, list[GroupKey]] = defaultdict(list)
    for key, label in labels.items():
        seen[label].append(key)
    for keys in seen.values():
        if len(keys) > 1:
            labels.update({key: f"{key[0]}/task{key[1]}" for key in keys})
    return labels
