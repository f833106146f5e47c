import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jfe.retrieval import shards
from jfe.retrieval.multi_shards import MultiVectors, read_multi_embeddings, write_multi_shard
from jfe.retrieval.shards import is_complete, read_embeddings, shard_dir, write_shard


def _items(lengths, dim: int = 4, seed: int = 0, dtype=np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, dim)).astype(dtype) for n in lengths]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_write_read_round_trip(tmp_path, dtype):
    items = _items([3, 1, 5], dtype=dtype)
    d = write_multi_shard(shard_dir(tmp_path, 0, 1), ["a", "b", "c"], items, model="tiny")
    assert is_complete(d)
    meta = json.loads((d / "meta.json").read_text())
    files = meta.pop("files")
    assert meta == {
        "kind": "multi", "count": 3, "dim": 4, "dtype": np.dtype(dtype).name, "tokens": 9, "model": "tiny",
    }  # fmt: skip
    assert files["ids.txt"] == {"bytes": 6, "sha256": hashlib.sha256(b"a\nb\nc\n").hexdigest()}
    assert sorted(p.name for p in d.iterdir()) == ["embeddings.safetensors", "ids.txt", "meta.json"]
    stored = load_file(str(d / "embeddings.safetensors"))
    assert stored["vectors"].dtype == dtype and stored["vectors"].shape == (9, 4)
    np.testing.assert_array_equal(stored["offsets"], [0, 3, 4, 9])
    mv = read_multi_embeddings(tmp_path)
    assert mv.ids == ["a", "b", "c"] and len(mv) == 3 and mv.dim == 4
    assert mv.vectors.dtype == np.float32 and mv.offsets.dtype == np.int64
    for i, item in enumerate(items):
        np.testing.assert_array_equal(mv.item(i), item.astype(np.float32))
    np.testing.assert_array_equal(mv.token_items(), [0, 0, 0, 1, 2, 2, 2, 2, 2])


def test_mixed_precision_items_are_stored_as_float32(tmp_path):
    items = [*_items([2], dtype=np.float16), *_items([1], dtype=np.float64)]
    d = write_multi_shard(tmp_path / "s", ["a", "b"], items)
    assert json.loads((d / "meta.json").read_text())["dtype"] == "float32"


def test_shards_concatenate_in_order_with_offsets_shifted(tmp_path):
    parts = {0: _items([2, 3], seed=0), 1: [], 2: _items([1, 4, 1], seed=2)}
    for i in (2, 0, 1):  # written out of order: reading follows the shard numbers
        ids = [f"s{i}-{j}" for j in range(len(parts[i]))]
        write_multi_shard(shard_dir(tmp_path, i, 3), ids, parts[i], dim=4)
    mv = read_multi_embeddings(tmp_path)
    assert mv.ids == ["s0-0", "s0-1", "s2-0", "s2-1", "s2-2"]
    np.testing.assert_array_equal(mv.offsets, [0, 2, 5, 6, 10, 11])
    for i, item in enumerate(parts[0] + parts[2]):
        np.testing.assert_array_equal(mv.item(i), item)


def test_rewrite_replaces_and_a_failed_write_leaves_the_old_shard(tmp_path, monkeypatch):
    d = shard_dir(tmp_path, 0, 1)
    write_multi_shard(d, ["a", "b"], _items([2, 2]))
    write_multi_shard(d, ["c"], _items([3], seed=5))
    mv = read_multi_embeddings(d)
    assert mv.ids == ["c"]
    np.testing.assert_array_equal(mv.vectors, _items([3], seed=5)[0])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(shards, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        write_multi_shard(d, ["x"], _items([1]))
    # the new files were to be written beside the old ones: the old shard is complete and as it was
    assert is_complete(d)
    assert not [p for p in d.iterdir() if p.name.startswith(".")]
    mv = read_multi_embeddings(tmp_path)
    assert mv.ids == ["c"]
    np.testing.assert_array_equal(mv.vectors, _items([3], seed=5)[0])


def _forget_records(shard) -> None:
    """As a shard written before meta.json recorded its files' sizes and checksums, so the checks
    behind those are reached."""
    meta = json.loads((shard / "meta.json").read_text())
    del meta["files"]
    (shard / "meta.json").write_text(json.dumps(meta))


def test_truncated_and_corrupted_files_are_named(tmp_path):
    d = write_multi_shard(tmp_path / "one", ["a", "b"], _items([40, 30]))
    path = d / "embeddings.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-64])
    with pytest.raises(ValueError, match=rf"one/embeddings\.safetensors: {len(data) - 64} bytes but meta.json records"):
        read_multi_embeddings(d)
    path.write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(ValueError, match=r"one/embeddings\.safetensors: its checksum differs"):
        read_multi_embeddings(d)
    _forget_records(d)
    with pytest.raises(ValueError, match=r"one/embeddings\.safetensors: unreadable safetensors file"):
        read_multi_embeddings(d)
    path.write_bytes(data[:-64])
    with pytest.raises(ValueError, match=r"one/embeddings\.safetensors: unreadable safetensors file"):
        read_multi_embeddings(d)
    path.unlink()
    with pytest.raises(ValueError, match=r"one/embeddings\.safetensors: missing file"):
        read_multi_embeddings(d)


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        (np.array([0, 3, 3, 6], np.int64), r"item 1 owns 0 token vectors"),
        (np.array([0, 4, 2, 6], np.int64), r"item 1 owns -2 token vectors"),
        (np.array([0, 3, 4, 5], np.int64), r"offsets must run from 0 to 6"),
        (np.array([1, 3, 4, 6], np.int64), r"offsets must run from 0 to 6"),
        (np.array([0, 3, 6], np.int64), r"offsets must be int64 of shape \(4,\) for 3 items"),
        (np.array([0, 3, 4, 6], np.int32), r"offsets must be int64"),
    ],
)
def test_bad_offsets_are_named(tmp_path, offsets, message):
    d = write_multi_shard(tmp_path / "one", ["a", "b", "c"], _items([3, 1, 2]))
    path = d / "embeddings.safetensors"
    save_file({"vectors": load_file(str(path))["vectors"], "offsets": offsets}, str(path))
    _forget_records(d)
    with pytest.raises(ValueError, match=rf"one/embeddings\.safetensors: {message}"):
        read_multi_embeddings(d)


