"""A recall target instead of a guessed knob: the smallest IVF ``nprobe`` (or HNSW ``efSearch``)
whose recall@k against exact search reaches the target.

The queries are a seeded sample of the indexed vectors themselves, each one's own row left out of
both its exact and its approximate neighbours (it would otherwise be a free hit: a vector always
lies in the IVF list nearest to it). Real queries come from another distribution (instructions,
another modality), so a target met on the pool's own vectors is a floor to check against a
labelled query set, not a guarantee.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from jfe.retrieval.index import load_index, set_search_params, update_index_meta
from jfe.retrieval.shards import iter_shards, sample_rows

EF_SEARCH_MAX = 4096


@dataclass(frozen=True)
class RecallTarget:
    target: float  # recall@k to reach, in (0, 1]
    k: int = 10  # neighbours compared with exact search
    queries: int = 1000  # sampled vectors used as queries
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1:
            raise ValueError(f"--target-recall must be in (0, 1], got {self.target}")
        if self.k < 1 or self.queries < 1:
            raise ValueError(f"--recall-k and --recall-queries must be >= 1, got {self.k} and {self.queries}")


def query_rows(total: int, target: RecallTarget) -> np.ndarray:
    """The sorted rows sampled as queries (all rows of a pool smaller than the sample)."""
    n = min(target.queries, total)
    return np.sort(np.random.default_rng(target.seed + 1).choice(total, size=n, replace=False))


def _drop_rows(found: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each query's first ``k`` results other than its own row (-1 fills a short list)."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for q, (hits, own) in enumerate(zip(found, rows, strict=True)):
        kept = hits[(hits != own) & (hits >= 0)][:k]
        out[q, : len(kept)] = kept
    return out


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact neighbours that ``found`` holds."""
    k = exact.shape[1]
    return float(np.mean([len(set(f[f >= 0]) & set(e[e >= 0])) / k for f, e in zip(found, exact, strict=True)]))


def exact_neighbours(queries: np.ndarray, blocks: Iterable[np.ndarray], k: int) -> np.ndarray:
    """Each query's ``k`` nearest rows by inner product over ``blocks`` (the indexed vectors, in
    order), one block in memory at a time. Not ``faiss.contrib``'s ``knn_ground_truth``: it shifts
    the -1 a block smaller than ``k`` returns into a real row number."""
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    start = 0
    for block in blocks:
        flat = faiss.IndexFlatIP(block.shape[1])
        flat.add(block)
        scores, found = flat.search(queries, min(k, len(block)))
        heap.add_result(scores, np.where(found >= 0, found + start, -1))
        start += len(block)
    heap.finalize()
    return heap.I


def _knob(index: faiss.Index) -> tuple[str, int] | None:
    """("nprobe", nlist) for IVF indexes, ("efSearch", its cap) for HNSW, None when nothing to tune."""
    try:
        return "nprobe", int(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        pass
    return ("efSearch", EF_SEARCH_MAX) if "HNSW" in type(faiss.downcast_index(index)).__name__ else None


def tune(
    index: faiss.Index,
    queries: np.ndarray,
    rows: np.ndarray,
    database: Iterable[np.ndarray],
    target: RecallTarget,
) -> dict:
    """The smallest setting of the index's knob reaching ``target``; ``queries`` are the vectors at
    ``rows`` of the index, ``database`` is every indexed vector in blocks, in order. Returns
    ``{"search_params": {...}, "recall": {...}}`` for index.json; ``recall.reached`` says whether the
    target was met (at the knob's cap otherwise)."""
    k = target.k
    if index.ntotal <= k + 1:
        raise ValueError(
            f"--target-recall: the index holds {index.ntotal} vectors; --recall-k {k} needs more than {k + 1}"
        )
    exact = _drop_rows(exact_neighbours(queries, database, k + 1), rows, k)
    knob = _knob(index)
    argument = {"nprobe": "nprobe", "efSearch": "ef_search"}[knob[0]] if knob else None  # set_search_params' name

    def measure(value: int | None) -> float:
        if value is not None:
            set_search_params(index, **{argument: value})
        _, found = index.search(queries, k + 1)
        return recall_at_k(_drop_rows(found, rows, k), exact)

    if knob is None:
        measured = measure(None)
        params, value = {}, None
    else:
        name, cap = knob
        tried: dict[int, float] = {}
        value = 1 if name == "nprobe" else min(max(16, k + 1), cap)
        while True:  # doubling to the first setting that reaches the target (or the cap)
            tried[value] = measure(value)
            if tried[value] >= target.target or value >= cap:
                break
            value = min(2 * value, cap)
        # FAISS searches HNSW with max(efSearch, k): settings at or below k are all the same one
        floor = 0 if name == "nprobe" else k
        low = max((v for v in tried if tried[v] < target.target), default=floor)
        if tried[value] >= target.target:
            while value - low > 1:  # bisect between the last miss and the first hit
                mid = (low + value) // 2
                tried[mid] = measure(mid)
                low, value = (low, mid) if tried[mid] >= target.target else (mid, value)
        measured = tried[value]
        set_search_params(index, **{argument: value})
        params = {name: value}
    return {
        "search_params": params,
        "recall": {
            "target": target.target,
            "k": k,
            "measured": round(measured, 4),
            "reached": measured >= target.target,
            "queries": len(rows),
            "on": "a seeded sample of the indexed vectors, each one's own row left out",
        },
    }


def tune_index(
    out_dir: Path,
    pairs: list[tuple[Path, dict]],
    vectors: np.ndarray | None,
    target: RecallTarget,
    index: faiss.Index | None = None,
) -> dict:
    """Tune the index saved in ``out_dir`` from the shards ``pairs`` and record the result in its
    ``index.json``; returns it. ``vectors`` and ``index``: the same, still in memory when the build
    held them (else the vectors are read shard by shard and the index is mapped from disk)."""
    if index is None:
        index, _, _ = load_index(out_dir, mmap=True)
    rows = query_rows(index.ntotal, target)
    if vectors is not None:
        queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
        step = 65536
        database = (np.asarray(vectors[s : s + step], dtype=np.float32) for s in range(0, len(vectors), step))
    else:
        queries = sample_rows(pairs, rows)
        shards = iter_shards(pairs, mapped=True, check_duplicates=False, verify=False)  # checked when indexed
        database = (np.asarray(v, dtype=np.float32) for _, _, v in shards)
    result = tune(index, queries, rows, database, target)
    update_index_meta(out_dir, result)
    return result
