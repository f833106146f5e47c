import re

import numpy as np
import pytest

from jfe.retrieval.index import build_index, set_search_params
from jfe.retrieval.search import merge_topk, search, write_trec_run
from jfe.retrieval.trec import read_run
from tests.retrieval.conftest import exact_topk, normalise


@pytest.fixture(scope="module")
def uniform():
    rng = np.random.default_rng(7)
    db = normalise(rng.standard_normal((3000, 48)))
    queries = normalise(rng.standard_normal((64, 48)))
    return db, [f"1:{i}" for i in range(len(db))], queries


def test_flat_search_equals_exact_numpy_topk(uniform):
    db, ids, queries = uniform
    index = build_index(db, ids, "Flat")
    scores, dids = search(index, ids, queries, 20)
    true_scores, true_pos = exact_topk(db, queries, 20)
    assert scores.shape == (64, 20) and scores.dtype == np.float32
    assert dids == [[ids[p] for p in row] for row in true_pos]
    np.testing.assert_allclose(scores, true_scores, atol=1e-5)


def test_batching_does_not_change_results(uniform):
    db, ids, queries = uniform
    index = build_index(db, ids)
    whole = search(index, ids, queries, 10)
    batched = search(index, ids, queries, 10, batch_size=7)
    assert batched[1] == whole[1]
    np.testing.assert_array_equal(batched[0], whole[0])


def test_k_larger_than_index_returns_what_exists():
    db = normalise(np.random.default_rng(0).standard_normal((5, 8)))
    index = build_index(db, list("abcde"))
    scores, dids = search(index, list("abcde"), db[:2], 50)
    assert [len(d) for d in dids] == [5, 5]
    assert [d[0] for d in dids] == ["a", "b"]
    assert scores.shape == (2, 5) and np.isfinite(scores).all()


def test_missing_results_are_dropped_not_returned_as_minus_one():
    # IVF with one probe only sees one cell, so most queries get fewer than k hits
    rng = np.random.default_rng(1)
    db = normalise(rng.standard_normal((400, 8)))
    ids = [f"d{i}" for i in range(400)]
    index = build_index(db, ids, "IVF16,Flat")
    set_search_params(index, nprobe=1)
    scores, dids = search(index, ids, db[:30], 100)
    lengths = [len(d) for d in dids]
    assert min(lengths) < 100
    for row_scores, row in zip(scores, dids, strict=True):
        assert all(d in ids for d in row) and len(set(row)) == len(row)
        assert np.isfinite(row_scores[: len(row)]).all()
        assert np.isneginf(row_scores[len(row) :]).all()
        assert (np.diff(row_scores[: len(row)]) <= 0).all()


def test_query_dim_mismatch_names_both_dims(uniform):
    db, ids, _ = uniform
    index = build_index(db[:10], ids[:10])
    with pytest.raises(ValueError, match="query dim 16 does not match index dim 48"):
        search(index, ids[:10], np.ones((2, 16), np.float32), 5)


def test_two_shards_merged_equal_one_index(uniform):
    db, ids, queries = uniform
    whole = search(build_index(db, ids), ids, queries, 25)
    parts = [
        search(build_index(db[:1200], ids[:1200]), ids[:1200], queries, 25),
        search(build_index(db[1200:], ids[1200:]), ids[1200:], queries, 25),
    ]
    merged = merge_topk(parts, 25)
    assert merged[1] == whole[1]
    np.testing.assert_allclose(merged[0], whole[0], atol=1e-6)


def test_merge_breaks_ties_by_doc_id_and_pads():
    a = (np.array([[0.9, 0.5]], np.float32), [["z", "m"]])
    b = (np.array([[0.5, -np.inf]], np.float32), [["b"]])
    scores, dids = merge_topk([b, a], 3)
    assert dids == [["z", "b", "m"]]
    np.testing.assert_array_equal(scores, np.array([[0.9, 0.5, 0.5]], np.float32))
    scores, dids = merge_topk([a], 4)
    assert dids == [["z", "m"]] and np.isneginf(scores[0, 2:]).all()


