"""Retrieval metrics as M-BEIR / UniIR report them.

``recall@k`` here is UniIR's: 1 if any relevant doc is in the top k, else 0 (a hit rate, not the fraction of
relevant docs found). ``mrr@10`` is the reciprocal rank of the first relevant doc within the top 10.
``ndcg@10`` is graded nDCG with linear gains and a log2 discount, ideal ranking from the qrels (trec_eval's
ndcg_cut_10). Every query in the qrels counts; one the run lacks scores 0. Ranking is by descending score, ties
in run order (see :func:`jfe.retrieval.trec.ranked`). M-BEIR's per-(dataset, task) table is
:func:`jfe.retrieval.scoring.score_mbeir`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping

from jfe.retrieval.trec import Qrels, Run, ranked


def _check_inputs(run: Run, qrels: Qrels, ks: Iterable[int], strict: bool) -> list[int]:
    ks = list(ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    if not qrels:
        raise ValueError("qrels are empty: nothing to evaluate")
    if strict:
        extra = [q for q in run if q not in qrels]
        if extra:
            raise ValueError(
                f"{len(extra)} run queries are not in the qrels (e.g. {', '.join(map(repr, extra[:5]))}); "
                "evaluate the matching qrels, or pass strict=False to ignore them"
            )
    return ks


def _query_metrics(ranking: list[str], rels: Mapping[str, int], ks: list[int], mrr_k: int, ndcg_k: int) -> dict:
    out: dict[str, float] = {}
    first_hit = next((r for r, d in enumerate(ranking, start=1) if rels.get(d, 0) > 0), None)
    for k in ks:
        out[f"recall@{k}"] = 1.0 if first_hit is not None and first_hit <= k else 0.0
    out[f"mrr@{mrr_k}"] = 1.0 / first_hit if first_hit is not None and first_hit <= mrr_k else 0.0
    dcg = sum(max(rels.get(d, 0), 0) / math.log2(r + 1) for r, d in enumerate(ranking[:ndcg_k], start=1))
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:ndcg_k]
    idcg = sum(g / math.log2(r + 1) for r, g in enumerate(ideal, start=1))
    out[f"ndcg@{ndcg_k}"] = dcg / idcg if idcg > 0 else 0.0
    return out


def per_query(
    run: Run, qrels: Qrels, ks: Iterable[int] = (1, 5, 10), strict: bool = True, mrr_k: int = 10, ndcg_k: int = 10
) -> dict[str, dict[str, float]]:
    """Metrics of every query in ``qrels``: ``{qid: {metric: value}}``."""
    ks = _check_inputs(run, qrels, ks, strict)
    # only the top max-cutoff docs matter, so rank no deeper than that
    depth = max([*ks, mrr_k, ndcg_k])
    out = {}
    for qid, rels in qrels.items():
        ranking = ranked(run.get(qid, {}))[:depth]
        out[qid] = _query_metrics(ranking, rels, ks, mrr_k, ndcg_k)
    return out


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: sum(r[m] for r in rows) / len(rows) for m in rows[0]}


def evaluate(
    run: Run, qrels: Qrels, ks: Iterable[int] = (1, 5, 10), strict: bool = True, mrr_k: int = 10, ndcg_k: int = 10
) -> dict[str, float]:
    """Mean over the qrels queries of ``recall@k`` (UniIR hit rate) for each k, ``mrr@10`` and ``ndcg@10``."""
    return _mean(list(per_query(run, qrels, ks, strict, mrr_k, ndcg_k).values()))


def to_markdown(table: Mapping[Hashable, Mapping[str, float]], first_column: str = "task") -> str:
    """A Markdown table: one row per key of ``table``, one column per metric, values to 4 decimals."""
    columns: list[str] = []
    for row in table.values():
        columns.extend(m for m in row if m not in columns)
    lines = [
        "| " + " | ".join([first_column, *columns]) + " |",
        "|" + "---|" + "---:|" * len(columns),
    ]
    for name, row in table.items():
        cells = [f"{row[m]:.4f}" if m in row else "" for m in columns]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines) + "\n"
