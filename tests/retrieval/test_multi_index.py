import json

import faiss
import numpy as np
import pytest

from jfe.retrieval.index import build_index, load_index, save_index
from jfe.retrieval.multi_index import (
    build_multi_index,
    exhaustive_multi,
    load_multi_index,
    multi_candidates,
    resolve_factory,
    save_multi_index,
    search_multi,
)
from jfe.retrieval.multi_shards import MultiVectors
from tests.retrieval.conftest import normalise

# measured on this seeded workload (IVF{auto} is IVF609 here), recall@10 against exhaustive MeanMaxSim:
# nprobe=4 depth=32 0.990, depth=16 0.935, depth=2 0.317 (the words' clusters sit in few cells, so
# nprobe 1..16 moves it by under 0.01)
DEPTH, NPROBE, RECALL_FLOOR = 32, 4, 0.95


@pytest.fixture(scope="module")
def workload() -> tuple[MultiVectors, list[np.ndarray]]:
    """Texts as bags of noisy "word" vectors, each text about one topic (a few of 300 words): the
    structure late interaction is for. 1,500 items of 4..28 tokens, 60 queries of 4..16, dim 32."""
    rng = np.random.default_rng(0)
    words = normalise(rng.standard_normal((300, 32)))
    topics = rng.integers(0, 300, (60, 15))

    def text(n: int) -> np.ndarray:
        w = topics[rng.integers(60)][rng.integers(0, 15, n)]
        return normalise(words[w] + 0.15 * rng.standard_normal((n, 32)))

    docs = [text(int(n)) for n in rng.integers(4, 29, 1500)]
    return MultiVectors.from_items([f"9:{i}" for i in range(1500)], docs), [
        text(int(n)) for n in rng.integers(4, 17, 60)
    ]


@pytest.fixture(scope="module")
def ivf(workload):
    return build_multi_index(workload[0], seed=0)


@pytest.fixture(scope="module")
def exact(workload):
    mv, queries = workload
    return exhaustive_multi(queries, mv, 10)


def _recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def test_two_stage_recall_against_exhaustive(ivf, workload, exact):
    queries = workload[1]
    assert ivf.factory == resolve_factory("IVF{auto},Flat", len(ivf.docs.vectors), 100_000)
    scores, dids = search_multi(ivf, queries, 10, depth=DEPTH, nprobe=NPROBE)
    recall = _recall(dids, exact[1])
    print(f"{ivf.factory} nprobe={NPROBE} depth={DEPTH} recall@10 vs exhaustive MeanMaxSim: {recall:.4f}")
    assert recall >= RECALL_FLOOR
    assert scores.shape == (60, 10) and np.all(np.diff(scores, axis=1) <= 0)
    # too shallow a candidate list must cost recall, or the workload is too easy to say anything
    assert _recall(search_multi(ivf, queries, 10, depth=2, nprobe=NPROBE)[1], exact[1]) < recall - 0.1


def test_search_equals_exhaustive_when_depth_covers_everything(workload, exact):
    mv, queries = workload
    flat = build_multi_index(mv, "Flat")
    # 12 queries: each vector then asks FAISS for every token, which is slow
    scores, dids = search_multi(flat, queries[:12], 10, depth=len(mv.vectors))
    assert dids == exact[1][:12]
    np.testing.assert_allclose(scores, exact[0][:12], atol=1e-6, rtol=0)
    # every item is a candidate then, so k beyond the pool pads as jfe.retrieval.search does
    many, padded = search_multi(flat, queries[:2], len(mv) + 5, depth=len(mv.vectors))
    assert [len(d) for d in padded] == [len(mv)] * 2 and np.all(np.isinf(many[:, len(mv) :]))