def test_merge_rejects_doc_in_two_shards_and_query_count_mismatch():
    a = (np.array([[0.9]], np.float32), [["x"]])
    with pytest.raises(ValueError, match="doc id 'x'"):
        merge_topk([a, a], 2)
    with pytest.raises(ValueError, match="result set 1 has 2 queries"):
        merge_topk([a, (np.zeros((2, 1), np.float32), [["y"], ["w"]])], 2)


def test_trec_run_round_trip(tmp_path, uniform):
    db, ids, queries = uniform
    scores, dids = search(build_index(db, ids), ids, queries[:5], 10)
    qids = [f"q{i}" for i in range(5)]
    path = write_trec_run(tmp_path / "run.trec", qids, scores, dids, tag="test")
    lines = path.read_text().splitlines()
    assert len(lines) == 50
    q, q0, did, rank, score, tag = lines[0].split()
    assert (q, q0, did, rank, tag) == ("q0", "Q0", dids[0][0], "1", "test")
    assert score == f"{scores[0, 0]:.6f}"
    run = read_run(path)
    assert list(run) == qids
    for i, qid in enumerate(qids):
        assert list(run[qid]) == dids[i]
        np.testing.assert_allclose(list(run[qid].values()), scores[i], atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]  # no temp file left behind


def test_trec_run_rejects_ids_with_whitespace(tmp_path):
    with pytest.raises(ValueError, match="doc id 'a b'"):
        write_trec_run(tmp_path / "r", ["q"], np.ones((1, 1), np.float32), [["a b"]])
    assert not (tmp_path / "r").exists()


def test_uniir_run_round_trips_with_its_task_ids(tmp_path, uniform):
    db, ids, queries = uniform
    scores, dids = search(build_index(db, ids), ids, queries[:4], 6)
    qids, tasks = ["9:1", "9:2", "1:7", "5:3"], [0, 3, 0, np.int64(8)]
    run_id = "mbeir_x_single_pool_test_k6"
    uniir = write_trec_run(tmp_path / "u.txt", qids, scores, dids, run_id, tasks, run_format="uniir")
    trec = write_trec_run(tmp_path / "t.trec", qids, scores, dids, run_id)
    lines = uniir.read_text().splitlines()
    assert len(lines) == 24
    # UniIR's f"{qid} Q0 {doc_id} {rank} {score} {run_id} {task_id}", rank from 1
    assert lines[0] == f"9:1 Q0 {dids[0][0]} 1 {scores[0, 0]:.6f} {run_id} 0"
    assert [line.split()[6] for line in lines[::6]] == ["0", "3", "0", "8"]
    # the first six columns are the TREC run's, and both read back to the same run
    assert [line.rsplit(" ", 1)[0] for line in lines] == trec.read_text().splitlines()
    run = read_run(uniir)
    assert run == read_run(trec) and list(run) == qids
    for i, qid in enumerate(qids):
        assert list(run[qid]) == dids[i]
        np.testing.assert_allclose(list(run[qid].values()), scores[i], atol=1e-6)


@pytest.mark.parametrize(
    ("tasks", "run_format", "message"),
    [
        (None, "uniir", "the uniir run format needs a task id per query: 2 queries, got none"),
        ([0], "uniir", "the uniir run format needs a task id per query: 2 queries, got 1"),
        ([0, "3"], "uniir", "task ids must be integers, got '3'"),
        ([0, None], "uniir", "task ids must be integers, got None"),
        ([0, 3], "trec7", "run_format must be one of trec, uniir, got 'trec7'"),
    ],
)
def test_uniir_run_needs_an_integer_task_id_per_query(tmp_path, tasks, run_format, message):
    scores, dids = np.ones((2, 1), np.float32), [["a"], ["b"]]
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'r'}: {message}")):
        write_trec_run(tmp_path / "r", ["q1", "q2"], scores, dids, task_ids=tasks, run_format=run_format)
    assert not (tmp_path / "r").exists()
