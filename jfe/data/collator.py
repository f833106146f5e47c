"""Batches of training examples -> model features for the query side and the candidate side."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from PIL import Image

from jfe.formatting import EmbedInput, tokenize_batch

logger = logging.getLogger(__name__)

# Under DDP or ZeRO-3 a rank whose batch has no image would skip the vision tower while the others
# run it; the collective calls then stop matching and the job hangs. A one-image extra row keeps
# every rank on the same code path. It is the LAST row of its side and is dropped after pooling,
# and rows never attend to each other, so it changes no real embedding.
DUMMY_IMAGE = Image.new("RGB", (28, 28))


class ContrastiveCollator:
    """Queries (with instructions) in one processor call, candidates (positives first, then every
    query's hard negatives; no instructions) in another.

    Output keys: ``query`` and ``candidates`` (features, each possibly with one trailing dummy row),
    ``num_queries`` and ``num_candidates`` (the real rows), ``qids``.
    """

    def __init__(self, processor, max_text_tokens: int = 512, dummy_image: bool = True):
        self.processor = processor
        self.max_text_tokens = max_text_tokens
        self.dummy_image = dummy_image
        self.skipped: Counter[str] = Counter()

    def _side(self, items: list[EmbedInput], instructions: list[str | None]):
        if self.dummy_image and all(item.image is None for item in items):
            items = [*items, EmbedInput(image=DUMMY_IMAGE)]
            instructions = [*instructions, None]
        return tokenize_batch(self.processor, items, instructions, self.max_text_tokens)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        kept = []
        for example in examples:
            if "skipped" in example:
                self.skipped["examples"] += 1
                logger.warning("skipped example %s: %s", example["qid"], example["skipped"])
                continue
            self.skipped["negatives"] += len(example.get("bad", ()))
            kept.append(example)
        if not kept:
            raise ValueError("every example of this batch was skipped as bad input")
        queries = [e["query"] for e in kept]
        candidates = [e["positive"] for e in kept] + [n for e in kept for n in e["negatives"]]
        return {
            "query": self._side(queries, [e["instruction"] for e in kept]),
            "candidates": self._side(candidates, [None] * len(candidates)),
            "num_queries": len(queries),
            "num_candidates": len(candidates),
            "qids": [e["qid"] for e in kept],
        }
