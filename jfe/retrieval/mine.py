"""Hard-negative mining from a retrieval run: the top-ranked docs that the qrels do not mark relevant."""

from __future__ import annotations

from jfe.data.negatives import read_mined, write_mined
from jfe.retrieval.trec import Qrels, Run, ranked

__all__ = ["mine_negatives", "read_mined", "write_mined"]


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
