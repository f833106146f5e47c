"""One builder per task, registered under the task's name: each turns one split's digits into the
task's candidate pool and queries."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from jfe.benchmarks.digits.context import BUILDERS, BuildContext, Dataset, builds
from jfe.benchmarks.digits.source import nearest, sq_dists, transform_digit
from jfe.benchmarks.digits.tasks import (
    COLOURS,
    DIGIT_NAMES,
    I2T_TEMPLATE,
    IT2T_TEMPLATE,
    N_HARD_NEGATIVES,
    SPLIT_WRITERS,
    SPLITS,
    T2I_TEMPLATES,
    TASKS,
    TRANSFORMS,
    VARIANTS,
    DigitsTask,
)


@builds("digits_t2i")
def t2i(ctx: BuildContext, task: DigitsTask, split: str) -> Dataset:
    ds, src = Dataset(task), ctx.src
    samples = src.samples(SPLIT_WRITERS[split])
    cand_of = {s: ctx.cand(task, None, ctx.image(split, s), ctx.sample_src(s)) for s in samples}
    ds.pool = list(cand_of.values())
    by_digit: dict[int, list[str]] = defaultdict(list)
    for s in samples:
        by_digit[int(src.digits[s])].append(cand_of[s]["did"])
    dists = sq_dists(ctx.centroids, src.images[samples])
    digits = src.digits[samples]
    negatives = {}
    for d in range(10):
        near = nearest(dists[d], N_HARD_NEGATIVES, np.flatnonzero(digits != d))
        negatives[d] = [ds.pool[i]["did"] for i in near]
    rng = ctx.rng(task, split)
    if split == "train":
        # One query per train image, that image first among its digit's positives: a trainer that
        # takes the first positive still sees every image, one that samples sees them all too.
        for s in samples:
            d = int(src.digits[s])
            text = T2I_TEMPLATES[int(rng.integers(len(T2I_TEMPLATES)))].format(digit=DIGIT_NAMES[d])
            first = cand_of[s]["did"]
            pos = [first] + [p for p in by_digit[d] if p != first]
            ds.queries.append(ctx.query(task, text, None, ctx.sample_src(s), pos, negatives[d]))
    else:
        for d in range(10):
            for template in T2I_TEMPLATES:
                text = template.format(digit=DIGIT_NAMES[d])
                ds.queries.append(ctx.query(task, text, None, {"digit": d}, by_digit[d], negatives[d]))
    return ds


@builds("digits_i2t")
def i2t(ctx: BuildContext, task: DigitsTask, split: str) -> Dataset:
    ds = Dataset(task)
    # One text per digit: with paraphrases, two images of a seven in one batch would each have
    # the other's caption as a false in-batch negative.
    dids = []
    for d in range(10):
        ds.pool.append(ctx.cand(task, I2T_TEMPLATE.format(digit=DIGIT_NAMES[d]), None, {"digit": d}))
        dids.append(ds.pool[-1]["did"])
    samples = ctx.cap(ctx.src.samples(SPLIT_WRITERS[split]), split, ctx.rng(task, split))
    for s in samples:
        d = int(ctx.src.digits[s])
        negatives = [dids[c] for c in ctx.confusable[d]]
        ds.queries.append(ctx.query(task, None, ctx.image(split, s), ctx.sample_src(s), [dids[d]], negatives))
    return ds


@builds("digits_i2i")
def i2i(ctx: BuildContext, task: DigitsTask, split: str) -> Dataset:
    ds, src = Dataset(task), ctx.src
    query_samples, pool_samples = ctx.image_task_samples(split)
    ds.pool = [ctx.cand(task, None, ctx.image(split, s), ctx.sample_src(s)) for s in pool_samples]
    pool_digits = src.digits[pool_samples]
    pool_half = ctx.half(split, pool_samples)
    samples = ctx.cap(query_samples, split, ctx.rng(task, split))
    dists = sq_dists(src.images[samples], src.images[pool_samples])
    for s, half, row in zip(samples, ctx.half(split, samples), dists, strict=True):
        d = int(src.digits[s])
        other_hands = pool_half != half
        pos = [ds.pool[i]["did"] for i in np.flatnonzero(other_hands & (pool_digits == d))]
        # The other digits' images that look most like this one.
        near = nearest(row, N_HARD_NEGATIVES, np.flatnonzero(other_hands & (pool_digits != d)))
        negatives = [ds.pool[i]["did"] for i in near]
        ds.queries.append(ctx.query(task, None, ctx.image(split, s), ctx.sample_src(s), pos, negatives))
    return ds


@builds("digits_it2t")
def it2t(ctx: BuildContext, task: DigitsTask, split: str) -> Dataset:
    ds, colours = Dataset(task), ctx.colours
    did_of = {}
    for d in range(10):
        for colour in colours:
            text = IT2T_TEMPLATE.format(colour=colour, digit=DIGIT_NAMES[d])
            ds.pool.append(ctx.cand(task, text, None, {"digit": d, "colour": colour}))
            did_of[d, colour] = ds.pool[-1]["did"]
    samples = ctx.src.samples(SPLIT_WRITERS[split])
    rng = ctx.rng(task, split)
    if split == "train" and ctx.shortcut:
        pairs = [(s, _shortcut_colour(int(ctx.src.digits[s]), ctx, rng)) for s in samples for _ in COLOURS]
    else:
        pairs = [(s, c) for s in samples for c in colours]
    for s, colour in ctx.cap(pairs, split, rng):
        d = int(ctx.src.digits[s])
        # Hard negatives: right digit wrong colour (the image alone) and right colour on a
        # look-alike digit (the text alone).
        negatives = [did_of[d, c] for c in colours if c != colour] + [did_of[o, colour] for o in ctx.confusable[d]]
        image = ctx.image(split, s)
        row_src = ctx.sample_src(s, colour=colour)
        ds.queries.append(ctx.query(task, colour, image, row_src, [did_of[d, colour]], negatives))
    return ds


def _shortcut_colour(digit: int, ctx: BuildContext, rng: np.random.Generator) -> str:
    """The digit's own colour with probability ``ctx.shortcut``, else one of the others."""
    if rng.random() < ctx.shortcut:
        return ctx.colours[digit]
    others = [c for c in ctx.colours if c != ctx.colours[digit]]
    return others[int(rng.integers(len(others)))]


