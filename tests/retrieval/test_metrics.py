import math

import numpy as np
import pytest

from jfe.retrieval.metrics import evaluate, evaluate_by_task, per_query, to_markdown

QRELS = {"q1": {"a": 2, "b": 1, "c": 0}, "q2": {"x": 1}, "q3": {"y": 1}}
RUN = {"q1": {"z": 0.9, "b": 0.8, "a": 0.7, "c": 0.6}, "q2": {"x": 0.5, "w": 0.4}}
# q1 ranks z, b(1), a(2), c(0): first hit at rank 2
Q1_NDCG = (1 / math.log2(3) + 2 / math.log2(4)) / (2 + 1 / math.log2(3))


def test_hand_computed_case():
    rows = per_query(RUN, QRELS, ks=(1, 5))
    assert rows["q1"] == pytest.approx({"recall@1": 0, "recall@5": 1, "mrr@10": 0.5, "ndcg@10": Q1_NDCG})
    assert rows["q2"] == {"recall@1": 1, "recall@5": 1, "mrr@10": 1, "ndcg@10": 1}
    # q3 is judged but absent from the run: it counts, with zeros
    assert rows["q3"] == {"recall@1": 0, "recall@5": 0, "mrr@10": 0, "ndcg@10": 0}
    assert evaluate(RUN, QRELS, ks=(1, 5)) == pytest.approx(
        {"recall@1": 1 / 3, "recall@5": 2 / 3, "mrr@10": 0.5, "ndcg@10": (Q1_NDCG + 1) / 3}
    )


def test_cutoffs_apply():
    qrels = {"q": {"d11": 1}}
    run = {"q": {f"d{i}": 1 - i / 100 for i in range(30)}}  # the relevant doc is at rank 12
    assert evaluate(run, qrels, ks=(10, 20, 50)) == {
        "recall@10": 0,
        "recall@20": 1,
        "recall@50": 1,
        "mrr@10": 0,
        "ndcg@10": 0,
    }


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    docs = [f"9:{i}" for i in range(300)]
    qrels, run = {}, {}
    for q in range(80):
        qid = f"1:{q}"
        judged = rng.choice(300, size=rng.integers(1, 8), replace=False)
        qrels[qid] = {docs[d]: int(rng.integers(0, 4)) for d in judged}
        if q % 10 == 9:
            continue  # judged but never retrieved
        # retrieve some judged docs so hits actually happen, plus random others
        pool = np.unique(np.concatenate([judged[: rng.integers(0, len(judged) + 1)], rng.choice(300, 40)]))
        scores = rng.random(len(pool))  # continuous, so no ties for tie-breaking rules to disagree on
        run[qid] = {docs[d]: float(s) for d, s in zip(pool, scores, strict=True)}
    return run, qrels


def test_matches_ranx_on_random_graded_run():
    import ranx  # an independent evaluator, from the dev extra

    run, qrels = _random_case(0)
    ks = (1, 5, 10, 20, 50)
    ours = evaluate(run, qrels, ks=ks)
    theirs = ranx.evaluate(
        ranx.Qrels(qrels),
        ranx.Run(run),
        [f"hit_rate@{k}" for k in ks] + ["mrr@10", "ndcg@10"],
        make_comparable=True,  # ranx otherwise refuses qrels queries missing from the run; we score them 0
    )
    expected = {f"recall@{k}": theirs[f"hit_rate@{k}"] for k in ks} | {m: theirs[m] for m in ("mrr@10", "ndcg@10")}
    assert ours.keys() == expected.keys()
    for metric, value in expected.items():
        assert ours[metric] == pytest.approx(float(value), abs=1e-6), metric
    assert 0 < ours["recall@1"] < ours["recall@50"] < 1  # the case is not degenerate


def test_run_queries_missing_from_qrels_are_named():
    run = {**RUN, "extra1": {"a": 1.0}, "extra2": {"a": 1.0}}
    with pytest.raises(ValueError, match=r"2 run queries are not in the qrels \(e\.g\. 'extra1', 'extra2'\)"):
        evaluate(run, QRELS)
    assert evaluate(run, QRELS, strict=False) == evaluate(RUN, QRELS)


def test_per_task_average_is_macro():
    tasks = {"q1": 0, "q2": 0, "q3": 5}
    table = evaluate_by_task(RUN, QRELS, tasks, ks=(1,))
    assert list(table) == [0, 5, "average"]
    assert table[0] == pytest.approx({"recall@1": 0.5, "mrr@10": 0.75, "ndcg@10": (Q1_NDCG + 1) / 2})
    assert table[5] == {"recall@1": 0, "mrr@10": 0, "ndcg@10": 0}
    # macro: each task weighs the same however many queries it has (micro would give recall 1/3)
    assert table["average"] == pytest.approx({"recall@1": 0.25, "mrr@10": 0.375, "ndcg@10": (Q1_NDCG + 1) / 4})
    named = evaluate_by_task(RUN, QRELS, {"q1": "t2i", "q2": "i2t", "q3": "i2t"}, ks=(1,))
    assert named["i2t"]["recall@1"] == 0.5 and named["t2i"]["recall@1"] == 0
    with pytest.raises(ValueError, match="query 'q3' is in the qrels but has no task"):
        evaluate_by_task(RUN, QRELS, {"q1": 0, "q2": 0})


def test_to_markdown():
    table = {"0": {"recall@1": 0.5, "ndcg@10": 1 / 3}, "average": {"recall@1": 0.25, "ndcg@10": 2 / 3}}
    assert to_markdown(table) == (
        "| task | recall@1 | ndcg@10 |\n|---|---:|---:|\n| 0 | 0.5000 | 0.3333 |\n| average | 0.2500 | 0.6667 |\n"
    )
