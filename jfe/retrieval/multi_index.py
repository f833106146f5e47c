"""Late-interaction (multi-vector) search, ColBERTv1's two stages: a FAISS inner-product index over
every item's token vectors gives candidates (the items owning the ``depth`` nearest tokens of each
query vector), then exact MeanMaxSim (:mod:`jfe.retrieval.maxsim`) ranks those candidates.

A saved multi-vector index is one folder: ``index.faiss`` (token position t = token row t),
``ids.txt`` (item ids), ``token_items.npy`` (the item owning each token row), ``vectors.safetensors``
(the items' token vectors and offsets, for the exact rerank) and, last (the completion marker),
``index.json`` with ``"kind": "multi"``. Results are ``(scores, dids)`` as in
:mod:`jfe.retrieval.search`: float32 (Q, k), ``-inf`` and a shorter ``dids[q]`` when fewer than k
items were found.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from safetensors.numpy import save_file

from jfe.atomic import atomic_path, atomic_write_text
from jfe.retrieval.index import (
    IDS_FILE,
    INDEX_FILE,
    META_FILE,
    _maybe_to_gpu,
    _to_cpu,
    build_index,
    read_faiss,
    read_index_meta,
    set_search_params,
)
from jfe.retrieval.maxsim import as_tokens, maxsim_matrix, maxsim_scores, runs
from jfe.retrieval.multi_shards import OFFSETS_KEY, VECTORS_KEY, MultiVectors, check_offsets, read_tensors
from jfe.retrieval.shards import _check_ids

TOKEN_ITEMS_FILE = "token_items.npy"
VECTORS_FILE = "vectors.safetensors"
DEFAULT_FACTORY = "IVF{auto},Flat"
_SEARCH_ROWS = 16384  # query vectors per FAISS call: bounds the (rows, depth) label block


@dataclass
class MultiIndex:
    """A token-level FAISS index over ``docs``' token rows, and the item owning each row."""

    index: faiss.Index
    docs: MultiVectors
    token_items: np.ndarray  # (T,) int64
    factory: str | None = None

    @property
    def ids(self) -> list[str]:
        return self.docs.ids


