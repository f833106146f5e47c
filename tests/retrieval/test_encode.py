import numpy as np
import pytest

from jfe import Embedder
from jfe.data.jsonl import DataFormatError
from jfe.inference import embed_windows
from jfe.inputs import BadInputError
from jfe.retrieval.encode import EncodeItem, encode_items, encode_to_shards, length_order, read_items
from jfe.retrieval.items import TextStyle
from jfe.retrieval.shards import read_embeddings
from tests.conftest import make_image


@pytest.fixture(scope="module")
def embedder(tiny_model_dir):
    return Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")


def test_reads_pools_queries_with_instructions_and_pairs(mbeir_root, tmp_path):
    pool = read_items(mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", mbeir_root)
    assert [it.id for it in pool][:3] == ["1:10", "1:11", "2:10"] and pool[0].instruction is None
    queries = read_items(
        mbeir_root / "query/test/mbeir_toy_it2i_test.jsonl",
        mbeir_root,
        mbeir_root / "instructions/query_instructions.tsv",
        TextStyle("first", uniir_format=False),
    )
    assert queries[0].instruction == "Apply the change." and queries[0].text == "rotated"
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"query": {"text": "q"}, "pos": [{"text": "d"}], "instruction": "Find."}\n')
    assert read_items(pairs)[0].instruction == "Find."
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataFormatError, match=r"empty\.jsonl: no records"):
        read_items(empty)


def test_length_sorted_batches_and_item_order_kept(embedder, mbeir_root):
    items = read_items(mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", mbeir_root)
    order = length_order(items)
    assert [items[i].image is not None for i in order] == sorted(items[i].image is not None for i in order)
    vecs, ok = encode_items(embedder, items, batch_size=3, progress=None)
    assert ok.all()
    direct = embedder.encode([{"text": it.text, "image": it.image} for it in items])
    assert np.abs(vecs - direct).max() <= 1e-5


def test_windows_are_resorted_by_exact_token_count(embedder, tmp_path):
    # images of two sizes in alternation: the rough order (no image opened) cannot tell them apart
    items = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        make_image(i, (32, 32) if i % 2 else (8, 8)).save(path)
        items.append(EncodeItem(str(i), None, str(path)))
    widths = []

    class Recording:
        processor, config, dimension = embedder.processor, embedder.config, embedder.dimension

        def __call__(self, **features):
            widths.append((int(features["attention_mask"].sum()), features["attention_mask"].numel()))
            return embedder(**features)

        def embed_windows(self, *args):
            return embed_windows(self, *args)

    vecs, ok = encode_items(Recording(), items, batch_size=2, progress=None)
    assert ok.all() and len(widths) == 4
    assert all(real == padded for real, padded in widths)  # each batch holds one image size
    direct = embedder.encode([make_image(i, (32, 32) if i % 2 else (8, 8)) for i in range(8)])
    assert np.abs(vecs - direct).max() <= 1e-5


def test_interrupted_encode_resumes_to_the_same_embeddings(embedder, mbeir_root, tmp_path):
    items = read_items(mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", mbeir_root)
    # a job that died after its first shard: only shard 0 exists
    encode_to_shards(embedder, items, tmp_path / "run", num_shards=3, shards=[0], dtype="float32")
    first = tmp_path / "run" / "shard-00000-of-00003"
    stamp = (first / "meta.json").stat().st_mtime_ns
    encode_to_shards(embedder, items, tmp_path / "run", num_shards=3, dtype="float32")
    assert (first / "meta.json").stat().st_mtime_ns == stamp  # the complete shard was not redone
    encode_to_shards(embedder, items, tmp_path / "fresh", num_shards=3, dtype="float32")
    ids_a, vecs_a = read_embeddings([tmp_path / "run"])
    ids_b, vecs_b = read_embeddings([tmp_path / "fresh"])
    assert ids_a == ids_b == [it.id for it in items]
    assert np.abs(vecs_a - vecs_b).max() <= 1e-6


def test_two_shards_merged_equal_one_unsharded_run(embedder, mbeir_root, tmp_path):
    items = read_items(mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", mbeir_root)
    encode_to_shards(embedder, items, tmp_path / "two", num_shards=2, dtype="float32")
    encode_to_shards(embedder, items, tmp_path / "one", num_shards=1, dtype="float32")
    ids_two, two = read_embeddings([tmp_path / "two"])
    ids_one, one = read_embeddings([tmp_path / "one"])
    assert ids_two == ids_one
    assert np.abs(two - one).max() <= 1e-5


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_image_fails_with_path_or_is_skipped(embedder, mbeir_root, tmp_path, workers):
    (mbeir_root / "images/4.png").unlink()
    items = read_items(mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", mbeir_root)
    # a DataLoader worker re-raises the same type, its message closing the worker's traceback
    start = "^" if workers == 0 else r"\njfe\.inputs\.BadInputError: "
    with pytest.raises(BadInputError, match=start + r"item 3:10: image file not found: \S*/images/4\.png\s*$"):
        encode_to_shards(embedder, items, tmp_path / "strict", num_shards=1, num_workers=workers)
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").rglob("meta.json"))
    encode_to_shards(embedder, items, tmp_path / "lenient", num_shards=1, skip_bad=True, num_workers=workers)
    ids, _ = read_embeddings([tmp_path / "lenient"])
    assert "3:10" not in ids and len(ids) == len(items) - 1


def test_the_vllm_engine_without_vllm_names_the_extra(tiny_model_dir, mbeir_root, tmp_path, monkeypatch):
    import sys

    from jfe.retrieval.encode import main

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if absent, wherever vLLM is installed
    pool = mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    with pytest.raises(ImportError, match=r"--engine vllm needs vLLM: pip install 'jfe\[vllm\]'"):
        main(["--model", str(tiny_model_dir), "--data", str(pool), "--out", str(tmp_path / "e"), "--engine", "vllm"])
    assert not (tmp_path / "e").exists()
