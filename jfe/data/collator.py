"""Batches of training examples -> model features for the query side and the candidate side."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Any

import torch

from jfe.formatting import EmbedInput, render, to_features
from jfe.fusion import check_fusion, split_parts
from jfe.lengths import batches_by_length, rendered_token_counts, split_by_length
from jfe.pixels import placeholder_image

logger = logging.getLogger(__name__)

# A rank whose step never runs the vision tower while the others do hangs the job: DDP and ZeRO-2
# wait for gradients it never makes, and under ZeRO-3 every module call is a collective, so there
# each chunk must run the tower. A side (or, per chunk, a chunk) without images therefore gets one
# extra dummy-image row: the LAST row of its chunk, dropped after pooling. Rows never attend to each
# other, so it changes no real embedding. It is the processor's cheapest image (jfe.pixels).


class ContrastiveCollator:
    """Queries (with instructions) and candidates (positives first, then every query's hard
    negatives; no instructions), each side as one or more chunks, one processor call per chunk.

    Chunks: one per side by default; ``length_chunks`` > 1 splits each side into that many chunks
    of rows of similar token length (the split that pads the fewest tokens); GradCache's
    ``chunk_size`` cuts each side, sorted by length, into chunks of that many rows. Rows never
    attend to each other, so chunking changes no embedding, only how much is padding.

    ``dummy_image``: "side" (a side without images gets one dummy row, in the chunk where it adds
    the least padding; enough for DDP and ZeRO-2), "chunk" (every chunk without images gets one;
    what ZeRO-3 needs) or "none".

    Output keys: ``query`` and ``candidates`` (lists of chunk features), ``query_rows`` and
    ``candidate_rows`` (real rows per chunk: a dummy-image row is not counted), ``query_order``
    and ``candidate_order`` (the batch row of each chunk row, chunks concatenated; with ``fusion:
    late`` an image+text row is two chunk rows, its image and its text), the id tensors
    for the loss, and ``qids``. These are exactly ``ContrastiveModel.forward``'s arguments.
    """

    def __init__(
        self,
        processor,
        max_text_tokens: int = 512,
        dummy_image: str = "side",
        chunk_size: int = 0,
        length_chunks: int = 1,
        fusion: str = "early",
    ):
        if dummy_image not in ("side", "chunk", "none"):
            raise ValueError(f"dummy_image={dummy_image!r} is not one of 'side', 'chunk', 'none'")
        self.processor = processor
        self.max_text_tokens = max_text_tokens
        self.dummy_image = dummy_image
        self.chunk_size = chunk_size
        self.length_chunks = length_chunks
        self.fusion = check_fusion(fusion)
        self.skipped: Counter[str] = Counter()
        self._dummy = EmbedInput(image=placeholder_image(processor))
        dummy = [self._dummy]
        self._dummy_text = render(processor, dummy, [None], max_text_tokens)[0]
        self._dummy_length = rendered_token_counts(processor, [self._dummy_text], dummy)[0]

    def _groups(self, lengths: list[int] | None, n: int) -> list[list[int]]:
        if lengths is None:
            return [list(range(n))]
        if not self.chunk_size:
            return split_by_length(lengths, self.length_chunks)
        # GradCache's chunks keep a fixed size (its memory bound); sorting only makes them tighter.
        return batches_by_length(lengths, self.chunk_size)

    def _dummy_chunks(self, groups: list[list[int]], items: list[EmbedInput], lengths: list[int] | None) -> set[int]:
        """The chunks that get a dummy-image row."""
        if self.dummy_image == "none":
            return set()
        imageless = {c for c, g in enumerate(groups) if all(items[i].image is None for i in g)}
        if self.dummy_image == "chunk":
            return imageless
        if len(imageless) < len(groups):
            return set()  # the side has an image
        if len(groups) == 1:
            return {0}
        longest = [max(lengths[i] for i in g) for g in groups]
        added = [
            max(top, self._dummy_length) * (len(g) + 1) - top * len(g) for g, top in zip(groups, longest, strict=True)
        ]
        return {added.index(min(added))}

    def _side(self, items: list[EmbedInput], instructions: list[str | None]) -> tuple[list, list[int], torch.Tensor]:
        owner = list(range(len(items)))
        if self.fusion == "late":
            # an image+text input is two rows, its image and its text; the model combines them
            items, instructions, owner = split_parts(items, instructions)
        # rendered once: the prompts give the exact lengths and every chunk's features
        texts = render(self.processor, items, instructions, self.max_text_tokens)
        chunked = self.chunk_size or self.length_chunks > 1
        lengths = rendered_token_counts(self.processor, texts, items) if chunked else None
        groups = self._groups(lengths, len(items))
        with_dummy = self._dummy_chunks(groups, items, lengths)
        chunks = []
        for c, g in enumerate(groups):
            rows, prompts = [items[i] for i in g], [texts[i] for i in g]
            if c in with_dummy:
                rows, prompts = [*rows, self._dummy], [*prompts, self._dummy_text]
            chunks.append(to_features(self.processor, prompts, rows))
        order = torch.tensor([owner[i] for g in groups for i in g], dtype=torch.long)
        return chunks, [len(g) for g in groups], order

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
        query_chunks, query_rows, query_order = self._side(queries, [e["instruction"] for e in kept])
        cand_chunks, cand_rows, cand_order = self._side(candidates, [None] * len(candidates))
        candidate_ids = [e["positive_id"] for e in kept] + [d for e in kept for d in e["negative_ids"]]
        relevant = [[id_hash(d) for d in e["relevant_ids"]] for e in kept]
        width = max(len(r) for r in relevant)
        return {
            "query": query_chunks,
            "candidates": cand_chunks,
            "query_rows": query_rows,
            "candidate_rows": cand_rows,
            "query_order": query_order,
            "candidate_order": cand_order,
            # hashed ids let the loss mask in-batch false negatives, across ranks too
            "positive_ids": torch.tensor([r + [-1] * (width - len(r)) for r in relevant], dtype=torch.long),
            "candidate_ids": torch.tensor([id_hash(d) for d in candidate_ids], dtype=torch.long),
            "qids": [e["qid"] for e in kept],
        }


def id_hash(identifier: str) -> int:
    """A stable non-negative 63-bit integer for a string id (Python's hash() differs per process)."""
    digest = hashlib.blake2b(identifier.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)
