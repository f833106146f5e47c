"""What the task builders share: the source digits, id counters, the images to render, random
streams, caps, M-BEIR row makers and the registry that ties each task to its one builder.

Ids are handed out in the order the builders ask for them and each (task, split) draws from its own
stream, so the order in which builders run and call these helpers fixes the files byte for byte.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from jfe.benchmarks.digits.source import DigitsSource, nearest, sq_dists
from jfe.benchmarks.digits.tasks import (
    COLOURS,
    DIGITS_TASKS,
    MAX_QUERIES,
    SHORTCUT_COLOURS,
    SPLIT_WRITERS,
    SPLITS,
    DigitsTask,
)


@dataclass
class Dataset:
    """One task in one split: its candidate pool and queries, as M-BEIR rows."""

    task: DigitsTask
    pool: list[dict] = field(default_factory=list)
    queries: list[dict] = field(default_factory=list)


Builder = Callable[["BuildContext", DigitsTask, str], Dataset]
BUILDERS: dict[str, Builder] = {}


def builds(name: str) -> Callable[[Builder], Builder]:
    """Register the decorated function as the one builder of task ``name``."""
    if name not in DIGITS_TASKS:
        raise ValueError(f"no digits task {name!r}; the tasks are {', '.join(DIGITS_TASKS)}")

    def register(builder: Builder) -> Builder:
        if name in BUILDERS:
            raise ValueError(f"task {name!r} already has a builder ({BUILDERS[name].__qualname__})")
        BUILDERS[name] = builder
        return builder

    return register


def _src(**fields: object) -> str:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


class BuildContext:
    def __init__(self, seed: int, shortcut: float = 0.0):
        if not 0.0 <= shortcut <= 1.0:
            raise ValueError(f"shortcut must be in [0, 1], got {shortcut}")
        self.seed = seed
        self.shortcut = shortcut  # > 0: the collapse-prone variant (see SHORTCUT_COLOURS)
        self.colours = SHORTCUT_COLOURS if shortcut else COLOURS
        self.src = DigitsSource.load()
        self.next_qid: dict[int, int] = defaultdict(int)
        self.next_did: dict[int, int] = defaultdict(int)
        self.images: dict[str, dict[str, tuple[int, str]]] = {split: {} for split in SPLITS}
        train = self.src.samples(SPLIT_WRITERS["train"])
        # Class centroids from train only, so choosing hard negatives does not look at eval data.
        self.centroids = np.stack(
            [self.src.images[[i for i in train if self.src.digits[i] == d]].mean(axis=0) for d in range(10)]
        )
        centroid_dists = sq_dists(self.centroids, self.centroids)
        self.confusable = {d: [o for o in nearest(centroid_dists[d], 10) if o != d][:2] for d in range(10)}

    def image(self, split: str, sample: int, variant: str = "plain") -> str:
        """The relative path of ``sample`` under ``variant``, noted so that it gets rendered."""
        suffix = "" if variant == "plain" else f"_{variant}"
        rel = f"images/{split}/digit_{sample:04d}{suffix}.png"
        self.images[split][rel] = (sample, variant)
        return rel

    def rng(self, task: DigitsTask, split: str) -> np.random.Generator:
        # One stream per (task, split) so changing one task's sampling leaves the others unchanged.
        return np.random.default_rng([self.seed, task.dataset_id, SPLITS.index(split)])

    @staticmethod
    def cap(items: list, split: str, rng: np.random.Generator) -> list:
        """At most ``MAX_QUERIES[split]`` of ``items``, drawn without replacement, in their order."""
        cap = MAX_QUERIES[split]
        if len(items) <= cap:
            return items
        keep = np.sort(rng.choice(len(items), size=cap, replace=False))
        return [items[i] for i in keep]

    def sample_src(self, sample: int, **extra: object) -> dict:
        return {
            "digit": int(self.src.digits[sample]),
            "writer": int(self.src.writers[sample]),
            "sample": sample,
            **extra,
        }

    def query(
        self,
        task: DigitsTask,
        text: str | None,
        image: str | None,
        src: dict,
        positives: Sequence[str],
        negatives: Sequence[str],
    ) -> dict:
        """A query row with the task's next qid; negatives that are also positives are dropped."""
        self.next_qid[task.dataset_id] += 1
        pos = set(positives)
        return {
            "qid": f"{task.dataset_id}:{self.next_qid[task.dataset_id]}",
            "query_txt": text,
            "query_img_path": image,
            "query_modality": task.query_modality,
            "query_src_content": _src(**src),
            "pos_cand_list": list(positives),
            "neg_cand_list": [n for n in negatives if n not in pos],
            "task_id": task.task_id,
        }

    def cand(self, task: DigitsTask, text: str | None, image: str | None, src: dict) -> dict:
        """A candidate row with the task's next did."""
        self.next_did[task.dataset_id] += 1
        modality = "image,text" if text is not None and image is not None else ("text" if image is None else "image")
        return {
            "did": f"{task.dataset_id}:{self.next_did[task.dataset_id]}",
            "txt": text,
            "img_path": image,
            "modality": modality,
            "src_content": _src(**src),
        }

    def half(self, split: str, samples: Sequence[int]) -> np.ndarray:
        """0 for samples by the first half of the split's writers, 1 for the other half."""
        writers = SPLIT_WRITERS[split]
        return (self.src.writers[list(samples)] >= writers.start + len(writers) // 2).astype(np.int64)

    def image_task_samples(self, split: str) -> tuple[list[int], list[int]]:
        """Query samples and pool samples of a task whose queries and candidates are both images.

        A query meets only candidates from the other half of the split's writers, never its own hand.
        Eval splits ask one way, first half to second half. Train asks both ways over one pool of
        every train writer: that doubles the query images to learn from, and with only half the
        writers as queries a tiny model learns those hands by heart (train Hit@1 1.0, test 0.86).
        """
        samples = self.src.samples(SPLIT_WRITERS[split])
        halves = self.half(split, samples)
        first = [s for s, half in zip(samples, halves, strict=True) if half == 0]
        second = [s for s, half in zip(samples, halves, strict=True) if half == 1]
        if split == "train":
            return first + second, second + first
        return first, second
