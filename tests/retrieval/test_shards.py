import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from jfe.checksums import sha256_file
from jfe.retrieval.shards import is_complete, read_embeddings, shard_dir, shard_slice, write_shard


def _emb(n: int, dim: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(dtype)


def test_shard_dir_name(tmp_path):
    assert shard_dir(tmp_path, 3, 12) == tmp_path / "shard-00003-of-00012"
    with pytest.raises(ValueError, match="shard index"):
        shard_dir(tmp_path, 12, 12)


@pytest.mark.parametrize(("n", "shards"), [(10, 3), (3, 5), (0, 2), (100, 1), (7, 7)])
def test_shard_slices_are_contiguous_balanced_and_cover_everything(n, shards):
    slices = [shard_slice(n, i, shards) for i in range(shards)]
    assert [x for s in slices for x in s] == list(range(n))
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert shard_slice(10, 0, 3) == range(0, 4) and shard_slice(10, 2, 3) == range(7, 10)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_write_read_round_trip(tmp_path, dtype):
    emb = _emb(7, 5, dtype=dtype)
    ids = [f"9:{i}" for i in range(7)]
    d = write_shard(shard_dir(tmp_path, 0, 1), ids, emb, model="tiny")
    assert is_complete(d)
    meta = json.loads((d / "meta.json").read_text())
    files = meta.pop("files")
    assert meta == {"count": 7, "dim": 5, "dtype": np.dtype(dtype).name, "model": "tiny"}
    assert files["ids.txt"] == {"bytes": len("".join(f"{i}\n" for i in ids)), "sha256": sha256_file(d / "ids.txt")}
    assert files["embeddings.safetensors"]["bytes"] == (d / "embeddings.safetensors").stat().st_size
    assert load_file(str(d / "embeddings.safetensors"))["embeddings"].dtype == dtype
    assert sorted(p.name for p in d.iterdir()) == ["embeddings.safetensors", "ids.txt", "meta.json"]
    got_ids, got = read_embeddings([d])
    assert got_ids == ids
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, emb.astype(np.float32))


def test_single_float32_shard_is_mapped_read_only_and_outlives_its_file(tmp_path):
    emb = _emb(50, 8)
    d = write_shard(tmp_path / "one", [f"d{i}" for i in range(50)], emb)
    _, got = read_embeddings([d])
    assert not got.flags.writeable  # mapped from the file, not copied
    # jfe's writers replace files by rename, so the mapping keeps the old bytes even when the shard is rewritten
    write_shard(d, [f"d{i}" for i in range(50)], _emb(50, 8, seed=1))
    np.testing.assert_array_equal(got, emb)
    _, two = read_embeddings([d, write_shard(tmp_path / "two", ["x"], _emb(1, 8))])
    assert two.flags.writeable and two.shape == (51, 8)


def test_truncated_or_damaged_shard_is_named(tmp_path):
    d = write_shard(tmp_path / "one", [f"d{i}" for i in range(50)], _emb(50, 8))
    path = d / "embeddings.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(ValueError, match=rf"one/embeddings\.safetensors: {len(data) - 40} bytes but meta.json records"):
        read_embeddings([d])
    flipped = bytearray(data)
    flipped[-7] ^= 0x10  # one bit of one vector: the shape checks cannot see it, the checksum does
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"one/embeddings\.safetensors: its checksum differs"):
        read_embeddings([d])
    # a shard written before meta.json recorded its files: the tensor's own size check catches a cut
    meta = json.loads((d / "meta.json").read_text())
    del meta["files"]
    (d / "meta.json").write_text(json.dumps(meta))
    path.write_bytes(data[:-40])
    with pytest.raises(ValueError, match=r"one/embeddings\.safetensors: truncated or damaged: tensor 'embeddings'"):
        read_embeddings([d])


def test_parent_folder_reads_shards_in_sorted_order(tmp_path):
    # written out of order on purpose: reading must follow shard numbering, not creation time
    for i in (2, 0, 1):
        write_shard(shard_dir(tmp_path, i, 3), [f"d{i}-{j}" for j in range(2)], _emb(2, 4, seed=i))
    ids, emb = read_embeddings([tmp_path])
    assert ids == ["d0-0", "d0-1", "d1-0", "d1-1", "d2-0", "d2-1"]
    np.testing.assert_array_equal(emb, np.concatenate([_emb(2, 4, seed=i) for i in range(3)]))