def resolve_factory(factory: str, n_tokens: int, train_size: int) -> str:
    """``factory`` with ``{auto}`` replaced by an IVF list count for ``n_tokens`` vectors: about
    4 sqrt(T) (as tools/bench's ANN figures pick), but never under FAISS's 39 training points a list."""
    nlist = max(1, min(int(4 * math.sqrt(n_tokens)), min(n_tokens, train_size) // 39))
    return factory.replace("{auto}", str(nlist))


def build_multi_index(
    mv: MultiVectors,
    factory: str = DEFAULT_FACTORY,
    train_size: int = 100_000,
    seed: int = 0,
    use_gpu: bool | None = None,
) -> MultiIndex:
    """Index every token vector of ``mv`` with ``faiss.index_factory`` (``{auto}`` resolved by
    :func:`resolve_factory`), trained on a seeded sample of ``train_size`` tokens if needed."""
    if not len(mv):
        raise ValueError("cannot build a multi-vector index from no items")
    resolved = resolve_factory(factory, len(mv.vectors), train_size)
    # token positions stand in for build_index's ids: it only counts them and checks they are distinct
    index = build_index(mv.vectors, range(len(mv.vectors)), resolved, train_size, seed, use_gpu)
    return MultiIndex(index, mv, mv.token_items(), resolved)


def save_multi_index(mi: MultiIndex, out_dir: str | os.PathLike, dtype: str = "float16") -> Path:
    """Write ``mi`` into ``out_dir``, ``index.json`` last. The rerank's token vectors are stored as
    ``dtype`` (float16 halves them; scores then move by about 1e-3)."""
    out_dir = Path(out_dir)
    if dtype not in ("float16", "float32"):
        raise ValueError(f"{out_dir}: dtype must be float16 or float32, got {dtype!r}")
    _check_ids(mi.ids, str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)
    cpu = _to_cpu(mi.index)
    with atomic_path(out_dir / INDEX_FILE) as tmp:
        faiss.write_index(cpu, str(tmp))
    with atomic_path(out_dir / VECTORS_FILE) as tmp:
        save_file({VECTORS_KEY: mi.docs.vectors.astype(dtype, copy=False), OFFSETS_KEY: mi.docs.offsets}, str(tmp))
    with atomic_path(out_dir / TOKEN_ITEMS_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, mi.token_items)
    atomic_write_text(out_dir / IDS_FILE, "".join(f"{i}\n" for i in mi.ids))
    meta = {"kind": "multi", "similarity": "meanmaxsim", "factory": mi.factory,
            "index_type": type(faiss.downcast_index(cpu)).__name__, "dim": mi.docs.dim, "count": len(mi.docs),
            "tokens": int(cpu.ntotal), "metric": "inner_product", "dtype": dtype}  # fmt: skip
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    return out_dir


def load_multi_index(dir: str | os.PathLike, mmap: bool = False, use_gpu: bool | None = False) -> MultiIndex:
    """Load a folder written by :func:`save_multi_index`, every part checked against ``index.json``.

    ``mmap`` maps the FAISS index's IVF lists instead of reading them (as
    :func:`jfe.retrieval.index.load_index`); the rerank's token vectors are always read, as float32."""
    dir = Path(dir)
    meta = read_index_meta(dir, "multi")
    count, dim = meta["count"], meta["dim"]
    try:
        tokens = int(meta["tokens"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{dir / META_FILE}: malformed index metadata: tokens: {err}") from err
    index = read_faiss(dir / INDEX_FILE, mmap)
    if index.ntotal != tokens or index.d != dim:
        raise ValueError(f"{dir / INDEX_FILE}: holds {index.ntotal}x{index.d} but {META_FILE} says {tokens}x{dim}")
    vectors, offsets = read_tensors(dir / VECTORS_FILE, (VECTORS_KEY, OFFSETS_KEY))
    if vectors.shape != (tokens, dim):
        raise ValueError(f"{dir / VECTORS_FILE}: vectors of shape {vectors.shape}, {META_FILE} says ({tokens}, {dim})")
    check_offsets(offsets, count, tokens, str(dir / VECTORS_FILE))
    ids = (dir / IDS_FILE).read_text(encoding="utf-8").splitlines()
    if len(ids) != count:
        raise ValueError(f"{dir / IDS_FILE}: {len(ids)} ids but {META_FILE} says {count} items")
    docs = MultiVectors(ids, vectors, offsets)
    try:
        token_items = np.load(dir / TOKEN_ITEMS_FILE)
    except (OSError, ValueError) as err:
        raise ValueError(f"{dir / TOKEN_ITEMS_FILE}: unreadable: {err}") from err
    # a map out of step with the offsets would rerank the wrong items: compare it whole
    if token_items.shape != (tokens,) or not np.array_equal(token_items, docs.token_items()):
        raise ValueError(f"{dir / TOKEN_ITEMS_FILE}: does not match the offsets in {dir / VECTORS_FILE}")
    return MultiIndex(_maybe_to_gpu(index, use_gpu), docs, token_items.astype(np.int64, copy=False), meta["factory"])


def multi_candidates(mi: MultiIndex, queries: Sequence[Any], depth: int, nprobe: int | None = None) -> list[np.ndarray]:
    """For each query (n_q, D), the sorted item rows owning the ``depth`` nearest tokens (inner
    product) of any of its vectors, as one FAISS search over all query vectors finds them."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    qs = [as_tokens(q, mi.index.d, f"query {i}") for i, q in enumerate(queries)]
    if nprobe is not None:
        set_search_params(mi.index, nprobe=nprobe)
    depth = min(depth, mi.index.ntotal)  # more only yields -1 padding
    lengths = np.array([len(q) for q in qs], dtype=np.int64)
    out: list[np.ndarray] = []
    # one FAISS call per run of queries: few calls, and the (vectors, depth) labels stay bounded
    for start, stop in runs(lengths, _SEARCH_ROWS):
        _, labels = mi.index.search(np.concatenate(qs[start:stop]), depth)
        for a, b in itertools.pairwise(np.cumsum([0, *lengths[start:stop]])):
            hits = labels[a:b].ravel()
            out.append(np.unique(mi.token_items[hits[hits >= 0]]))
    return out


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best scores, best first, ties by position (so the order is reproducible)."""
    keep = np.arange(scores.size)
    if scores.size > k:
        kth = np.partition(-scores, k - 1)[k - 1]
        keep = np.flatnonzero(-scores <= kth)  # every tie of the k-th score, so none is dropped at random
    return keep[np.argsort(-scores[keep], kind="stable")[:k]]


def _results(ranked: list[tuple[np.ndarray, np.ndarray]], ids: list[str], k: int) -> tuple[np.ndarray, list[list[str]]]:
    """(scores, dids) from each query's (scores, item rows), best first."""
    scores = np.full((len(ranked), k), -np.inf, dtype=np.float32)
    dids = []
    for q, (s, rows) in enumerate(ranked):
        scores[q, : len(s)] = s
        dids.append([ids[r] for r in rows])
    return scores, dids


def search_multi(
    mi: MultiIndex, queries: Sequence[Any], k: int, depth: int = 100, nprobe: int | None = None
) -> tuple[np.ndarray, list[list[str]]]:
    """Top-k items for each query (n_q, D) by exact MeanMaxSim over its :func:`multi_candidates`."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    qs = [as_tokens(q, mi.index.d, f"query {i}") for i, q in enumerate(queries)]  # once, if they are tensors
    ranked = []
    for q, rows in zip(qs, multi_candidates(mi, qs, depth, nprobe), strict=True):
        s = maxsim_scores(q, mi.docs, rows)
        top = _top(s, k)
        ranked.append((s[top], rows[top]))
    return _results(ranked, mi.ids, k)


def exhaustive_multi(
    queries: Sequence[Any], mv: MultiVectors, k: int, batch_size: int = 64
) -> tuple[np.ndarray, list[list[str]]]:
    """Exact top-k by MeanMaxSim over every item of ``mv`` (the reference :func:`search_multi` approximates)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranked = []
    for start in range(0, len(queries), batch_size):
        for s in maxsim_matrix(queries[start : start + batch_size], mv):
            top = _top(s, k)
            ranked.append((s[top], top))
    return _results(ranked, mv.ids, k)
