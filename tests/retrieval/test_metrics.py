import math
import re

import numpy as np
import pytest

from jfe.retrieval.metrics import evaluate, per_query, to_markdown
from jfe.retrieval.scoring import HEADLINE, headline, pair_labels, read_dataset_names, score_mbeir, with_headline
from jfe.retrieval.trec import read_qrels, read_qrels_tasks, read_run
from tests.conftest import ranx_metrics

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


def test_to_markdown():
    table = {"0": {"recall@1": 0.5, "ndcg@10": 1 / 3}, "average": {"recall@1": 0.25, "ndcg@10": 2 / 3}}
    assert to_markdown(table) == (
        "| task | recall@1 | ndcg@10 |\n|---|---:|---:|\n| 0 | 0.5000 | 0.3333 |\n| average | 0.2500 | 0.6667 |\n"
    )


# --- score_mbeir: UniIR's table, one row per (dataset, task) ---

# VisualNews, Fashion200K and MSCOCO by their UniIR id prefixes; in M-BEIR all three have a task 0
DATASETS = {"0": "VisualNews", "1": "Fashion200K", "9": "MSCOCO"}


def _mbeir_case(seed: int):
    """Graded qrels and a 60-deep run per query, every query task 0; one positive per query sits at a
    random rank up to 70 (so @1 ... @50 all differ) or is not retrieved; scores distinct at 6 decimals."""
    rng = np.random.default_rng(seed)
    run, qrels = {}, {}
    for prefix in DATASETS:
        docs = [f"{prefix}:{i}" for i in range(200)]
        for q in range(80):
            qid = f"{prefix}:{1000 + q}"
            judged = rng.choice(200, size=rng.integers(1, 4), replace=False)
            qrels[qid] = {docs[d]: int(rng.integers(0, 3)) for d in judged}
            qrels[qid][docs[judged[0]]] = int(rng.integers(1, 3))
            if q % 10 == 9:
                continue  # judged but never retrieved
            ranking = [int(d) for d in rng.permutation(200) if d != judged[0]][:60]
            ranking.insert(int(rng.integers(0, 70)), int(judged[0]))
            run[qid] = {docs[d]: round(1 - r / 1000, 6) for r, d in enumerate(ranking[:60])}
    return run, qrels


def _write_case(folder, run, qrels, columns):
    """The run as UniIR's 7 columns (or the TREC 6) and M-BEIR qrels, written here rather than by jfe."""
    lines = []
    for qid, docs in run.items():
        for rank, (did, score) in enumerate(docs.items(), start=1):
            line = f"{qid} Q0 {did} {rank} {score:.6f} mbeir_union_pool_test_k60"
            lines.append(line + (" 0\n" if columns == 7 else "\n"))
    run_file = folder / f"run{columns}.txt"
    run_file.write_text("".join(lines))
    qrels_file = folder / "qrels.txt"
    qrels_file.write_text("".join(f"{q} 0 {d} {r} 0\n" for q, docs in qrels.items() for d, r in docs.items()))
    return run_file, qrels_file


def test_one_task_of_three_datasets_gives_three_rows_at_uniirs_cutoffs_equal_to_ranx(tmp_path):
    run, qrels = _mbeir_case(0)
    tables = []
    for columns in (7, 6):
        run_file, qrels_file = _write_case(tmp_path, run, qrels, columns)
        tables.append(score_mbeir(read_run(run_file), read_qrels(qrels_file), read_qrels_tasks(qrels_file)))
    table, six = tables
    assert six == table  # the TREC and UniIR columns of one run score the same
    # by dataset, not by task: grouping by task alone merges all three into one row
    assert list(table) == ["VisualNews", "Fashion200K", "MSCOCO", "average"]
    expected = {}
    for prefix, name in DATASETS.items():
        sub_qrels = {q: r for q, r in qrels.items() if q.startswith(f"{prefix}:")}
        sub_run = {q: run[q] for q in sub_qrels if q in run}
        expected[name] = ranx_metrics(sub_run, sub_qrels, (10, 20, 50) if name == "Fashion200K" else (1, 5, 10))
        assert table[name].keys() == expected[name].keys(), name
        assert table[name] == pytest.approx(expected[name], abs=1e-9), name
    # the macro average of what every pair has (Fashion200K has no @1 or @5), and the papers' headline
    shared = ("recall@10", "mrr@10", "ndcg@10")
    assert table["average"] == pytest.approx({m: np.mean([expected[n][m] for n in expected]) for m in shared})
    papers = np.mean(
        [expected["VisualNews"]["recall@5"], expected["MSCOCO"]["recall@5"], expected["Fashion200K"]["recall@10"]]
    )
    assert headline(table) == pytest.approx(papers, abs=1e-12)
    shown = with_headline(table)
    assert list(shown) == [*table, HEADLINE] == [*table, "headline (R@5, R@10 fashion)"]
    assert shown[HEADLINE] == {"recall": headline(table)}
    # the case is not degenerate: every cutoff gives another number
    coco, fashion = table["MSCOCO"], table["Fashion200K"]
    assert 0 < coco["recall@1"] < coco["recall@5"] < coco["recall@10"] < 1
    assert 0 < fashion["recall@10"] < fashion["recall@20"] < fashion["recall@50"] < 1