def test_candidates_are_faiss_s_own_hits(ivf, workload):
    mv, queries = workload
    got = multi_candidates(ivf, queries, depth=DEPTH, nprobe=NPROBE)
    ivf_direct = faiss.extract_index_ivf(ivf.index)
    assert ivf_direct.nprobe == NPROBE
    _, labels = ivf.index.search(np.concatenate(queries), DEPTH)
    bounds = np.cumsum([0] + [len(q) for q in queries])
    owner = np.repeat(np.arange(len(mv)), mv.lengths)
    for q, rows in enumerate(got):
        hits = labels[bounds[q] : bounds[q + 1]].ravel()
        assert rows.tolist() == sorted(set(owner[hits[hits >= 0]].tolist()))
    # with an exact token index, the candidates are the owners of each query vector's true nearest tokens
    flat = build_multi_index(mv, "Flat")
    top = np.argsort(-(queries[0] @ mv.vectors.T), axis=1)[:, :DEPTH]
    assert multi_candidates(flat, queries[:1], DEPTH)[0].tolist() == sorted(set(owner[top.ravel()].tolist()))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_save_load_round_trip(tmp_path, ivf, workload, dtype):
    mv, queries = workload
    before = search_multi(ivf, queries, 10, depth=DEPTH, nprobe=NPROBE)
    folder = save_multi_index(ivf, tmp_path / "idx", dtype=dtype)
    files = ["ids.txt", "index.faiss", "index.json", "token_items.npy", "vectors.safetensors"]
    assert sorted(p.name for p in folder.iterdir()) == files
    meta = json.loads((folder / "index.json").read_text())
    assert meta == {"kind": "multi", "similarity": "meanmaxsim", "factory": ivf.factory,
                    "index_type": "IndexIVFFlat", "dim": 32, "count": 1500, "tokens": len(mv.vectors),
                    "metric": "inner_product", "dtype": dtype}  # fmt: skip
    for mmap in (False, True):
        loaded = load_multi_index(folder, mmap=mmap)
        assert loaded.ids == mv.ids and loaded.factory == ivf.factory
        np.testing.assert_array_equal(loaded.token_items, ivf.token_items)
        scores, dids = search_multi(loaded, queries, 10, depth=DEPTH, nprobe=NPROBE)
        if dtype == "float32":
            assert dids == before[1]
            np.testing.assert_array_equal(scores, before[0])
        else:  # float16 token vectors move scores by ~1e-3; the ranking barely moves
            np.testing.assert_allclose(scores, before[0], atol=2e-3)
            assert _recall(dids, before[1]) >= 0.97


def test_single_and_multi_loaders_refuse_each_other(tmp_path, ivf, workload):
    save_multi_index(ivf, tmp_path / "multi")
    with pytest.raises(ValueError, match=r"multi/index\.json: a multi-vector .* index, .*load_multi_index"):
        load_index(tmp_path / "multi")
    x = normalise(np.random.default_rng(1).standard_normal((10, 32)))
    save_index(build_index(x, [str(i) for i in range(10)]), [str(i) for i in range(10)], tmp_path / "single")
    with pytest.raises(ValueError, match=r"single/index\.json: a single-vector index, .*index\.load_index"):
        load_multi_index(tmp_path / "single")


def test_load_checks_every_part(tmp_path, ivf):
    folder = save_multi_index(ivf, tmp_path / "idx")
    (folder / "ids.txt").write_text("a\n")
    with pytest.raises(ValueError, match=r"idx/ids\.txt: 1 ids but index\.json says 1500 items"):
        load_multi_index(folder)
    save_multi_index(ivf, folder)
    np.save(folder / "token_items.npy", np.roll(ivf.token_items, 1))
    with pytest.raises(ValueError, match=r"idx/token_items\.npy: does not match the offsets"):
        load_multi_index(folder)
    save_multi_index(ivf, folder)
    (folder / "vectors.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"idx/vectors\.safetensors: unreadable safetensors file"):
        load_multi_index(folder)
    (folder / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"index\.json missing"):
        load_multi_index(folder)


def test_bad_arguments_are_refused(ivf, workload):
    mv, queries = workload
    with pytest.raises(ValueError, match="depth must be >= 1"):
        search_multi(ivf, queries, 10, depth=0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        search_multi(ivf, queries, 0)
    with pytest.raises(ValueError, match="query 1 has dim 8"):
        search_multi(ivf, [queries[0], np.ones((2, 8), np.float32)], 10)
    with pytest.raises(ValueError, match="cannot set nprobe"):
        search_multi(build_multi_index(mv, "Flat"), queries, 10, nprobe=4)
    with pytest.raises(ValueError, match="from no items"):
        build_multi_index(MultiVectors.from_items([], [], dim=32))


def test_auto_list_count():
    assert resolve_factory("IVF{auto},PQ8", 1_000_000, 100_000) == "IVF2564,PQ8"  # 39 training points a list
    assert resolve_factory("IVF{auto},Flat", 10_000, 100_000) == "IVF256,Flat"  # 39 per list of 10,000
    assert resolve_factory("IVF{auto},Flat", 40_000, 100_000) == "IVF800,Flat"  # 4 sqrt(T)
    assert resolve_factory("HNSW32", 40_000, 100_000) == "HNSW32"


def test_torch_queries_and_bad_ids(tmp_path, ivf, workload):
    import torch

    mv, queries = workload
    expected = search_multi(ivf, queries[:5], 10, depth=DEPTH, nprobe=NPROBE)
    got = search_multi(ivf, [torch.from_numpy(q) for q in queries[:5]], 10, depth=DEPTH, nprobe=NPROBE)
    assert got[1] == expected[1]
    bad = build_multi_index(MultiVectors([" a", *mv.ids[1:]], mv.vectors, mv.offsets), "Flat")
    with pytest.raises(ValueError, match=r"invalid id ' a'"):
        save_multi_index(bad, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
