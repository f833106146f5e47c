"""Exact MeanMaxSim (late-interaction) scores: for query token vectors Q (n_q, D) and an item's token
vectors X (n_x, D), ``(1 / n_q) * sum_i max_j Q_i . X_j``, sentence-transformers'
``util.similarity.maxsim(..., length_normalize=True)`` ("meanmaxsim").

Items are stored as token rows plus offsets (:class:`jfe.retrieval.multi_shards.MultiVectors`), so
scoring a set of items is one gather of their rows, one matrix product against every query token, a
segmented max over each item's rows and a segmented mean over each query's rows. It runs in numpy:
on the 2-core AMD EPYC it was measured on, numpy's gather (``np.take``) and ``np.maximum.reduceat``
were each several times faster than torch's ``index_select`` and ``scatter_reduce`` (and padding to
the longest item, as sentence-transformers does, wastes the padded products), so torch queries are
accepted and moved to CPU numpy. Work is split into chunks of items so that the gathered rows and the
similarity block stay under ``chunk_elements`` floats, whatever the number of candidates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

CHUNK_ELEMENTS = 1 << 23  # 32 MiB of float32 per chunk: large enough for full-speed matrix products


class TokenVectors(Protocol):
    """Anything holding items as token rows: ``vectors`` (T, D) and ``offsets`` (N + 1,) int64."""

    vectors: np.ndarray
    offsets: np.ndarray


def as_tokens(x: Any, dim: int | None = None, what: str = "query") -> np.ndarray:
    """``x`` (a numpy array or a torch tensor on any device) as a C-contiguous float32 (n, D) array, n >= 1."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} must be a non-empty 2-D float array (n_tokens, D), got {x.dtype} {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what} has dim {x.shape[1]}, the documents have dim {dim}")
    return np.ascontiguousarray(x, dtype=np.float32)


def runs(lengths: np.ndarray, budget: int) -> Iterator[tuple[int, int]]:
    """Consecutive ``(start, stop)`` runs covering ``lengths``, each as long as fits in ``budget``
    (the sum of its lengths) but at least one element."""
    ends = np.cumsum(lengths)
    start = 0
    while start < len(ends):
        done = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + budget, side="right")))
        yield start, stop
        start = stop


def _rows(docs: TokenVectors, doc_rows: np.ndarray | Sequence[int] | None) -> np.ndarray:
    n = len(docs.offsets) - 1
    if doc_rows is None:
        return np.arange(n, dtype=np.int64)
    rows = np.asarray(doc_rows, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"doc_rows must be item indices in [0, {n}), got {rows.min()}..{rows.max()}")
    return rows


def maxsim_matrix(
    queries: Sequence[Any],
    docs: TokenVectors,
    doc_rows: np.ndarray | Sequence[int] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> np.ndarray:
    """MeanMaxSim of every query (each (n_q, D)) against the items ``doc_rows`` of ``docs`` (all by
    default): float32 (len(queries), len(doc_rows)), column j for item ``doc_rows[j]``."""
    dim = int(docs.vectors.shape[1])
    qs = [as_tokens(q, dim, f"query {i}") for i, q in enumerate(queries)]
    rows = _rows(docs, doc_rows)
    out = np.empty((len(qs), rows.size), dtype=np.float32)
    if not qs or not rows.size:
        return out
    stacked = qs[0] if len(qs) == 1 else np.concatenate(qs)
    q_lengths = np.array([len(q) for q in qs])
    q_starts = np.cumsum(q_lengths) - q_lengths
    starts, lengths = docs.offsets[rows], docs.offsets[rows + 1] - docs.offsets[rows]
    ends = np.cumsum(lengths)  # each item's end in the concatenation of the candidates' rows
    for begin, stop in runs(lengths, max(1, chunk_elements // (dim + len(stacked)))):
        done = ends[begin - 1] if begin else 0
        local = ends[begin:stop] - done - lengths[begin:stop]  # item starts within the chunk
        # token row of each gathered position: the item's first row plus the position within the item
        token_rows = np.arange(ends[stop - 1] - done) + np.repeat(starts[begin:stop] - local, lengths[begin:stop])
        block = np.take(docs.vectors, token_rows, axis=0).astype(np.float32, copy=False)
        best = np.maximum.reduceat(stacked @ block.T, local, axis=1)  # (sum n_q, items): max over each item's rows
        out[:, begin:stop] = np.add.reduceat(best, q_starts, axis=0) / q_lengths[:, None]
    return out


def maxsim_scores(
    query: Any,
    docs: TokenVectors,
    doc_rows: np.ndarray | Sequence[int] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> np.ndarray:
    """MeanMaxSim of one query (n_q, D) against the items ``doc_rows`` of ``docs`` (all by default):
    float32 (len(doc_rows),)."""
    return maxsim_matrix([query], docs, doc_rows, chunk_elements)[0]