def test_rows_are_keyed_by_dataset_name_and_by_task_only_where_a_dataset_has_several():
    qids = {"9:1": 0, "9:2": 3, "8:1": 7, "20:1": 0, "20:2": 0, "77:1": 4, "OVEN": 6}
    qrels = {q: {"hit": 1} for q in qids}
    run = {"9:1": {"hit": 1.0}, "9:2": {"miss": 1.0, "hit": 0.5}, "20:1": {"hit": 1.0}, "77:1": {"hit": 0.1}}
    run |= {"OVEN": {"x": 0.3}, "not judged": {"hit": 1.0}}
    table = score_mbeir(run, qrels, qids, names={"20": "digits_t2i"})
    # dataset-id order; a prefix named by nothing (77, or an id without a colon) stands for itself
    assert list(table) == ["CIRR", "MSCOCO (task 0)", "MSCOCO (task 3)", "digits_t2i", "77", "OVEN", "average"]
    assert table["MSCOCO (task 3)"] == {"recall@1": 0, "recall@5": 1, "recall@10": 1, "mrr@10": 0.5,
                                        "ndcg@10": pytest.approx(1 / math.log2(3))}  # fmt: skip
    assert table["digits_t2i"]["recall@1"] == 0.5 and table["CIRR"]["recall@1"] == 0  # CIRR's query is absent
    assert score_mbeir(run, qrels, qids, names={"9": "mscoco"}).keys() >= {"mscoco (task 0)", "mscoco (task 3)"}
    with pytest.raises(ValueError, match=r"1 run queries are not in the qrels \(e\.g\. 'not judged'\)"):
        score_mbeir(run, qrels, qids, strict=True)
    with pytest.raises(ValueError, match=r"query '8:1' is in the qrels but has no task id"):
        score_mbeir(run, qrels, {q: t for q, t in qids.items() if q != "8:1"})


def test_pair_labels_never_merge_two_datasets():
    labels = pair_labels([("2", 0), ("1", 0), ("1", 3), ("10", 1)], {"1": "toy", "2": "toy"})
    assert labels == {("1", 0): "toy [1] (task 0)", ("1", 3): "toy [1] (task 3)", ("2", 0): "toy [2]", ("10", 1): "10"}
    assert list(labels) == [("1", 0), ("1", 3), ("2", 0), ("10", 1)]  # numeric id order: 2 before 10
    with pytest.raises(ValueError, match=r"dataset id 4 is named 'average'"):
        pair_labels([("4", 0)], {"4": "average"})


def test_headline_takes_r10_only_from_rows_at_the_fashion_cutoffs():
    table = {
        "a": {"recall@1": 0.1, "recall@5": 0.2, "recall@10": 0.3},
        "FashionIQ": {"recall@10": 0.5, "recall@20": 0.6, "recall@50": 0.7},
        "average": {"recall@10": 0.4},
    }
    assert headline(table) == pytest.approx((0.2 + 0.5) / 2)
    with pytest.raises(ValueError, match=r"row 'b' has recall cutoffs \(1, 5\)"):
        headline({**table, "b": {"recall@1": 0.0, "recall@5": 0.0}})


def test_dataset_names_are_columns_3_and_4_of_the_instruction_tsv(tmp_path):
    from tests.conftest import INSTRUCTIONS

    tsv = tmp_path / "query_instructions.tsv"
    tsv.write_text(INSTRUCTIONS.replace("dataset_name", "name", 1) + "\n")  # a renamed header is still skipped
    assert read_dataset_names(tsv) == {"1": "toy_t2i", "2": "toy_i2t", "3": "toy_it2i"}
    tsv.write_text(INSTRUCTIONS + "text\ttext\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tsv))}:5: expected at least one prompt"):
        read_dataset_names(tsv)
    tsv.write_text(INSTRUCTIONS + "image\timage\ttoy_i2i\t1\tFind it.\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tsv))}:5: dataset id 1 is 'toy_i2i' here but 'toy_t2i'"):
        read_dataset_names(tsv)
