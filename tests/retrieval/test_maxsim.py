"""MeanMaxSim against sentence-transformers' own maxsim (length_normalize=True) as the oracle."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sentence_transformers.util.similarity import maxsim

from jfe.retrieval.maxsim import maxsim_matrix, maxsim_scores, runs
from jfe.retrieval.multi_shards import MultiVectors


def _unit(rng, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # lengths from 1 to 40, so some items have a single vector and others many
    docs = [_unit(rng, int(n), 24) for n in rng.integers(1, 41, 120)]
    queries = [_unit(rng, int(n), 24) for n in rng.integers(1, 17, 9)]
    mv = MultiVectors.from_items([f"d{i}" for i in range(len(docs))], docs)
    oracle = maxsim(
        [torch.from_numpy(q) for q in queries], [torch.from_numpy(d) for d in docs], length_normalize=True
    ).numpy()
    return mv, queries, oracle


@pytest.mark.parametrize("chunk_elements", [1 << 23, 2000, 1])  # one chunk; several; one item per chunk
def test_matrix_equals_sentence_transformers(data, chunk_elements):
    mv, queries, oracle = data
    got = maxsim_matrix(queries, mv, chunk_elements=chunk_elements)
    assert got.dtype == np.float32 and got.shape == oracle.shape
    np.testing.assert_allclose(got, oracle, atol=1e-5, rtol=0)


def test_scores_of_chosen_rows_in_their_order(data):
    mv, queries, oracle = data
    rows = [77, 3, 3, 119, 0]  # unsorted, repeated
    got = maxsim_scores(queries[4], mv, rows)
    np.testing.assert_allclose(got, oracle[4, rows], atol=1e-5, rtol=0)
    # a torch query (the encoder's output) scores the same
    np.testing.assert_allclose(maxsim_scores(torch.from_numpy(queries[4]), mv, rows), got, atol=0)
    assert maxsim_scores(queries[0], mv, []).shape == (0,)
    assert maxsim_matrix([], mv).shape == (0, len(mv))


def test_float16_documents_score_as_their_float16_values(data):
    mv, queries, _ = data
    half = SimpleNamespace(vectors=mv.vectors.astype(np.float16), offsets=mv.offsets)
    docs = [torch.from_numpy(mv.item(i).astype(np.float16).astype(np.float32)) for i in range(len(mv))]
    oracle = maxsim([torch.from_numpy(q) for q in queries], docs, length_normalize=True).numpy()
    np.testing.assert_allclose(maxsim_matrix(queries, half), oracle, atol=1e-5, rtol=0)


def test_scores_are_mean_of_max_by_hand():
    q = np.array([[1, 0], [0, 1]], np.float32)
    mv = MultiVectors.from_items(
        ["a", "b"], [np.array([[1, 0]], np.float32), np.array([[0.6, 0.8], [0, -1]], np.float32)]
    )
    # a: (1 + 0) / 2; b: (max(0.6, 0) + max(0.8, -1)) / 2
    np.testing.assert_allclose(maxsim_scores(q, mv), [0.5, 0.7], atol=1e-7)


def test_bad_input_is_refused(data):
    mv, queries, _ = data
    with pytest.raises(ValueError, match="query 0 has dim 5, the documents have dim 24"):
        maxsim_scores(np.ones((2, 5), np.float32), mv)
    with pytest.raises(ValueError, match="query 0 must be a non-empty 2-D float array"):
        maxsim_scores(np.ones((0, 24), np.float32), mv)
    with pytest.raises(ValueError, match=r"doc_rows must be item indices in \[0, 120\)"):
        maxsim_scores(queries[0], mv, [0, 120])


def test_runs_cover_everything_within_budget():
    lengths = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    got = list(runs(lengths, 6))
    assert got == [(0, 2), (2, 4), (4, 5), (5, 6), (6, 7), (7, 8)]  # 9 alone is over budget: a run of its own
    assert list(runs(lengths, 100)) == [(0, 8)]
    assert list(runs(np.array([], np.int64), 5)) == []
