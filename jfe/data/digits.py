"""A small multimodal retrieval benchmark in M-BEIR layout, built offline from scikit-learn's digits.

scikit-learn's ``load_digits`` holds 1797 handwritten digits (8x8 pixels, 16 grey levels). From
them :func:`build_digits_mbeir` writes five retrieval tasks, each its own M-BEIR dataset:

==============  =======  ==============  ==========  ==================================================
dataset         task_id  query           candidate   relevance
==============  =======  ==============  ==========  ==================================================
digits_t2i      0        text            image       "a handwritten seven" -> every image of a seven
digits_i2t      3        image           text        image of a seven -> "a handwritten seven"
digits_i2i      4        image           image       image of a seven -> sevens by other writers
digits_it2t     6        image,text      text        image of a seven + "red" -> "a red seven"
digits_it2i     7        image,text      image       image of a seven + "rotated" -> rotated sevens
==============  =======  ==============  ==========  ==================================================

The data carries no writer ids. The UCI original is stored writer by writer, so the samples, in
their original order, are cut into 43 contiguous blocks that stand in for its 43 writers. Writers
0-32 make the train split, 33-37 val and 38-42 test, so no writer of val or test is seen in
training. In tasks whose queries and candidates are both images, a query only meets candidates
by the other half of the split's writers, never itself or its own writer's hand: val and test
take their queries from the first half and their pool from the second; train asks both ways.

Images are white ink on black, upscaled to 16x16 RGB by pixel repetition; a grey level ``v`` in
0..16 becomes ``v * 255 // 16``. The transforms of ``digits_it2i`` act on the 0..16 grid before
rendering: ``rotated`` turns it by 180 degrees, ``mirrored`` flips it left to right and
``inverted`` replaces ``v`` by ``16 - v`` (black ink on white).

Everything is a function of ``seed``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

FORMAT_VERSION = 2

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS = ("red", "green", "blue", "yellow", "purple")
TRANSFORMS = ("rotated", "mirrored", "inverted")
# "plain" is the untransformed image; it is in the composed-retrieval pool but never asked for.
VARIANTS = ("plain", *TRANSFORMS)

SPLITS = ("train", "val", "test")
N_WRITERS = 43
SPLIT_WRITERS: dict[str, range] = {"train": range(0, 33), "val": range(33, 38), "test": range(38, 43)}
# Eval splits stay small enough to embed on a CPU; train is capped only to bound the file sizes.
MAX_QUERIES: dict[str, int] = {"train": 4500, "val": 200, "test": 200}
N_HARD_NEGATIVES = 5

T2I_TEMPLATES = ("a handwritten {digit}", "the digit {digit}", "the handwritten digit {digit}")
I2T_TEMPLATE = "a handwritten {digit}"
IT2T_TEMPLATE = "a {colour} {digit}"

INSTRUCTION_COLUMNS = ("query_modality", "cand_modality", "dataset_name", "dataset_id")


@dataclass(frozen=True)
class DigitsTask:
    name: str
    dataset_id: int
    task_id: int
    query_modality: str
    cand_modality: str
    prompts: tuple[str, str, str, str]
    description: str


# Dataset ids 20-24 stay clear of the ids the published M-BEIR datasets use, so this benchmark can
# be mixed with M-BEIR itself without qid/did collisions.
TASKS: tuple[DigitsTask, ...] = (
    DigitsTask(
        "digits_t2i",
        20,
        0,
        "text",
        "image",
        (
            "Retrieve an image of the handwritten digit described.",
            "Find a handwritten image of the digit named in the text.",
            "Show the handwritten digit that the text describes.",
            "Retrieve a handwriting of the described digit.",
        ),
        "text naming a digit -> every handwritten image of that digit",
    ),
    DigitsTask(
        "digits_i2t",
        21,
        3,
        "image",
        "text",
        (
            "Retrieve the name of the digit shown.",
            "Find the text that names the handwritten digit in the image.",
            "Which digit is written in this image?",
            "Retrieve the caption of the handwritten digit.",
        ),
        "image of a digit -> the text naming it (one text per digit)",
    ),
    DigitsTask(
        "digits_i2i",
        22,
        4,
        "image",
        "image",
        (
            "Find another handwriting of the same digit.",
            "Retrieve the same digit written by another writer.",
            "Find a handwritten image of the digit shown.",
            "Retrieve another image of this handwritten digit.",
        ),
        "image of a digit -> images of the same digit by other writers",
    ),
    DigitsTask(
        "digits_it2t",
        23,
        6,
        "image,text",
        "text",
        (
            "Find the caption that matches the image and the colour.",
            "Retrieve the text naming the digit shown in the given colour.",
            "Combine the handwritten digit and the colour into one caption.",
            "Find the caption of the digit in the image, coloured as the text says.",
        ),
        "image of a digit + a colour word -> the text naming both (10 digits x 5 colours)",
    ),
    DigitsTask(
        "digits_it2i",
        24,
        7,
        "image,text",
        "image",
        (
            "Find the handwritten digit after the described transformation.",
            "Retrieve the image of this digit changed as the text says.",
            "Apply the described transformation to the handwritten digit.",
            "Find the same digit, rotated, mirrored or inverted as described.",
        ),
        "image of a digit + rotated/mirrored/inverted -> that digit so transformed, by other writers",
    ),
)
DIGITS_TASKS: list[str] = [task.name for task in TASKS]


# --- source data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitsSource:
    """The sklearn digits as 0..16 integer grids, with their digit and pseudo-writer."""

    images: np.ndarray  # (n, 8, 8) int64, 0..16
    digits: np.ndarray  # (n,) int64
    writers: np.ndarray  # (n,) int64, 0..N_WRITERS-1

    @classmethod
    def load(cls) -> DigitsSource:
        from sklearn.datasets import load_digits

        data = load_digits()
        images = np.rint(data.images).astype(np.int64)
        n = len(images)
        writers = np.empty(n, dtype=np.int64)
        for writer, block in enumerate(np.array_split(np.arange(n), N_WRITERS)):
            writers[block] = writer
        return cls(images, np.asarray(data.target, dtype=np.int64), writers)

    def samples(self, writers: Iterable[int]) -> list[int]:
        return [int(i) for i in np.flatnonzero(np.isin(self.writers, list(writers)))]


def transform_digit(grid: np.ndarray, variant: str) -> np.ndarray:
    """``grid`` (8x8, 0..16) under one of :data:`VARIANTS`."""
    if variant == "plain":
        return grid
    if variant == "rotated":
        return np.rot90(grid, 2)
    if variant == "mirrored":
        return grid[:, ::-1]
    if variant == "inverted":
        return 16 - grid
    raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def render_digit(grid: np.ndarray) -> Image.Image:
    """An 8x8 0..16 grid as a 16x16 RGB image, white ink on black."""
    grey = (np.asarray(grid, dtype=np.int64) * 255 // 16).astype(np.uint8)
    big = np.repeat(np.repeat(grey, 2, axis=0), 2, axis=1)
    return Image.fromarray(np.stack([big] * 3, axis=-1))  # (h, w, 3) uint8 is RGB


def _src(**fields: object) -> str:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def _sq_dists(targets: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """Squared pixel distances between every target and every grid, shape (targets, grids).

    Integer grids go through a float64 matrix product, exact since every term stays far below 2**53,
    so the result (and any tie-breaking on it) is the same whatever the BLAS summation order.
    Fractional ones (centroids) take the slower elementwise path for the same reason.
    """
    a = targets.reshape(len(targets), -1).astype(np.float64)
    b = grids.reshape(len(grids), -1).astype(np.float64)
    if np.issubdtype(targets.dtype, np.integer) and np.issubdtype(grids.dtype, np.integer):
        return (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)


def _nearest(dists: np.ndarray, k: int, among: np.ndarray | None = None) -> list[int]:
    """Indices of the ``k`` smallest of ``dists`` (optionally only those in ``among``); ties go to
    the lower index, so the choice is reproducible."""
    among = np.arange(len(dists)) if among is None else np.asarray(among)
    return [int(among[i]) for i in np.argsort(dists[among], kind="stable")[:k]]


# --- benchmark assembly -------------------------------------------------------------------------


@dataclass
class _Dataset:
    """One task in one split: its candidate pool and queries, as M-BEIR rows."""

    task: DigitsTask
    pool: list[dict] = field(default_factory=list)
    queries: list[dict] = field(default_factory=list)


class _Builder:
    def __init__(self, seed: int):
        self.seed = seed
        self.src = DigitsSource.load()
        self.next_qid: dict[int, int] = defaultdict(int)
        self.next_did: dict[int, int] = defaultdict(int)
        self.images: dict[str, dict[str, tuple[int, str]]] = {split: {} for split in SPLITS}
        train = self.src.samples(SPLIT_WRITERS["train"])
        # Class centroids from train only, so choosing hard negatives does not look at eval data.
        self.centroids = np.stack(
            [self.src.images[[i for i in train if self.src.digits[i] == d]].mean(axis=0) for d in range(10)]
        )
        self.confusable = {}
        centroid_dists = _sq_dists(self.centroids, self.centroids)
        for d in range(10):
            self.confusable[d] = [o for o in _nearest(centroid_dists[d], 10) if o != d][:2]

    # ids and images

    def _qid(self, task: DigitsTask) -> str:
        self.next_qid[task.dataset_id] += 1
        return f"{task.dataset_id}:{self.next_qid[task.dataset_id]}"

    def _did(self, task: DigitsTask) -> str:
        self.next_did[task.dataset_id] += 1
        return f"{task.dataset_id}:{self.next_did[task.dataset_id]}"

    def _image(self, split: str, sample: int, variant: str = "plain") -> str:
        suffix = "" if variant == "plain" else f"_{variant}"
        rel = f"images/{split}/digit_{sample:04d}{suffix}.png"
        self.images[split][rel] = (sample, variant)
        return rel

    def _rng(self, task: DigitsTask, split: str) -> np.random.Generator:
        # One stream per (task, split) so changing one task's sampling leaves the others unchanged.
        return np.random.default_rng([self.seed, task.dataset_id, SPLITS.index(split)])

    @staticmethod
    def _cap(items: list, split: str, rng: np.random.Generator) -> list:
        cap = MAX_QUERIES[split]
        if len(items) <= cap:
            return items
        keep = np.sort(rng.choice(len(items), size=cap, replace=False))
        return [items[i] for i in keep]

    def _sample_src(self, sample: int, **extra: object) -> dict:
        return {
            "digit": int(self.src.digits[sample]),
            "writer": int(self.src.writers[sample]),
            "sample": sample,
            **extra,
        }

    def _query(
        self,
        task: DigitsTask,
        text: str | None,
        image: str | None,
        src: dict,
        positives: Sequence[str],
        negatives: Sequence[str],
    ) -> dict:
        pos = set(positives)
        return {
            "qid": self._qid(task),
            "query_txt": text,
            "query_img_path": image,
            "query_modality": task.query_modality,
            "query_src_content": _src(**src),
            "pos_cand_list": list(positives),
            "neg_cand_list": [n for n in negatives if n not in pos],
            "task_id": task.task_id,
        }

    def _cand(self, task: DigitsTask, text: str | None, image: str | None, src: dict) -> dict:
        modality = "image,text" if text is not None and image is not None else ("text" if image is None else "image")
        return {
            "did": self._did(task),
            "txt": text,
            "img_path": image,
            "modality": modality,
            "src_content": _src(**src),
        }

    def _half(self, split: str, samples: Sequence[int]) -> np.ndarray:
        """0 for samples by the first half of the split's writers, 1 for the other half."""
        writers = SPLIT_WRITERS[split]
        return (self.src.writers[list(samples)] >= writers.start + len(writers) // 2).astype(np.int64)

    def _image_task_samples(self, split: str) -> tuple[list[int], list[int]]:
        """Query samples and pool samples of a task whose queries and candidates are both images.

        A query meets only candidates from the other half of the split's writers, never its own hand.
        Eval splits ask one way, first half to second half. Train asks both ways over one pool of
        every train writer: that doubles the query images to learn from, and with only half the
        writers as queries a tiny model learns those hands by heart (train Hit@1 1.0, test 0.86).
        """
        samples = self.src.samples(SPLIT_WRITERS[split])
        halves = self._half(split, samples)
        first = [s for s, half in zip(samples, halves, strict=True) if half == 0]
        second = [s for s, half in zip(samples, halves, strict=True) if half == 1]
        if split == "train":
            return first + second, second + first
        return first, second

    # the five tasks

    def t2i(self, split: str) -> _Dataset:
        ds, task = _Dataset(TASKS[0]), TASKS[0]
        samples = self.src.samples(SPLIT_WRITERS[split])
        cand_of = {s: self._cand(task, None, self._image(split, s), self._sample_src(s)) for s in samples}
        ds.pool = list(cand_of.values())
        by_digit: dict[int, list[str]] = defaultdict(list)
        for s in samples:
            by_digit[int(self.src.digits[s])].append(cand_of[s]["did"])
        dists = _sq_dists(self.centroids, self.src.images[samples])
        digits = self.src.digits[samples]
        negatives = {}
        for d in range(10):
            near = _nearest(dists[d], N_HARD_NEGATIVES, np.flatnonzero(digits != d))
            negatives[d] = [ds.pool[i]["did"] for i in near]
        rng = self._rng(task, split)
        if split == "train":
            # One query per train image, that image first among its digit's positives: a trainer that
            # takes the first positive still sees every image, one that samples sees them all too.
            for s in samples:
                d = int(self.src.digits[s])
                text = T2I_TEMPLATES[int(rng.integers(len(T2I_TEMPLATES)))].format(digit=DIGIT_NAMES[d])
                first = cand_of[s]["did"]
                pos = [first] + [p for p in by_digit[d] if p != first]
                ds.queries.append(self._query(task, text, None, self._sample_src(s), pos, negatives[d]))
        else:
            for d in range(10):
                for template in T2I_TEMPLATES:
                    text = template.format(digit=DIGIT_NAMES[d])
                    ds.queries.append(self._query(task, text, None, {"digit": d}, by_digit[d], negatives[d]))
        return ds

    def i2t(self, split: str) -> _Dataset:
        ds, task = _Dataset(TASKS[1]), TASKS[1]
        # One text per digit: with paraphrases, two images of a seven in one batch would each have
        # the other's caption as a false in-batch negative.
        dids = []
        for d in range(10):
            ds.pool.append(self._cand(task, I2T_TEMPLATE.format(digit=DIGIT_NAMES[d]), None, {"digit": d}))
            dids.append(ds.pool[-1]["did"])
        samples = self._cap(self.src.samples(SPLIT_WRITERS[split]), split, self._rng(task, split))
        for s in samples:
            d = int(self.src.digits[s])
            negatives = [dids[c] for c in self.confusable[d]]
            ds.queries.append(self._query(task, None, self._image(split, s), self._sample_src(s), [dids[d]], negatives))
        return ds

    def i2i(self, split: str) -> _Dataset:
        ds, task = _Dataset(TASKS[2]), TASKS[2]
        query_samples, pool_samples = self._image_task_samples(split)
        ds.pool = [self._cand(task, None, self._image(split, s), self._sample_src(s)) for s in pool_samples]
        pool_digits = self.src.digits[pool_samples]
        pool_half = self._half(split, pool_samples)
        samples = self._cap(query_samples, split, self._rng(task, split))
        dists = _sq_dists(self.src.images[samples], self.src.images[pool_samples])
        for s, half, row in zip(samples, self._half(split, samples), dists, strict=True):
            d = int(self.src.digits[s])
            other_hands = pool_half != half
            pos = [ds.pool[i]["did"] for i in np.flatnonzero(other_hands & (pool_digits == d))]
            # The other digits' images that look most like this one.
            near = _nearest(row, N_HARD_NEGATIVES, np.flatnonzero(other_hands & (pool_digits != d)))
            negatives = [ds.pool[i]["did"] for i in near]
            ds.queries.append(self._query(task, None, self._image(split, s), self._sample_src(s), pos, negatives))
        return ds

    def it2t(self, split: str) -> _Dataset:
        ds, task = _Dataset(TASKS[3]), TASKS[3]
        did_of = {}
        for d in range(10):
            for colour in COLOURS:
                text = IT2T_TEMPLATE.format(colour=colour, digit=DIGIT_NAMES[d])
                ds.pool.append(self._cand(task, text, None, {"digit": d, "colour": colour}))
                did_of[d, colour] = ds.pool[-1]["did"]
        pairs = [(s, c) for s in self.src.samples(SPLIT_WRITERS[split]) for c in COLOURS]
        for s, colour in self._cap(pairs, split, self._rng(task, split)):
            d = int(self.src.digits[s])
            # Hard negatives: right digit wrong colour (the image alone) and right colour on a
            # look-alike digit (the text alone).
            negatives = [did_of[d, c] for c in COLOURS if c != colour] + [did_of[o, colour] for o in self.confusable[d]]
            image = self._image(split, s)
            src = self._sample_src(s, colour=colour)
            ds.queries.append(self._query(task, colour, image, src, [did_of[d, colour]], negatives))
        return ds

    def it2i(self, split: str) -> _Dataset:
        ds, task = _Dataset(TASKS[4]), TASKS[4]
        query_samples, pool_samples = self._image_task_samples(split)
        entries = [(s, v) for s in pool_samples for v in VARIANTS]
        for s, v in entries:
            ds.pool.append(self._cand(task, None, self._image(split, s, v), self._sample_src(s, transform=v)))
        grids = np.stack([transform_digit(self.src.images[s], v) for s, v in entries])
        digits = np.array([self.src.digits[s] for s, _ in entries])
        variants = np.array([VARIANTS.index(v) for _, v in entries])
        entry_half = self._half(split, [s for s, _ in entries])
        dids = [c["did"] for c in ds.pool]
        per_kind = 3
        pairs = self._cap([(s, t) for s in query_samples for t in TRANSFORMS], split, self._rng(task, split))
        targets = np.stack([transform_digit(self.src.images[s], t) for s, t in pairs])
        halves = self._half(split, [s for s, _ in pairs])
        for (s, t), half, row in zip(pairs, halves, _sq_dists(targets, grids), strict=True):
            d, v = int(self.src.digits[s]), VARIANTS.index(t)
            other_hands = entry_half != half
            pos = [dids[i] for i in np.flatnonzero(other_hands & (digits == d) & (variants == v))]
            # Hard negatives closest to the wanted image: the same digit left as is or changed
            # otherwise (ignores the text), and other digits so changed (ignores the image).
            hard = (other_hands & (digits == d) & (variants != v), other_hands & (digits != d) & (variants == v))
            negatives = [dids[i] for mask in hard for i in _nearest(row, per_kind, np.flatnonzero(mask))]
            src = self._sample_src(s, transform=t)
            ds.queries.append(self._query(task, t, self._image(split, s), src, pos, negatives))
        return ds

    def build(self) -> dict[str, list[_Dataset]]:
        makers = (self.t2i, self.i2t, self.i2i, self.it2t, self.it2i)
        return {split: [make(split) for make in makers] for split in SPLITS}


# --- writing ------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _readme(splits: dict[str, list[_Dataset]], seed: int) -> str:
    lines = [
        "# Handwritten digits, M-BEIR layout",
        "",
        f"Built by `jfe.data.digits.build_digits_mbeir` (format {FORMAT_VERSION}, seed {seed}) from scikit-learn's",
        "`load_digits`: 8x8 digits upscaled to 16x16 RGB PNGs, white ink on black. Writers are 43 contiguous",
        "blocks of the original sample order; writers 0-32 are train, 33-37 val, 38-42 test. Where both queries",
        "and candidates are images (i2i, it2i), a query's positives and negatives are by the other half of the",
        "split's writers: val and test queries come from the first half and their pool from the second; train",
        "asks both ways over one pool.",
        "",
        "| dataset | id | task | query -> candidate | meaning |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {t.name} | {t.dataset_id} | {t.task_id} | {t.query_modality} -> {t.cand_modality} | {t.description} |"
        for t in TASKS
    ]
    lines += ["", "| dataset | " + " | ".join(f"{s} queries | {s} pool" for s in SPLITS) + " |"]
    lines += ["|---|" + "---|---|" * len(SPLITS)]
    for i, task in enumerate(TASKS):
        counts = " | ".join(f"{len(splits[s][i].queries)} | {len(splits[s][i].pool)}" for s in SPLITS)
        lines.append(f"| {task.name} | {counts} |")
    lines += [
        "",
        "Vocabulary: digit names zero..nine; colours " + ", ".join(COLOURS) + "; transforms " + ", ".join(TRANSFORMS),
        "(rotated = 180 degrees, mirrored = left-right flip, inverted = black ink on white).",
        "The train split of digits_t2i has one query per train image, that image listed first among the positives.",
        "",
    ]
    return "\n".join(lines)


def _marker(seed: int) -> str:
    return json.dumps({"builder": "jfe.data.digits", "format": FORMAT_VERSION, "seed": seed}) + "\n"


def _write_benchmark(root: Path, seed: int) -> None:
    builder = _Builder(seed)
    splits = builder.build()
    for split, datasets in splits.items():
        union: list[dict] = []
        for ds in datasets:
            name = ds.task.name
            _write_jsonl(root / "query" / split / f"mbeir_{name}_{split}.jsonl", ds.queries)
            _write_jsonl(root / "cand_pool" / "local" / f"mbeir_{name}_{split}_cand_pool.jsonl", ds.pool)
            qrels = "".join(f"{q['qid']} 0 {did} 1 {q['task_id']}\n" for q in ds.queries for did in q["pos_cand_list"])
            _write_text(root / "qrels" / split / f"mbeir_{name}_{split}_qrels.txt", qrels)
            union += ds.pool
        _write_jsonl(root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl", union)
        (root / "images" / split).mkdir(parents=True)
        for rel, (sample, variant) in sorted(builder.images[split].items()):
            render_digit(transform_digit(builder.src.images[sample], variant)).save(root / rel, format="PNG")
    rows = ["\t".join((*INSTRUCTION_COLUMNS, "prompt_1", "prompt_2", "prompt_3", "prompt_4"))]
    rows += ["\t".join((t.query_modality, t.cand_modality, t.name, str(t.dataset_id), *t.prompts)) for t in TASKS]
    _write_text(root / "instructions" / "query_instructions.tsv", "\n".join(rows) + "\n")
    _write_text(root / "README.md", _readme(splits, seed))
    # Last, so a folder with the marker is always a whole benchmark.
    _write_text(root / ".complete", _marker(seed))


def build_digits_mbeir(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build the digits benchmark into ``out_dir`` atomically and return its path.

    The files are written into a temporary folder beside ``out_dir`` and renamed into place, so
    readers see either the old benchmark or the new one. An existing complete benchmark is
    replaced; any other non-empty folder is left alone (``FileExistsError``), since it is not ours.
    """
    out = Path(out_dir)
    if out.exists() and not (out / ".complete").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not a digits benchmark built by jfe; not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would otherwise become the benchmark's mode
        _write_benchmark(tmp, seed)
        if out.exists():
            # Moved aside rather than deleted first, so the old benchmark is gone only once the new one is whole.
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / out.name, out)
                raise
        else:
            os.replace(tmp, out)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover)
    return out


def ensure_digits_mbeir(path: str | os.PathLike, seed: int = 0) -> Path:
    """The benchmark at ``path``, built only if it is missing or was built with another seed or format."""
    path = Path(path)
    marker = path / ".complete"
    if marker.is_file() and marker.read_text(encoding="utf-8") == _marker(seed):
        return path
    return build_digits_mbeir(path, seed=seed)