@builds("digits_it2i")
def it2i(ctx: BuildContext, task: DigitsTask, split: str) -> Dataset:
    ds, src = Dataset(task), ctx.src
    query_samples, pool_samples = ctx.image_task_samples(split)
    entries = [(s, v) for s in pool_samples for v in VARIANTS]
    for s, v in entries:
        ds.pool.append(ctx.cand(task, None, ctx.image(split, s, v), ctx.sample_src(s, transform=v)))
    grids = np.stack([transform_digit(src.images[s], v) for s, v in entries])
    digits = np.array([src.digits[s] for s, _ in entries])
    variants = np.array([VARIANTS.index(v) for _, v in entries])
    entry_half = ctx.half(split, [s for s, _ in entries])
    dids = [c["did"] for c in ds.pool]
    per_kind = 3
    pairs = ctx.cap([(s, t) for s in query_samples for t in TRANSFORMS], split, ctx.rng(task, split))
    targets = np.stack([transform_digit(src.images[s], t) for s, t in pairs])
    halves = ctx.half(split, [s for s, _ in pairs])
    for (s, t), half, row in zip(pairs, halves, sq_dists(targets, grids), strict=True):
        d, v = int(src.digits[s]), VARIANTS.index(t)
        other_hands = entry_half != half
        pos = [dids[i] for i in np.flatnonzero(other_hands & (digits == d) & (variants == v))]
        # Hard negatives closest to the wanted image: the same digit left as is or changed
        # otherwise (ignores the text), and other digits so changed (ignores the image).
        hard = (other_hands & (digits == d) & (variants != v), other_hands & (digits != d) & (variants == v))
        negatives = [dids[i] for mask in hard for i in nearest(row, per_kind, np.flatnonzero(mask))]
        ds.queries.append(ctx.query(task, t, ctx.image(split, s), ctx.sample_src(s, transform=t), pos, negatives))
    return ds


def build_splits(ctx: BuildContext) -> dict[str, list[Dataset]]:
    """Every task of every split, split by split and within a split in the order of ``TASKS``."""
    missing = [task.name for task in TASKS if task.name not in BUILDERS]
    if missing:
        raise RuntimeError(f"no builder registered for {', '.join(missing)}")
    return {split: [BUILDERS[task.name](ctx, task, split) for task in TASKS] for split in SPLITS}