def test_shards_and_parents_can_be_mixed(tmp_path):
    write_shard(shard_dir(tmp_path / "a", 0, 1), ["x"], _emb(1, 3))
    write_shard(tmp_path / "b" / "one", ["y"], _emb(1, 3, seed=1))
    ids, emb = read_embeddings([tmp_path / "b" / "one", tmp_path / "a"])
    assert ids == ["y", "x"] and emb.shape == (2, 3)


def test_incomplete_shard_is_named(tmp_path):
    write_shard(shard_dir(tmp_path, 0, 2), ["a"], _emb(1, 3))
    d = write_shard(shard_dir(tmp_path, 1, 2), ["b"], _emb(1, 3))
    (d / "meta.json").unlink()
    assert not is_complete(d)
    with pytest.raises(ValueError, match=r"incomplete shard .*shard-00001-of-00002"):
        read_embeddings([tmp_path])


def test_missing_shard_in_parent_is_named(tmp_path):
    write_shard(shard_dir(tmp_path, 0, 3), ["a"], _emb(1, 3))
    write_shard(shard_dir(tmp_path, 2, 3), ["c"], _emb(1, 3))
    with pytest.raises(ValueError, match=r"missing shard .*shard-00001-of-00003"):
        read_embeddings([tmp_path])


def test_dim_mismatch_names_both_shards(tmp_path):
    write_shard(shard_dir(tmp_path, 0, 2), ["a"], _emb(1, 3))
    write_shard(shard_dir(tmp_path, 1, 2), ["b"], _emb(1, 4))
    with pytest.raises(ValueError, match=r"shard-00000-of-00002 has dim 3, .*shard-00001-of-00002 has dim 4"):
        read_embeddings([tmp_path])


def test_duplicate_ids_across_shards_names_the_id(tmp_path):
    write_shard(shard_dir(tmp_path, 0, 2), ["a", "9:1"], _emb(2, 3))
    write_shard(shard_dir(tmp_path, 1, 2), ["9:1"], _emb(1, 3))
    with pytest.raises(ValueError, match="duplicate id '9:1'"):
        read_embeddings([tmp_path])


def test_ids_count_must_match_rows(tmp_path):
    with pytest.raises(ValueError, match="2 ids for 3 embedding rows"):
        write_shard(tmp_path / "s", ["a", "b"], _emb(3, 2))
    d = write_shard(shard_dir(tmp_path, 0, 1), ["a", "b"], _emb(2, 2))
    (d / "ids.txt").write_text("a\n")
    with pytest.raises(ValueError, match=r"ids\.txt: 2 bytes but meta.json records 4"):
        read_embeddings([d])
    meta = json.loads((d / "meta.json").read_text())
    del meta["files"]
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"ids\.txt: 1 ids but the shard has 2"):
        read_embeddings([d])


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no embeddings found under"):
        read_embeddings([tmp_path])
    with pytest.raises(FileNotFoundError, match="nope"):
        read_embeddings([tmp_path / "nope"])


def test_rewriting_a_shard_replaces_it(tmp_path):
    d = shard_dir(tmp_path, 0, 1)
    write_shard(d, ["a", "b"], _emb(2, 3))
    write_shard(d, ["c"], _emb(1, 3, seed=5))
    ids, emb = read_embeddings([d])
    assert ids == ["c"]
    np.testing.assert_array_equal(emb, _emb(1, 3, seed=5))
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_failed_write_keeps_its_errno(tmp_path, monkeypatch):
    import errno

    from jfe.retrieval import shards

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards, "save_file", full)
    with pytest.raises(OSError, match=r"s: writing the shard failed \(.*No space left.*\); it stays incomplete") as err:
        write_shard(tmp_path / "s", ["a"], _emb(1, 2))
    assert err.value.errno == errno.ENOSPC
