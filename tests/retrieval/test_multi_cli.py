"""The retrieval commands with a late-interaction model: `jfe encode` writes token-vector shards,
`jfe index --multi` indexes them, `jfe search` reranks by MeanMaxSim, `jfe eval` scores them.
Oracles: sentence-transformers' MultiVectorEncoder for the pool's vectors and its maxsim for the
scores."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from sentence_transformers import MultiVectorEncoder
from sentence_transformers.util.similarity import maxsim

from jfe import Embedder
from jfe.cli import main
from jfe.data.uniir import format_string
from jfe.retrieval.encode import encode_items
from jfe.retrieval.items import read_items
from jfe.retrieval.multi_shards import read_multi_embeddings
from tests.retrieval.conftest import SAMPLE_TASKS

NAMES = tuple(SAMPLE_TASKS)


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    base = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    out = {}
    for kind in ("multi", "both"):
        torch.manual_seed(0)
        config = dataclasses.replace(base.config, embedding=kind, multi_dim=16)
        out[kind] = Embedder(base.model, base.processor, config).save(tmp_path_factory.mktemp(kind) / "model")
    return out


@pytest.fixture(scope="module")
def shards(models, sample, tmp_path_factory):
    emb = tmp_path_factory.mktemp("emb") / "emb"
    pool = sample / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    assert main(["encode", "--model", str(models["multi"]), "--data", str(pool), "--out", str(emb),
                 "--images-root", str(sample), "--num-shards", "2", "--num-workers", "0",
                 "--dtype", "float32"]) == 0  # fmt: skip
    return emb


def test_shards_hold_the_token_vectors_multi_vector_encoder_gives(shards, models, sample):
    docs = read_multi_embeddings([shards])
    rows = {
        json.loads(line)["did"]: json.loads(line)
        for line in (sample / "cand_pool/global/mbeir_union_test_cand_pool.jsonl").read_text().splitlines()
    }
    inputs = [
        {k: v for k, v in (("text", format_string(rows[d]["txt"])), ("image", rows[d]["img_path"])) if v}
        for d in docs.ids
    ]
    for x in inputs:
        if "image" in x:
            x["image"] = str(sample / x["image"])
    theirs = MultiVectorEncoder(str(models["multi"]), device="cpu").encode_document(inputs)
    assert docs.ids == list(rows)
    for i, b in enumerate(theirs):
        assert np.abs(docs.item(i) - b.numpy()).max() <= 1e-5


def test_index_and_search_rank_by_maxsim(shards, models, sample, tmp_path):
    idx, run = tmp_path / "idx", tmp_path / "run.trec"
    assert main(["index", "--multi", "--embeddings", str(shards), "--out", str(idx), "--factory", "Flat"]) == 0
    assert json.loads((idx / "index.json").read_text())["kind"] == "multi"
    queries, tsv = sample / "all_queries.jsonl", sample / "instructions/query_instructions.tsv"
    assert main(["search", "--model", str(models["multi"]), "--index", str(idx), "--queries", str(queries),
                 "--out", str(run), "--k", "7", "--images-root", str(sample), "--instruction-file", str(tsv),
                 "--depth", "1000"]) == 0  # fmt: skip
    # the oracle: the same queries' token vectors against every candidate, by sentence-transformers' maxsim
    items = read_items(queries, sample, tsv)
    q_vecs, _ = encode_items(Embedder.from_pretrained(models["multi"], device="cpu"), items, multi=True)
    docs = read_multi_embeddings([shards])
    expected = maxsim([torch.tensor(q) for q in q_vecs],
                      [torch.tensor(docs.item(i)) for i in range(len(docs))], length_normalize=True)  # fmt: skip
    lines = [line.split() for line in run.read_text().splitlines()]
    assert len(lines) == len(items) * len(docs)
    for qi, item in enumerate(items):
        got = {did: float(score) for qid, _, did, _, score, _ in lines if qid == item.id}
        for di, did in enumerate(docs.ids):
            assert abs(got[did] - float(expected[qi, di])) <= 1e-4
        best = docs.ids[int(expected[qi].argmax())]
        assert next(did for qid, _, did, rank, *_ in lines if qid == item.id and rank == "1") == best


def test_eval_scores_token_vectors_with_the_probe(models, sample, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(models["both"]), "--mbeir-root", str(sample), "--vectors", "multi",
                 "--ablate", "image", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "eval.json").read_text())
    assert report["vectors"] == "multi"
    assert report["probe"]["ablate"] == "image"
    assert [t for t in report["probe"]["tasks"] if t != "average"] == ["toy_it2i"]  # the one image+text task
    # the runs it wrote score to the same table through jfe eval --run
    runs = sorted(str(p) for p in (out / "runs").glob("*.trec"))
    qrels = [str(sample / f"qrels/test/mbeir_{name}_test_qrels.txt") for name in NAMES]
    again = tmp_path / "again.json"
    assert main(["eval", "--run", *runs, "--qrels", *qrels, "--instruction-file",
                 str(sample / "instructions/query_instructions.tsv"), "--out", str(again)]) == 0  # fmt: skip
    assert json.loads(again.read_text())["average"] == report["metrics"]["average"]
    # the shards cached for token vectors sit apart from single-vector ones
    assert list((out / "pool_embeddings").glob("*/uniir-format/*/multi/shard-*"))


def test_wrong_kinds_are_refused(models, shards, sample, tmp_path):
    with pytest.raises(ValueError, match="token vectors only"):
        main(["eval", "--model", str(models["multi"]), "--mbeir-root", str(sample), "--vectors", "single",
              "--out", str(tmp_path / "e")])  # fmt: skip
    with pytest.raises(ValueError, match=r"a multi-vector \(late-interaction\) shard.*jfe index --multi"):
        main(["index", "--embeddings", str(shards), "--out", str(tmp_path / "i")])
    pool = sample / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    # a both model's single vectors cannot resume into a folder of its token vectors
    with pytest.raises(
        ValueError, match="multi vectors of dimension 16, this run writes single vectors of dimension 64"
    ):
        main(["encode", "--model", str(models["both"]), "--data", str(pool), "--out", str(shards),
              "--images-root", str(sample), "--num-shards", "2", "--num-workers", "0"])  # fmt: skip
