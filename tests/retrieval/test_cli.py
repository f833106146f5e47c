"""The README's retrieval commands, end to end on the hand-written M-BEIR sample."""

import json

import numpy as np
import pytest

from jfe import Embedder
from jfe.cli import main
from jfe.retrieval.mine import read_mined
from jfe.retrieval.trec import read_run


@pytest.fixture(scope="module")
def saved_model(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(out)
    return out


def test_encode_index_search_eval_mine(saved_model, mbeir_root, tmp_path):
    pool = mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    queries = mbeir_root / "query/test/mbeir_toy_t2i_test.jsonl"
    tsv = mbeir_root / "instructions/query_instructions.tsv"
    qrels = mbeir_root / "qrels/test/mbeir_toy_t2i_test_qrels.txt"
    emb, idx, run, mined = tmp_path / "emb", tmp_path / "idx", tmp_path / "run.trec", tmp_path / "neg.jsonl"
    for shard in ("0", "1"):  # two processes splitting the pool
        assert main(["encode", "--model", str(saved_model), "--data", str(pool), "--out", str(emb),
                     "--images-root", str(mbeir_root), "--shard", shard, "--num-shards", "2",
                     "--num-workers", "0"]) == 0  # fmt: skip
    assert main(["index", "--embeddings", str(emb), "--out", str(idx), "--factory", "Flat"]) == 0
    assert main(["search", "--model", str(saved_model), "--index", str(idx), "--queries", str(queries),
                 "--out", str(run), "--k", "10", "--images-root", str(mbeir_root),
                 "--instruction-file", str(tsv)]) == 0  # fmt: skip
    ranking = read_run(run)
    assert set(ranking) == {"1:1", "1:2"} and all(len(r) == 7 for r in ranking.values())  # k above the pool size
    # reading the index whole instead of mapping it changes nothing in the run
    read_whole = tmp_path / "read.trec"
    assert main(["search", "--model", str(saved_model), "--index", str(idx), "--queries", str(queries),
                 "--out", str(read_whole), "--k", "10", "--images-root", str(mbeir_root),
                 "--instruction-file", str(tsv), "--no-mmap"]) == 0  # fmt: skip
    assert read_whole.read_text() == run.read_text()
    # scores in the run are the model's cosine similarities with the instruction applied
    model = Embedder.from_pretrained(saved_model, dtype="float32", device="cpu")
    q = model.encode(["a red seven"], instruction="Find the image.")
    d = model.encode([{"image": str(mbeir_root / "images/0.png")}])
    assert abs(ranking["1:1"]["1:10"] - float((q @ d.T)[0, 0])) < 1e-3
    out_json = tmp_path / "eval.json"
    assert main(["eval", "--run", str(run), "--qrels", str(qrels), "--out", str(out_json)]) == 0
    table = json.loads(out_json.read_text())
    assert set(table) == {"0", "average"} and 0.0 <= table["average"]["recall@5"] <= 1.0
    assert main(["mine", "--run", str(run), "--qrels", str(qrels), "--out", str(mined), "--k", "2"]) == 0
    negatives = read_mined(mined)
    assert "1:10" not in negatives["1:1"] and len(negatives["1:1"]) <= 2


def test_end_to_end_eval_with_modality_probe(saved_model, mbeir_root, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(saved_model), "--mbeir-root", str(mbeir_root), "--split", "test",
                 "--pool", "local", "--ablate", "image", "--out", str(out)]) == 0  # fmt: skip
    result = json.loads((out / "eval.json").read_text())
    assert set(result["metrics"]) == {"toy_t2i", "toy_i2t", "toy_it2i", "average"}
    # only toy_it2i has image+text queries, so only it is probed
    assert list(result["probe"]["tasks"]) == ["toy_it2i", "average"]
    row = result["probe"]["tasks"]["toy_it2i"]
    assert np.isclose(row["change"], row["recall@1 ablated"] - row["recall@1"])
    assert (out / "runs" / "toy_t2i.trec").is_file()
    # pool embeddings are cached as shards, keyed by the model's weights: a rerun reuses them,
    # a retrained model saved at the same path does not
    from jfe.retrieval.evaluate import model_fingerprint

    cache = out / "pool_embeddings" / model_fingerprint(saved_model)
    assert (cache / "toy_t2i" / "shard-00000-of-00001" / "meta.json").is_file()
    assert [p.name for p in (out / "pool_embeddings").iterdir()] == [cache.name]


def test_eval_refuses_run_ids_absent_from_qrels(mbeir_root, tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("9:9 Q0 1:10 1 0.5 jfe\n")
    qrels = mbeir_root / "qrels/test/mbeir_toy_t2i_test_qrels.txt"
    with pytest.raises(ValueError, match="9:9"):
        from jfe.retrieval.metrics import evaluate
        from jfe.retrieval.trec import read_qrels

        evaluate(read_run(run), read_qrels(qrels))
