"""M-BEIR scored as UniIR scores it: one row per (dataset, task), UniIR's cutoffs, and the papers' headline.

``jfe eval --run`` and end-to-end ``jfe eval`` (:func:`jfe.retrieval.evaluate.evaluate_mbeir`) both build their
table with :func:`score_mbeir`, so the same run and qrels give the same table.

Row keys (:func:`pair_labels`):

- the dataset is the qid's id prefix (``"9:123"`` -> ``"9"``), named by ``names`` (an instruction TSV's
  dataset_name column, :func:`read_dataset_names`), else by UniIR's ``DATASET_IDS``, else by the prefix itself;
- the key is that name when the scored queries hold one task of the dataset (``"digits_t2i"``, ``"CIRR"``), and
  ``"{name} (task {task_id})"`` when they hold several (``"MSCOCO (task 0)"``, ``"MSCOCO (task 3)"``: on M-BEIR
  VisualNews, MSCOCO and Fashion200K have tasks 0 and 3, WebQA 1 and 2, OVEN and INFOSEEK 6 and 8);
- two dataset ids with one name get their id appended (``"toy [1]"``, ``"toy [2]"``) so their rows never merge.

Rows come in dataset-id order, then task order, then ``"average"``: the unweighted mean over pairs of the metrics
every pair has (the fashion pairs have no @1 or @5). Cutoffs are UniIR's eval configs: recall@10/20/50 for
Fashion200K and FashionIQ, recall@1/5/10 for the others; plus MRR@10 and nDCG@10 everywhere.

The headline (:data:`HEADLINE`, :func:`headline`) is the number the papers quote: the mean over pairs of R@5, R@10
for the two fashion datasets. It is kept out of :func:`score_mbeir`'s table, whose every row but ``"average"`` is
a pair (``jfe demo`` reads them so); ``jfe eval`` adds it to what it prints and saves (:func:`with_headline`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping

from jfe.data.instructions import Instructions
from jfe.data.mbeir import dataset_id_of
from jfe.data.uniir import dataset_name
from jfe.retrieval.metrics import per_query
from jfe.retrieval.trec import Qrels, Run

DEFAULT_KS = (1, 5, 10)
FASHION_KS = (10, 20, 50)
AVERAGE = "average"
HEADLINE = "headline (R@5, R@10 fashion)"
# the cutoffs a row is scored at -> the recall the papers quote for it
_HEADLINE_METRIC = {DEFAULT_KS: "recall@5", FASHION_KS: "recall@10"}

Pair = tuple[str, int]  # (dataset id, task id)


def recall_ks(dataset: str) -> tuple[int, ...]:
    """UniIR's recall cutoffs for a dataset name: @10/@20/@50 for the fashion datasets (Fashion200K,
    FashionIQ), @1/@5/@10 for the others."""
    return FASHION_KS if "fashion" in dataset.lower() else DEFAULT_KS


def read_dataset_names(path: str | os.PathLike) -> dict[str, str]:
    """``{dataset_id: dataset_name}`` of an M-BEIR instruction TSV, read as UniIR reads it (see
    :meth:`jfe.data.instructions.Instructions.load`)."""
    return Instructions.load(path).names


def _pair_order(pair: Pair) -> tuple:
    dataset, task = pair
    return (0, int(dataset), "", task) if dataset.isdigit() else (1, 0, dataset, task)


def pair_labels(pairs: Iterable[Pair], names: Mapping[str, str] | None = None) -> dict[Pair, str]:
    """The row key of each (dataset id, task id) pair, in table order (see the module docstring)."""
    pairs = sorted(set(pairs), key=_pair_order)
    named = {dataset: dataset_name(dataset, dict(names or {})) for dataset, _ in pairs}
    ids_per_name = Counter(named.values())
    tasks_per_dataset = Counter(dataset for dataset, _ in pairs)
    labels: dict[Pair, str] = {}
    for dataset, task in pairs:
        name = named[dataset] if ids_per_name[named[dataset]] == 1 else f"{named[dataset]} [{dataset}]"
        label = name if tasks_per_dataset[dataset] == 1 else f"{name} (task {task})"
        if label in (AVERAGE, HEADLINE):
            raise ValueError(f"dataset id {dataset} is named {label!r}, a key the table keeps for its summary rows")
        labels[(dataset, task)] = label
    return labels


def average(rows: list[Mapping[str, float]]) -> dict[str, float]:
    """Macro average over rows of the metrics every row has (fashion rows use other cutoffs)."""
    common = [m for m in rows[0] if all(m in r for r in rows)]
    return {m: sum(r[m] for r in rows) / len(rows) for m in common}


def score_mbeir(
    run: Run,
    qrels: Qrels,
    qid_tasks: Mapping[str, int],
    names: Mapping[str, str] | None = None,
    strict: bool = False,
) -> dict[str, dict[str, float]]:
    """UniIR's table: ``{pair key: metrics}`` for every (dataset, task) pair of the ``qrels`` queries, then
    ``"average"``. ``qid_tasks`` gives each query's task id (the qrels' 5th column); ``names`` maps dataset ids
    to names. Every qrels query counts, one the run lacks scoring 0; run queries outside the qrels are ignored,
    or an error with ``strict``."""
    ks = sorted({*DEFAULT_KS, *FASHION_KS})
    rows = per_query(run, qrels, ks, strict=strict)
    groups: dict[Pair, list[dict[str, float]]] = {}
    for qid, row in rows.items():
        if qid not in qid_tasks:
            raise ValueError(f"query {qid!r} is in the qrels but has no task id (M-BEIR qrels give it in column 5)")
        groups.setdefault((dataset_id_of(qid), int(qid_tasks[qid])), []).append(row)
    table: dict[str, dict[str, float]] = {}
    for pair, label in pair_labels(groups, names).items():
        cutoffs = recall_ks(dataset_name(pair[0], dict(names or {})))
        metrics = [f"recall@{k}" for k in cutoffs] + ["mrr@10", "ndcg@10"]
        group = groups[pair]
        table[label] = {m: sum(r[m] for r in group) / len(group) for m in metrics}
    table[AVERAGE] = average(list(table.values()))
    return table


def headline(table: Mapping[str, Mapping[str, float]]) -> float:
    """Mean over the pair rows of R@5, or R@10 for the rows scored at @10/20/50 (Fashion200K, FashionIQ)."""
    values = []
    for label, row in table.items():
        if label in (AVERAGE, HEADLINE):
            continue
        # "recall@5 spread" (policy all) is not a cutoff of its own
        cutoffs = tuple(int(m.split("@", 1)[1]) for m in row if m.startswith("recall@") and " " not in m)
        if cutoffs not in _HEADLINE_METRIC:
            raise ValueError(f"row {label!r} has recall cutoffs {cutoffs}, neither {DEFAULT_KS} nor {FASHION_KS}")
        values.append(row[_HEADLINE_METRIC[cutoffs]])
    if not values:
        raise ValueError("no (dataset, task) rows: nothing to take the headline of")
    return sum(values) / len(values)


def with_headline(table: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``table`` plus the :data:`HEADLINE` row (one metric, ``"recall"``): what ``jfe eval`` prints and saves."""
    return {**{k: dict(v) for k, v in table.items()}, HEADLINE: {"recall": headline(table)}}


def over_prompts(tables: list[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """One table from one table per prompt: each metric's mean over prompts, and beside it
    ``"{metric} spread"`` (max - min), so a reader sees how much the instruction alone moves it."""
    out: dict[str, dict[str, float]] = {}
    for row in tables[0]:
        metrics = [m for m in tables[0][row] if all(m in t.get(row, {}) for t in tables)]
        values = {m: [float(t[row][m]) for t in tables] for m in metrics}
        out[row] = {}
        for m, vals in values.items():
            out[row][m] = sum(vals) / len(vals)
            out[row][f"{m} spread"] = max(vals) - min(vals)
    return out
