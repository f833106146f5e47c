"""Exact sequence lengths before tokenising, and batches split by length, so less is padding.

A batch is padded to its longest row. Sorting by a guess (characters, "has an image") leaves
much padding on M-BEIR's mix of short captions, long passages and images of many sizes, so jfe
counts the real tokens: the rendered prompt through the tokenizer, plus the image's placeholder
tokens from its size (the processor's own arithmetic, no pixels are processed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from transformers import BatchFeature

from jfe.formatting import EmbedInput, render, to_features
from jfe.fusion import combine
from jfe.multivector import Embedded
from jfe.pixels import image_tokens

# Before any image is opened, an input's length can only be guessed from its characters; an image
# counts as this many (a 256-pixel-side M-BEIR image is a few hundred visual tokens).
IMAGE_LENGTH_GUESS = 1000


def guessed_length(text: str | None, has_image: bool) -> int:
    """A cheap proxy of an input's token count that opens no image: its characters, plus
    :data:`IMAGE_LENGTH_GUESS` for an image. Used to pre-sort; exact counts decide batches."""
    return len(text or "") + (IMAGE_LENGTH_GUESS if has_image else 0)


def rendered_token_counts(processor, texts: Sequence[str], items: Sequence[EmbedInput]) -> list[int]:
    """The number of tokens each input will have once tokenised (padding aside), from the prompts
    :func:`jfe.formatting.render` made for ``items``."""
    ids = processor.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    # the rendered prompt holds one placeholder per image, which the processor expands
    return [
        len(row) + (image_tokens(processor, it.image.height, it.image.width) - 1 if it.image is not None else 0)
        for row, it in zip(ids, items, strict=True)
    ]


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices sorted by length and cut into batches of ``batch_size`` (the last may be short)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collated_by_length(
    processor, items: Sequence[EmbedInput], instructions: Sequence[str | None], max_text_tokens: int, batch_size: int
) -> Iterator[tuple[list[int], BatchFeature]]:
    """(row indices, model features) for batches of rows of similar exact length. Prompts are
    rendered once, for the lengths and the features both."""
    items = list(items)
    texts = render(processor, items, list(instructions), max_text_tokens)
    for idx in batches_by_length(rendered_token_counts(processor, texts, items), batch_size):
        yield idx, to_features(processor, [texts[i] for i in idx], [items[i] for i in idx])


def split_by_length(lengths: Sequence[int], parts: int) -> list[list[int]]:
    """Row indices in ``parts`` groups (or fewer, if there are fewer rows) of similar length that
    pad to the fewest tokens in total: the optimal split of the length-sorted rows into contiguous
    groups, by dynamic programming. Groups come shortest first; each is sorted by length."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    n = len(order)
    parts = max(1, min(parts, n))
    if n == 0:
        return []
    sorted_len = np.asarray(lengths, dtype=np.int64)[order]
    # cost[j]: fewest padded tokens for the first j sorted rows; a group i..j-1 costs
    # (j - i) * sorted_len[j - 1] since rows are sorted.
    inf = np.iinfo(np.int64).max // 4
    cost = np.full(n + 1, inf, dtype=np.int64)
    cost[0] = 0
    cuts = np.zeros((parts, n + 1), dtype=np.int64)
    starts = np.arange(n + 1)
    for p in range(parts):
        new = np.full(n + 1, inf, dtype=np.int64)
        for j in range(1, n + 1):
            options = cost[:j] + (j - starts[:j]) * sorted_len[j - 1]
            best = int(np.argmin(options))
            new[j], cuts[p, j] = options[best], best
        cost = new
    groups, end = [], n
    for p in range(parts - 1, -1, -1):
        start = int(cuts[p, end])
        if end > start:
            groups.append(order[start:end].tolist())
        end = start
    return groups[::-1]


def in_batch_order(rows, order: torch.Tensor | None):
    """Rows embedded chunk after chunk (a tensor, or anything indexed by rows, e.g.
    :class:`jfe.multivector.Embedded`), put back in batch order (``order[p]`` is the batch row of
    chunk row ``p``), so that query ``i`` still pairs with candidate ``i``. Where several chunk rows
    share a batch row (late fusion's parts), they are combined (:func:`jfe.fusion.combine`)."""
    if order is None:
        return rows
    n = int(order.max()) + 1 if len(order) else 0
    if len(order) == n:
        return rows[torch.argsort(order.cpu())]
    # late fusion: a batch row owns several chunk rows (its image and its text), combined into one
    if isinstance(rows, Embedded):
        return Embedded(combine(rows.single, order, n))
    return combine(rows, order, n)
