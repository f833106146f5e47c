"""Top-k search over FAISS indexes, merging of per-shard results, and run files (TREC or UniIR columns).

Results are ``(scores, dids)``: ``scores`` is a float32 (Q, k) array and ``dids[q]`` the ranked doc ids of query q.
When fewer than k results exist for a query, ``dids[q]`` is shorter and the unused score slots hold ``-inf``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from jfe.atomic import atomic_open
from jfe.retrieval.trec import RUN_FORMATS

_BAD_ID = re.compile(r"\s")
Results = tuple[np.ndarray, list[list[str]]]


def search(
    index: faiss.Index, ids: list[str], queries: np.ndarray, k: int, batch_size: int = 4096
) -> tuple[np.ndarray, list[list[str]]]:
    """Search ``queries`` (Q, D) in ``index``; ``ids[i]`` names the vector at position i."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(ids) != index.ntotal:
        raise ValueError(f"{len(ids)} ids for an index holding {index.ntotal} vectors")
    q = np.asarray(queries)
    if q.ndim != 2:
        raise ValueError(f"queries must be 2-D (Q, D), got shape {q.shape}")
    if q.shape[1] != index.d:
        raise ValueError(f"query dim {q.shape[1]} does not match index dim {index.d}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    n_queries = q.shape[0]
    # asking FAISS for more than ntotal only yields -1 padding
    kk = max(1, min(k, index.ntotal))
    scores = np.full((n_queries, kk), -np.inf, dtype=np.float32)
    dids: list[list[str]] = []
    starts = range(0, n_queries, batch_size)
    for start in tqdm(starts, desc="search", unit="batch", disable=len(starts) <= 1):
        d, pos = index.search(q[start : start + batch_size], kk)
        for row_d, row_pos in zip(d, pos, strict=True):
            valid = row_pos >= 0
            # FAISS returns valid hits first, then -1 padding; keep the prefix so ranks stay contiguous
            n_valid = int(valid.sum())
            dids.append([ids[p] for p in row_pos[:n_valid]])
            scores[len(dids) - 1, :n_valid] = row_d[:n_valid]
    return scores, dids


def merge_topk(results: list[Results], k: int) -> tuple[np.ndarray, list[list[str]]]:
    """Merge per-shard top-k lists for the same queries into one top-k, by score then did (for determinism)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not results:
        raise ValueError("merge_topk needs at least one result set")
    n_queries = len(results[0][1])
    for j, (s, d) in enumerate(results):
        if len(d) != n_queries or s.shape[0] != n_queries:
            raise ValueError(f"result set {j} has {len(d)} queries, result set 0 has {n_queries}")
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    merged: list[list[str]] = []
    for q in range(n_queries):
        cands: list[tuple[float, str]] = []
        for s, d in results:
            cands.extend(zip(s[q, : len(d[q])].tolist(), d[q], strict=True))
        seen: set[str] = set()
        for _, did in cands:
            if did in seen:
                # shards partition the corpus, so an id in two of them means overlapping inputs
                raise ValueError(f"doc id {did!r} appears in more than one result set (query #{q})")
            seen.add(did)
        cands.sort(key=lambda c: (-c[0], c[1]))
        top = cands[:k]
        merged.append([did for _, did in top])
        scores[q, : len(top)] = [sc for sc, _ in top]
    return scores, merged


def write_trec_run(
    path: str | os.PathLike,
    qids: list[str],
    scores: np.ndarray,
    dids: list[list[str]],
    tag: str = "jfe",
    task_ids: Sequence[int] | None = None,
    run_format: str = "trec",
) -> Path:
    """Write a run atomically: rank from 1, score ``%.6f``, space separated.

    ``run_format="trec"``: ``qid Q0 did rank score tag``; ``"uniir"``: UniIR's ``qid Q0 did rank score run_id
    task_id`` (``tag`` as the run id), which needs ``task_ids``, one per query. Both read back with
    :func:`jfe.retrieval.trec.read_run`."""
    path = Path(path)
    if run_format not in RUN_FORMATS:
        raise ValueError(f"{path}: run_format must be one of {', '.join(RUN_FORMATS)}, got {run_format!r}")
    if len(qids) != len(dids) or scores.shape[0] != len(dids):
        raise ValueError(f"{path}: {len(qids)} qids, {scores.shape[0]} score rows, {len(dids)} result lists")
    if not tag or _BAD_ID.search(tag):
        raise ValueError(f"{path}: run tag must be non-empty without whitespace, got {tag!r}")
    suffixes = [""] * len(qids)
    if run_format == "uniir":
        if task_ids is None or len(task_ids) != len(qids):
            got = "none" if task_ids is None else len(task_ids)
            raise ValueError(f"{path}: the uniir run format needs a task id per query: {len(qids)} queries, got {got}")
        bad = [t for t in task_ids if isinstance(t, bool) or not isinstance(t, (int, np.integer))]
        if bad:
            raise ValueError(f"{path}: task ids must be integers, got {bad[0]!r}")
        suffixes = [f" {int(t)}" for t in task_ids]
    with atomic_open(path, "w") as f:
        for qid, row_scores, row_dids, suffix in zip(qids, scores, dids, suffixes, strict=True):
            if not qid or _BAD_ID.search(qid):
                raise ValueError(f"{path}: query id {qid!r} is empty or contains whitespace")
            if len(row_dids) > len(row_scores):
                raise ValueError(f"{path}: query {qid!r} has {len(row_dids)} doc ids but {len(row_scores)} scores")
            lines = []
            for rank, (did, score) in enumerate(zip(row_dids, row_scores.tolist(), strict=False), start=1):
                if not did or _BAD_ID.search(did):
                    raise ValueError(f"{path}: doc id {did!r} (query {qid!r}) is empty or contains whitespace")
                lines.append(f"{qid} Q0 {did} {rank} {score:.6f} {tag}{suffix}\n")
            f.writelines(lines)
    return path
