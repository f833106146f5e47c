"""Batches of training examples -> model features for the query side and the candidate side."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Any

import torch
from PIL import Image

from jfe.formatting import EmbedInput, tokenize_batch

logger = logging.getLogger(__name__)

# Under DDP or ZeRO-3 a rank whose batch has no image would skip the vision tower while the others
# run it; the collective calls then stop matching and the job hangs. A one-image extra row keeps
# every rank on the same code path. It is the LAST row of its side and is dropped after pooling,
# and rows never attend to each other, so it changes no real embedding.
DUMMY_IMAGE = Image.new("RGB", (28, 28))


class ContrastiveCollator:
    """Queries (with instructions) and candidates (positives first, then every query's hard
    negatives; no instructions), each side in one processor call, or one call per chunk of
    ``chunk_size`` rows when GradCache is on.

    Output keys: ``query`` and ``candidates`` (lists of chunk features; a chunk without any image
    gets one trailing dummy-image row), ``query_counts`` and ``candidate_counts`` (real rows per
    chunk), ``qids``.
    """

    def __init__(self, processor, max_text_tokens: int = 512, dummy_image: bool = True, chunk_size: int = 0):
        self.processor = processor
        self.max_text_tokens = max_text_tokens
        self.dummy_image = dummy_image
        self.chunk_size = chunk_size
        self.skipped: Counter[str] = Counter()

    def _features(self, items: list[EmbedInput], instructions: list[str | None]):
        if self.dummy_image and all(item.image is None for item in items):
            items = [*items, EmbedInput(image=DUMMY_IMAGE)]
            instructions = [*instructions, None]
        return tokenize_batch(self.processor, items, instructions, self.max_text_tokens)

    def _side(self, items: list[EmbedInput], instructions: list[str | None]) -> tuple[list, list[int]]:
        size = self.chunk_size or len(items)
        starts = range(0, len(items), size)
        chunks = [self._features(items[i : i + size], instructions[i : i + size]) for i in starts]
        return chunks, [len(items[i : i + size]) for i in starts]

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
        query_chunks, query_counts = self._side(queries, [e["instruction"] for e in kept])
        cand_chunks, cand_counts = self._side(candidates, [None] * len(candidates))
        candidate_ids = [e["positive_id"] for e in kept] + [d for e in kept for d in e["negative_ids"]]
        relevant = [[id_hash(d) for d in e["relevant_ids"]] for e in kept]
        width = max(len(r) for r in relevant)
        return {
            "query": query_chunks,
            "candidates": cand_chunks,
            "query_counts": query_counts,
            "candidate_counts": cand_counts,
            # hashed ids let the loss mask in-batch false negatives, across ranks too
            "positive_ids": torch.tensor([r + [-1] * (width - len(r)) for r in relevant], dtype=torch.long),
            "candidate_ids": torch.tensor([id_hash(d) for d in candidate_ids], dtype=torch.long),
            "qids": [e["qid"] for e in kept],
        }


def id_hash(identifier: str) -> int:
    """A stable non-negative 63-bit integer for a string id (Python's hash() differs per process)."""
    digest = hashlib.blake2b(identifier.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)