def test_tensor_shape_or_dtype_unlike_meta_is_named(tmp_path):
    d = write_multi_shard(tmp_path / "one", ["a", "b"], _items([3, 1]))
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "tokens": 5}))
    with pytest.raises(ValueError, match=r"one/embeddings\.safetensors: tensor 'vectors' is float32 \(4, 4\)"):
        read_multi_embeddings(d)
    (d / "meta.json").write_text(json.dumps({**meta, "dtype": "float16"}))
    with pytest.raises(ValueError, match=r"but meta\.json says float16 \(4, 4\)"):
        read_multi_embeddings(d)
    (d / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "tokens"}))
    with pytest.raises(ValueError, match=r"one/meta\.json: malformed shard metadata: tokens"):
        read_multi_embeddings(d)


def test_kind_mismatch_is_an_error_both_ways(tmp_path):
    multi = write_multi_shard(tmp_path / "multi", ["a"], _items([2]))
    single = write_shard(tmp_path / "single", ["a"], np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match=r"multi/meta\.json: a multi-vector .* shard, .*jfe index --multi"):
        read_embeddings(multi)
    with pytest.raises(ValueError, match=r"single/meta\.json: a single-vector shard, .*read_embeddings"):
        read_multi_embeddings(single)
    assert "kind" not in json.loads((single / "meta.json").read_text())  # single shards are written as before
    meta = json.loads((multi / "meta.json").read_text())
    (multi / "meta.json").write_text(json.dumps({**meta, "kind": "sparse"}))
    with pytest.raises(ValueError, match=r"unknown kind 'sparse'"):
        read_multi_embeddings(multi)


def test_shards_must_agree_and_ids_must_not_repeat(tmp_path):
    write_multi_shard(shard_dir(tmp_path / "dim", 0, 2), ["a"], _items([1], dim=3))
    write_multi_shard(shard_dir(tmp_path / "dim", 1, 2), ["b"], _items([1], dim=4))
    with pytest.raises(ValueError, match=r"dim mismatch: .*shard-00000-of-00002 has 3, .*shard-00001-of-00002 has 4"):
        read_multi_embeddings(tmp_path / "dim")
    write_multi_shard(tmp_path / "m1", ["a"], _items([1]), model="x")
    write_multi_shard(tmp_path / "m2", ["b"], _items([1]), model="y")
    with pytest.raises(ValueError, match=r"model mismatch: .*m1 has 'x', .*m2 has 'y'"):
        read_multi_embeddings([tmp_path / "m1", tmp_path / "m2"])
    write_multi_shard(tmp_path / "d1", ["a", "9:1"], _items([1, 2]))
    write_multi_shard(tmp_path / "d2", ["9:1"], _items([1]))
    with pytest.raises(ValueError, match=r"duplicate id '9:1' in .*d1 and .*d2"):
        read_multi_embeddings([tmp_path / "d1", tmp_path / "d2"])
    write_multi_shard(shard_dir(tmp_path / "gap", 0, 3), ["a"], _items([1]))
    write_multi_shard(shard_dir(tmp_path / "gap", 2, 3), ["c"], _items([1]))
    with pytest.raises(ValueError, match=r"missing shard .*shard-00001-of-00003"):
        read_multi_embeddings(tmp_path / "gap")
    with pytest.raises(ValueError, match="no embeddings found under"):
        read_multi_embeddings(tmp_path / "d1" / "..")


def test_writer_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"item 1 must be a non-empty 2-D float array"):
        write_multi_shard(tmp_path / "s", ["a", "b"], [np.ones((2, 4)), np.ones((0, 4))])
    with pytest.raises(ValueError, match=r"item 0 must be a non-empty 2-D float array"):
        write_multi_shard(tmp_path / "s", ["a"], [np.ones((2, 4), np.int64)])
    with pytest.raises(ValueError, match=r"2 ids for 1 items"):
        write_multi_shard(tmp_path / "s", ["a", "b"], _items([2]))
    with pytest.raises(ValueError, match=r"items of different widths \[3, 4\]"):
        write_multi_shard(tmp_path / "s", ["a", "b"], [np.ones((1, 3)), np.ones((1, 4))])
    with pytest.raises(ValueError, match="pass dim"):
        write_multi_shard(tmp_path / "s", [], [])
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        write_multi_shard(tmp_path / "s", ["a", "a"], _items([1, 1]))
    assert not (tmp_path / "s").exists()  # every check comes before the first file


def test_multivectors_checks_its_offsets():
    mv = MultiVectors.from_items(["a", "b"], _items([2, 3]))
    assert mv.lengths.tolist() == [2, 3]
    with pytest.raises(ValueError, match=r"MultiVectors: offsets must run from 0 to 5"):
        MultiVectors(["a", "b"], mv.vectors, np.array([0, 2, 4], np.int64))
    with pytest.raises(ValueError, match=r"2 ids for 1 items"):
        MultiVectors.from_items(["a", "b"], _items([2]))
