"""Hard-negative mining from a retrieval run: the top-ranked docs that the qrels do not mark relevant."""

from __future__ import annotations

import json
import os
from pathlib import Path

from jfe.atomic import atomic_open
from jfe.retrieval.trec import Qrels, Run, ranked


def mine_negatives(run: Run, qrels: Qrels, k: int = 30, skip_top: int = 0) -> dict[str, list[str]]:
    """For each run query: its ranking minus positives, first ``skip_top`` dropped, next ``k`` kept in rank order.

    ``skip_top`` exists because the very top non-positives are often unlabelled positives (false negatives).
    Docs judged with relevance <= 0 are true negatives and stay eligible.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if skip_top < 0:
        raise ValueError(f"skip_top must be >= 0, got {skip_top}")
    mined: dict[str, list[str]] = {}
    for qid, docs in run.items():
        if qid not in qrels:
            # without its positives we would mine them as negatives, so refuse rather than guess
            raise ValueError(f"query {qid!r} is in the run but not in the qrels; cannot tell its positives")
        positives = {d for d, rel in qrels[qid].items() if rel > 0}
        negatives = [d for d in ranked(docs) if d not in positives]
        mined[qid] = negatives[skip_top : skip_top + k]
    return mined


def write_mined(path: str | os.PathLike, mined: dict[str, list[str]]) -> Path:
    """One JSON line per query: ``{"qid": ..., "neg_dids": [...]}``, written atomically."""
    path = Path(path)
    with atomic_open(path, "w") as f:
        for qid, dids in mined.items():
            f.write(json.dumps({"qid": qid, "neg_dids": list(dids)}, ensure_ascii=False) + "\n")
    return path


def read_mined(path: str | os.PathLike) -> dict[str, list[str]]:
    path = Path(path)
    mined: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {err.msg}") from err
            qid, dids = (obj.get("qid"), obj.get("neg_dids")) if isinstance(obj, dict) else (None, None)
            if not isinstance(qid, str) or not isinstance(dids, list) or not all(isinstance(d, str) for d in dids):
                raise ValueError(f'{path}:{lineno}: expected {{"qid": str, "neg_dids": [str, ...]}}')
            if qid in mined:
                raise ValueError(f"{path}:{lineno}: query {qid!r} appears twice")
            mined[qid] = dids
    return mined
