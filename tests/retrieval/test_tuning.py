"""jfe index --target-recall: the nprobe / efSearch it stores is the smallest whose recall@k, measured
directly with FAISS against exact search, reaches the target."""

import json

import faiss
import numpy as np
import pytest

from jfe.cli import run as jfe_run
from jfe.retrieval.commands import index_main, search_indexes
from jfe.retrieval.index import load_index
from jfe.retrieval.shards import write_shard
from jfe.retrieval.tuning import RecallTarget, query_rows
from tests.retrieval.conftest import clustered, exact_topk

K = 10


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    x = clustered(8000, 32, 80, seed=5)
    folder = tmp_path_factory.mktemp("tune") / "emb"
    write_shard(folder, [f"d{i}" for i in range(len(x))], x)
    return x, folder


def _recall(found: np.ndarray, exact: np.ndarray, rows: np.ndarray) -> float:
    """recall@K with each query's own row removed from both lists, written out independently."""
    hits = 0
    for f, e, own in zip(found, exact, rows, strict=True):
        f = [j for j in f if j != own][:K]
        e = [j for j in e if j != own][:K]
        hits += len(set(f) & set(e))
    return hits / (K * len(rows))


def test_ivf_stores_the_smallest_nprobe_reaching_the_target(shard, tmp_path):
    x, folder = shard
    out = tmp_path / "ivf"
    index_main(["--embeddings", str(folder), "--out", str(out), "--factory", "IVF64,Flat", "--train-size", "4000",
                "--target-recall", "0.98", "--recall-queries", "300"])  # fmt: skip
    meta = json.loads((out / "index.json").read_text())
    picked = meta["search_params"]["nprobe"]

    rows = query_rows(len(x), RecallTarget(0.98, K, 300))
    _, exact = exact_topk(x, x[rows], K + 1)
    index = faiss.read_index(str(out / "index.faiss"))
    by_nprobe = {}
    for nprobe in range(1, 65):
        index.nprobe = nprobe
        by_nprobe[nprobe] = _recall(index.search(x[rows], K + 1)[1], exact, rows)
    smallest = min(n for n, r in by_nprobe.items() if r >= 0.98)
    print("recall by nprobe", {n: round(r, 3) for n, r in by_nprobe.items() if n <= smallest + 2})
    assert picked == smallest > 1  # the data is hard enough that one list does not do
    assert meta["recall"]["measured"] == pytest.approx(by_nprobe[smallest], abs=1e-4)
    assert meta["recall"]["reached"] and meta["recall"]["queries"] == 300

    # jfe search uses the stored nprobe unless told otherwise
    queries = clustered(100, 32, 80, seed=6)
    stored = search_indexes([str(out)], queries, K)
    explicit = search_indexes([str(out)], queries, K, nprobe=picked)
    one = search_indexes([str(out)], queries, K, nprobe=1)
    assert stored[1] == explicit[1] and stored[1] != one[1]


def test_hnsw_stores_ef_search(shard, tmp_path):
    out = tmp_path / "hnsw"
    index_main(["--embeddings", str(shard[1]), "--out", str(out), "--factory", "HNSW8", "--target-recall", "0.99",
                "--recall-queries", "200"])  # fmt: skip
    meta = json.loads((out / "index.json").read_text())
    assert set(meta["search_params"]) == {"efSearch"} and meta["recall"]["measured"] >= 0.99
    assert meta["search_params"]["efSearch"] > K  # FAISS searches at max(efSearch, k): smaller says nothing
    index, _, _ = load_index(out)
    assert faiss.downcast_index(index).hnsw.efSearch == 16  # loading alone does not apply it; search does


def test_an_unreachable_target_fails_naming_the_cap_and_keeps_the_index(shard, tmp_path, capsys):
    out = tmp_path / "pq"
    code = jfe_run(["index", "--embeddings", str(shard[1]), "--out", str(out), "--factory", "IVF16,PQ4",
                     "--train-size", "4000", "--target-recall", "0.99", "--recall-queries", "200"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("jfe index: error: recall@10 0.") and "at nprobe 16" in err[0]
    assert "cannot reach recall@10 0.99" in err[0]
    meta = json.loads((out / "index.json").read_text())
    assert meta["search_params"] == {"nprobe": 16} and not meta["recall"]["reached"]


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_a_target_outside_0_1_is_refused(shard, tmp_path, value):
    with pytest.raises(ValueError, match=rf"--target-recall must be in \(0, 1\], got {value}"):
        index_main(["--embeddings", str(shard[1]), "--out", str(tmp_path / "x"), "--target-recall", value])


def test_exact_neighbours_over_blocks_smaller_than_k_equal_brute_force():
    from jfe.retrieval.tuning import exact_neighbours

    x = clustered(23, 8, 3, seed=9)
    queries = x[:5]
    blocks = [x[i : i + 3] for i in range(0, len(x), 3)]  # the last block holds 2 rows
    _, truth = exact_topk(x, queries, 7)
    np.testing.assert_array_equal(exact_neighbours(queries, iter(blocks), 7), truth)


def test_a_pool_no_larger_than_k_is_refused(tmp_path):
    folder = tmp_path / "emb"
    write_shard(folder, [f"d{i}" for i in range(11)], clustered(11, 8, 2, seed=0))
    with pytest.raises(ValueError, match=r"the index holds 11 vectors; --recall-k 10 needs more than 11"):
        index_main(["--embeddings", str(folder), "--out", str(tmp_path / "i"), "--target-recall", "0.9"])
