"""jfe index --on-disk against FAISS called directly: the same trained quantizer and the same vectors
give the same neighbours, whichever way the inverted lists are stored."""

import json
import shutil

import faiss
import numpy as np
import pytest

from jfe.retrieval import ondisk
from jfe.retrieval.commands import index_main, search_indexes
from jfe.retrieval.index import IVFDATA_FILE, load_index, training_rows
from jfe.retrieval.shards import shard_dir, single_shards, write_shard
from tests.retrieval.conftest import clustered

FACTORY, NLIST, TRAIN = "IVF32,Flat", 32, 2000


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """6,000 clustered vectors in three shards (the middle one float16), their ids, and the folder."""
    root = tmp_path_factory.mktemp("ondisk") / "emb"
    x = clustered(6000, 24, 60, seed=3)
    ids = [f"doc-{i}" for i in range(6000)]
    for s in range(3):
        part = x[s * 2000 : (s + 1) * 2000]
        write_shard(shard_dir(root, s, 3), ids[s * 2000 : (s + 1) * 2000], part.astype("f2") if s == 1 else part)
    x[2000:4000] = x[2000:4000].astype("f2").astype("f4")  # what the float16 shard holds
    return x, ids, root


def _direct(x: np.ndarray) -> faiss.Index:
    index = faiss.index_factory(x.shape[1], FACTORY, faiss.METRIC_INNER_PRODUCT)
    index.train(x[training_rows(len(x), TRAIN, 0)])
    index.add(x)
    return index


def test_on_disk_build_equals_faiss_in_memory(pool, tmp_path):
    x, ids, root = pool
    out = tmp_path / "index"
    index_main(["--embeddings", str(root), "--out", str(out), "--factory", FACTORY, "--train-size", str(TRAIN),
                "--on-disk"])  # fmt: skip
    meta = json.loads((out / "index.json").read_text())
    assert meta["storage"] == "on_disk" and meta["count"] == 6000 and meta["shards"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["ids.txt", "index.faiss", "index.ivfdata", "index.json"]
    assert (out / "ids.txt").read_text().splitlines() == ids

    # moved elsewhere, the index still finds its inverted lists beside it
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    index, loaded_ids, _ = load_index(moved)
    assert loaded_ids == ids and index.ntotal == 6000
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only  # a read-only mount is fine
    direct = _direct(x)
    queries = clustered(200, 24, 60, seed=4)
    for nprobe in (1, 4):
        index.nprobe = direct.nprobe = nprobe
        d_disk, i_disk = index.search(queries, 10)
        d_direct, i_direct = direct.search(queries, 10)
        np.testing.assert_array_equal(i_disk, i_direct)
        np.testing.assert_allclose(d_disk, d_direct, rtol=1e-6)
    _, dids = search_indexes([str(moved)], queries, 10, nprobe=4)
    assert [[ids[j] for j in row] for row in i_direct] == dids


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "PQ8"])
def test_non_ivf_factories_are_refused_with_the_reason(pool, tmp_path, factory):
    with pytest.raises(ValueError, match=rf"--on-disk builds IVF indexes only .*not '{factory}'.*without --on-disk"):
        index_main(["--embeddings", str(pool[2]), "--out", str(tmp_path / "i"), "--factory", factory, "--on-disk"])


def test_a_killed_build_redoes_only_its_missing_blocks(pool, tmp_path, monkeypatch):
    x, _, root = pool
    out, added = tmp_path / "index", []
    real_read = faiss.read_index

    def dying_read(path, *flags):
        if path.endswith("trained.index"):
            added.append(path)
            if len(added) == 3:  # the third shard's block: the build dies there
                raise KeyboardInterrupt
        return real_read(path, *flags)

    monkeypatch.setattr(ondisk.faiss, "read_index", dying_read)
    pairs = single_shards(root)
    with pytest.raises(KeyboardInterrupt):
        ondisk.build_on_disk(pairs, out, FACTORY, TRAIN)
    blocks = sorted(p.name for p in (out / ondisk.BLOCKS_DIR).iterdir())
    assert blocks == ["block-00000.index", "block-00001.index", "plan.json", "trained.index"]
    assert not (out / "index.json").exists()
    added.clear()
    monkeypatch.setattr(ondisk.faiss, "read_index", lambda path, *f: (added.append(path), real_read(path, *f))[1])
    ondisk.build_on_disk(pairs, out, FACTORY, TRAIN)
    # one trained copy for the missing block, one for the merge; the two finished blocks are reused
    assert [p.rsplit("/", 1)[-1] for p in added].count("trained.index") == 2
    index, _, _ = load_index(out)
    direct = _direct(x)
    index.nprobe = direct.nprobe = 4
    np.testing.assert_array_equal(index.search(x[:50], 5)[1], direct.search(x[:50], 5)[1])
    assert not (out / ondisk.BLOCKS_DIR).exists()


def test_an_id_in_two_shards_is_named(tmp_path):
    x = clustered(400, 8, 4, seed=0)
    write_shard(tmp_path / "a", [f"d{i}" for i in range(200)], x[:200])
    write_shard(tmp_path / "b", [f"d{i}" for i in range(199, 399)], x[200:])
    with pytest.raises(ValueError, match=r"duplicate id 'd199' in .*a and .*b"):
        ondisk.build_on_disk(single_shards([tmp_path / "a", tmp_path / "b"]), tmp_path / "i", "IVF4,Flat", 400)


def test_damaged_files_are_named_and_verify_reads_checksums(pool, tmp_path):
    out = tmp_path / "index"
    index_main(["--embeddings", str(pool[2]), "--out", str(out), "--factory", FACTORY, "--on-disk"])
    data = out / IVFDATA_FILE
    original = data.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    data.write_bytes(bytes(flipped))
    load_index(out)  # sizes agree: a mapped index opens without reading its lists
    with pytest.raises(ValueError, match=rf"{data}: its checksum differs from the one index.json records"):
        load_index(out, verify=True)
    data.write_bytes(original[:-100])
    with pytest.raises(ValueError, match=rf"{data}: {len(original) - 100} bytes but index.json records"):
        load_index(out)
