import json
import warnings

import faiss
import numpy as np
import pytest

from jfe.retrieval.index import build_index, load_index, save_index, set_search_params
from jfe.retrieval.search import search
from tests.retrieval.conftest import exact_topk

# measured on this seeded data: IVF64,Flat nprobe=8 about 0.93, HNSW32 efSearch=64 about 0.997
IVF_RECALL_FLOOR = 0.9
HNSW_RECALL_FLOOR = 0.95


def _recall_at_10(index, ids, db, queries) -> float:
    _, truth = exact_topk(db, queries, 10)
    _, dids = search(index, ids, queries, 10)
    hits = [len({ids[t] for t in true_row} & set(got)) for true_row, got in zip(truth, dids, strict=True)]
    return sum(hits) / (10 * len(queries))


def test_ivf_recall_against_exact(corpus):
    db, ids, queries = corpus
    index = build_index(db, ids, "IVF64,Flat", train_size=10_000)
    set_search_params(index, nprobe=8)
    assert faiss.extract_index_ivf(index).nprobe == 8
    recall = _recall_at_10(index, ids, db, queries)
    print(f"IVF64,Flat nprobe=8 recall@10 vs exact: {recall:.4f}")
    assert recall >= IVF_RECALL_FLOOR
    # fewer probes must cost recall, or the test data is too easy to say anything
    set_search_params(index, nprobe=1)
    assert _recall_at_10(index, ids, db, queries) < recall


def test_hnsw_recall_against_exact(corpus):
    db, ids, queries = corpus
    index = build_index(db, ids, "HNSW32")
    set_search_params(index, ef_search=64)
    assert faiss.downcast_index(index).hnsw.efSearch == 64
    recall = _recall_at_10(index, ids, db, queries)
    print(f"HNSW32 efSearch=64 recall@10 vs exact: {recall:.4f}")
    assert recall >= HNSW_RECALL_FLOOR


def test_pq_factory_builds_and_trains(corpus):
    db, ids, queries = corpus
    db, ids = db[:5000], ids[:5000]
    index = build_index(db, ids, "IVF16,PQ8x4np", train_size=4000)
    assert index.is_trained and index.ntotal == 5000
    set_search_params(index, nprobe=4)
    scores, dids = search(index, ids, queries[:20], 5)
    assert scores.shape == (20, 5) and all(len(d) == 5 for d in dids)
    # PQ is lossy, but a stored vector should still find itself near the top
    _, self_hits = search(index, ids, db[:50], 10)
    assert sum(ids[i] in hit for i, hit in enumerate(self_hits)) >= 40


def test_training_sample_is_seeded(corpus):
    db, ids, queries = corpus
    runs = []
    for seed in (3, 3, 4):
        index = build_index(db[:4000], ids[:4000], "IVF32,Flat", train_size=2000, seed=seed)
        set_search_params(index, nprobe=2)
        runs.append(search(index, ids[:4000], queries[:50], 10))
    assert runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] != runs[2][1]  # a different sample gives different centroids


def test_save_load_round_trip(tmp_path, corpus):
    db, ids, queries = corpus
    index = build_index(db[:5000], ids[:5000], "IVF32,Flat")
    set_search_params(index, nprobe=4)
    before = search(index, ids[:5000], queries, 10)
    save_index(index, ids[:5000], tmp_path / "idx", factory="IVF32,Flat")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["ids.txt", "index.faiss", "index.json"]
    loaded, loaded_ids, meta = load_index(tmp_path / "idx")
    assert loaded_ids == ids[:5000]
    assert meta == json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["factory"] == "IVF32,Flat" and meta["dim"] == 32 and meta["count"] == 5000
    assert meta["metric"] == "inner_product"
    set_search_params(loaded, nprobe=4)
    after = search(loaded, loaded_ids, queries, 10)
    assert after[1] == before[1]
    np.testing.assert_array_equal(after[0], before[0])
    # memory-mapped lists answer exactly as read ones do
    mapped, mapped_ids, _ = load_index(tmp_path / "idx", mmap=True)
    set_search_params(mapped, nprobe=4)
    assert mapped_ids == ids[:5000]
    assert search(mapped, mapped_ids, queries, 10)[1] == before[1]


def test_load_incomplete_index_names_dir(tmp_path, corpus):
    db, ids, _ = corpus
    save_index(build_index(db[:100], ids[:100]), ids[:100], tmp_path / "idx")
    (tmp_path / "idx" / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"index\.json"):
        load_index(tmp_path / "idx")


def test_load_detects_ids_count_mismatch(tmp_path, corpus):
    db, ids, _ = corpus
    save_index(build_index(db[:100], ids[:100]), ids[:100], tmp_path / "idx")
    short = "".join(f"{i}\n" for i in ids[:99])
    (tmp_path / "idx" / "ids.txt").write_text(short)
    with pytest.raises(ValueError, match=rf"ids\.txt: {len(short)} bytes but index.json records"):
        load_index(tmp_path / "idx")
    # an index saved before index.json recorded its files: the count still catches it
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    del meta["files"]
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"ids\.txt: 99 ids"):
        load_index(tmp_path / "idx")


def test_a_damaged_id_map_always_and_a_damaged_index_with_verify_are_named(tmp_path, corpus):
    db, ids, _ = corpus
    folder = save_index(build_index(db[:100], ids[:100], "IVF4,Flat", train_size=100), ids[:100], tmp_path / "idx")
    id_map = folder / "ids.txt"
    text = id_map.read_text()
    id_map.write_text(text.replace(ids[7], ids[7][:-1] + "X", 1))  # same size, another id
    with pytest.raises(ValueError, match=rf"{id_map}: its checksum differs from the one index.json records"):
        load_index(folder)
    id_map.write_text(text)
    data = bytearray((folder / "index.faiss").read_bytes())
    data[-20] ^= 0x01
    (folder / "index.faiss").write_bytes(bytes(data))
    load_index(folder, mmap=True)  # sizes agree: a memory-mapped search still starts at once
    with pytest.raises(ValueError, match=r"index\.faiss: its checksum differs"):
        load_index(folder, verify=True)


def test_unknown_factory_is_named():
    with pytest.raises(ValueError, match=r"invalid FAISS factory string 'IVFbogus,Flat'"):
        build_index(np.ones((10, 4), np.float32), [str(i) for i in range(10)], "IVFbogus,Flat")


def test_empty_embeddings_rejected():
    with pytest.raises(ValueError, match="empty"):
        build_index(np.zeros((0, 8), np.float32), [])


def test_ids_must_match_rows_and_be_unique():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="2 ids for 3"):
        build_index(x, ["a", "b"])
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        build_index(x, ["a", "b", "a"])


def test_too_few_training_points_is_a_clear_error():
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"training factory 'IVF64,Flat' on 20 vectors failed"):
        build_index(x, [str(i) for i in range(20)], "IVF64,Flat")


def test_search_param_not_on_index_type():
    index = build_index(np.eye(4, dtype=np.float32), list("abcd"))
    with pytest.raises(ValueError, match="cannot set nprobe"):
        set_search_params(index, nprobe=4)


def test_use_gpu_true_without_gpus_falls_back_to_cpu():
    if faiss.get_num_gpus() > 0:  # a GPU build: the index is built there, with no fallback warning
        assert build_index(np.eye(4, dtype=np.float32), list("abcd"), use_gpu=True).ntotal == 4
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = build_index(np.eye(4, dtype=np.float32), list("abcd"), use_gpu=True)
    assert index.ntotal == 4
    assert any("no GPU" in str(w.message) for w in caught)
