"""Exact search over an embedded candidate pool, what ``jfe eval`` measures with: single vectors in
a FAISS ``Flat`` index, token vectors scored by MeanMaxSim against every candidate (no candidate
generation, so a late-interaction model's numbers are its own, not its index's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from jfe.matryoshka import truncate
from jfe.retrieval.encode import encode_items, encode_to_shards
from jfe.retrieval.index import build_index
from jfe.retrieval.items import EncodeItem
from jfe.retrieval.multi_index import exhaustive_multi
from jfe.retrieval.multi_shards import MultiVectors, read_multi_embeddings
from jfe.retrieval.search import search
from jfe.retrieval.shards import default_num_shards, read_embeddings


@dataclass
class ExactPool:
    """A pool's embeddings, ready for exact top-k: ``index`` (single) or ``tokens`` (multi)."""

    ids: list[str]
    index: faiss.Index | None = None
    tokens: MultiVectors | None = None
    dim: int | None = None  # Matryoshka: queries are cut to the index's width

    def search(self, queries: np.ndarray | list[np.ndarray], k: int) -> tuple[np.ndarray, list[list[str]]]:
        if self.tokens is not None:
            return exhaustive_multi(queries, self.tokens, k)
        return search(self.index, self.ids, truncate(queries, self.dim), k)


def embed_pool(
    embedder,
    items: list[EncodeItem],
    work: Path | None,
    batch_size: int,
    num_workers: int,
    dim: int | None = None,
    multi: bool = False,
    progress: str = "pool",
) -> ExactPool:
    """Embed ``items`` (cached as resumable shards under ``work`` when given: a rerun, another probe
    or another Matryoshka width reuses them) into an :class:`ExactPool`."""
    if work is not None:
        work = work / "multi" if multi else work
        num_shards = default_num_shards(len(items))
        encode_to_shards(
            embedder, items, work, num_shards, batch_size=batch_size, num_workers=num_workers, dtype="float32",
            multi=multi,
        )  # fmt: skip
        if multi:
            tokens = read_multi_embeddings([work])
            return ExactPool(tokens.ids, tokens=tokens)
        ids, vectors = read_embeddings([work])
    else:
        vectors, _ = encode_items(embedder, items, batch_size, num_workers, progress=progress, multi=multi)
        ids = [it.id for it in items]
        if multi:
            return ExactPool(ids, tokens=MultiVectors.from_items(ids, vectors))
    # the cache holds the full width: every Matryoshka dimension is cut from it
    return ExactPool(ids, index=build_index(truncate(vectors, dim), ids, "Flat"), dim=dim)
