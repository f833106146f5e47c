"""Reading TREC runs and (M-BEIR) qrels.

Run lines: ``qid Q0 did rank score tag`` (TREC, 6 columns) or UniIR's ``qid Q0 did rank score run_id task_id``
(7 columns, as ``src/common/mbeir_retriever.py`` writes them). Qrels lines: ``qid 0 did relevance task_id``
(M-BEIR) or the plain 4-column TREC ``qid 0 did relevance``. Relevance > 0 means relevant.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if parts:
                yield lineno, parts


def ranked(doc_scores: dict[str, float]) -> list[str]:
    """Doc ids by descending score; ties keep insertion order (for runs read from disk: the rank column order)."""
    return sorted(doc_scores, key=doc_scores.__getitem__, reverse=True) if doc_scores else []


RUN_FORMATS = {"trec": "qid Q0 did rank score tag", "uniir": "qid Q0 did rank score run_id task_id"}


def read_run(path: str | os.PathLike) -> Run:
    """``{qid: {did: score}}``, each inner dict in rank order, so that :func:`ranked` breaks score ties by rank.

    Reads TREC (6 columns) and UniIR (7) lines; UniIR's task id must be an integer, the same on every line of a
    query. Scoring takes the task ids from the qrels, as UniIR does."""
    path = Path(path)
    rows: dict[str, list[tuple[int, str, float]]] = {}
    tasks: dict[str, int] = {}
    for lineno, parts in _lines(path):
        if len(parts) not in (6, 7):
            formats = " or ".join(f"{len(f.split())} columns '{f}' ({n})" for n, f in RUN_FORMATS.items())
            raise ValueError(f"{path}:{lineno}: expected {formats}, got {len(parts)}")
        qid, _, did, rank, score = parts[:5]
        if len(parts) == 7:
            try:
                task = int(parts[6])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: task_id (column 7) must be an integer, got {parts[6]!r}") from None
            if tasks.setdefault(qid, task) != task:
                raise ValueError(f"{path}:{lineno}: query {qid!r} has task_id {task} here but {tasks[qid]} earlier")
        try:
            rows.setdefault(qid, []).append((int(rank), did, float(score)))
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: bad rank {rank!r} or score {score!r}") from err
    run: Run = {}
    for qid, entries in rows.items():
        docs: dict[str, float] = {}
        # sort is stable: equal ranks keep file order
        for _, did, score in sorted(entries, key=lambda e: e[0]):
            if did in docs:
                raise ValueError(f"{path}: doc {did!r} appears twice for query {qid!r}")
            docs[did] = score
        run[qid] = docs
    return run


def _read_qrels_lines(path: Path) -> Iterator[tuple[int, str, str, int, int | None]]:
    for lineno, parts in _lines(path):
        if len(parts) not in (4, 5):
            raise ValueError(
                f"{path}:{lineno}: expected 'qid 0 did relevance [task_id]' (4 or 5 columns), got {len(parts)}"
            )
        try:
            rel = int(parts[3])
            task = int(parts[4]) if len(parts) == 5 else None
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: relevance and task_id must be integers: {' '.join(parts)!r}") from err
        yield lineno, parts[0], parts[2], rel, task


def read_qrels(path: str | os.PathLike) -> Qrels:
    """``{qid: {did: relevance}}``; judged-irrelevant (relevance <= 0) entries are kept as read."""
    path = Path(path)
    qrels: Qrels = {}
    for lineno, qid, did, rel, _ in _read_qrels_lines(path):
        docs = qrels.setdefault(qid, {})
        if did in docs and docs[did] != rel:
            raise ValueError(f"{path}:{lineno}: conflicting relevance for query {qid!r} doc {did!r}")
        docs[did] = rel
    return qrels


def read_qrels_tasks(path: str | os.PathLike) -> dict[str, int]:
    """``{qid: task_id}`` from the fifth column of M-BEIR qrels."""
    path = Path(path)
    tasks: dict[str, int] = {}
    for lineno, qid, _, _, task in _read_qrels_lines(path):
        if task is None:
            raise ValueError(f"{path}:{lineno}: no task_id column (M-BEIR qrels have 5 columns)")
        if tasks.setdefault(qid, task) != task:
            raise ValueError(f"{path}:{lineno}: query {qid!r} has task_id {task} here but {tasks[qid]} earlier")
    return tasks


def read_runs(paths: list[str | os.PathLike]) -> dict[str, dict[str, float]]:
    """One run from several run files (e.g. end to end's one per dataset); a query may be in one only."""
    run: dict[str, dict[str, float]] = {}
    source: dict[str, str] = {}
    for path in paths:
        for qid, docs in read_run(path).items():
            if qid in source:
                raise ValueError(f"{path}: query {qid!r} is also in {source[qid]}")
            source[qid] = str(path)
            run[qid] = docs
    return run
