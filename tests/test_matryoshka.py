"""Matryoshka embeddings: sentence-transformers' MatryoshkaLoss and ``truncate_dim`` are the oracles."""

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer, losses

from jfe import Embedder
from jfe.matryoshka import truncate
from jfe.multivector import Embedded
from jfe.train.config import TrainConfig
from jfe.train.model import ContrastiveModel

TEMPERATURE = 0.05
ANCHORS = ["a handwritten seven", "a red three", "nine", "an inverted five"]
POSITIVES = ["digit 7", "digit 3", "digit 9", "digit 5"]
NEGATIVES = ["digit 1", "digit 8", "digit 4", "digit 2"]


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mrl") / "model"
    Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(folder)
    return folder


@pytest.mark.parametrize("dims", [[32], [48, 16]])
def test_the_loss_is_sentence_transformers_matryoshka_loss(saved, dims):
    st = SentenceTransformer(str(saved), device="cpu")
    features = [st.preprocess(texts) for texts in (ANCHORS, POSITIVES, NEGATIVES)]
    mnrl = losses.MultipleNegativesRankingLoss(st, scale=1 / TEMPERATURE)
    # sentence-transformers trains only the dims it is given; jfe always trains the full width too
    expected = losses.MatryoshkaLoss(st, mnrl, [64, *dims])(features, None)

    embedder = Embedder.from_pretrained(saved, dtype="float32", device="cpu")
    config = TrainConfig(model=str(saved), output_dir="unused", temperature=TEMPERATURE, matryoshka_dims=dims)
    model = ContrastiveModel(embedder, config)
    q = Embedded(torch.from_numpy(embedder.encode(ANCHORS)))
    c = Embedded(torch.from_numpy(embedder.encode(POSITIVES + NEGATIVES)))
    got = model.loss(q, c, model.temperature(), {"positive_ids": None, "candidate_ids": None})
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    plain = ContrastiveModel(embedder, TrainConfig(model=str(saved), output_dir="unused", temperature=TEMPERATURE))
    assert float(plain.loss(q, c, plain.temperature(), {"positive_ids": None, "candidate_ids": None})) < float(got)


def test_bad_dims_are_refused(saved):
    embedder = Embedder.from_pretrained(saved, dtype="float32", device="cpu")
    with pytest.raises(ValueError, match=r"matryoshka_dims \[64, 0\] are not between 1 and the embedding width 64"):
        ContrastiveModel(embedder, TrainConfig(model="m", output_dir="o", matryoshka_dims=[32, 64, 0]))
    with pytest.raises(ValueError, match="matryoshka_weights has 1 entries for 2 matryoshka_dims"):
        ContrastiveModel(
            embedder, TrainConfig(model="m", output_dir="o", matryoshka_dims=[32, 16], matryoshka_weights=[1.0])
        )


def test_truncated_embeddings_equal_sentence_transformers_truncate_dim(saved, images):
    inputs = [{"text": "a handwritten seven"}, {"image": images[0]}, {"image": images[1], "text": "inverted"}]
    ours = Embedder.from_pretrained(saved, dtype="float32", device="cpu").encode(inputs, truncate_dim=16)
    st = SentenceTransformer(str(saved), device="cpu", truncate_dim=16)
    theirs = st.encode(inputs, normalize_embeddings=True)
    assert ours.shape == theirs.shape == (3, 16)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="dimension 65 is not between 1 and the embedding's 64"):
        truncate(np.ones((2, 64), np.float32), 65)


def test_encode_search_and_eval_at_a_dimension(saved, mbeir_root, tmp_path, capsys):
    from jfe.cli import main
    from jfe.retrieval.shards import read_embeddings

    pool = mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    common = ["--model", str(saved), "--data", str(pool), "--images-root", str(mbeir_root), "--model-dtype", "float32"]
    assert main(["encode", *common, "--out", str(tmp_path / "e16"), "--dim", "16", "--dtype", "float32"]) == 0
    ids, vecs = read_embeddings([tmp_path / "e16"])
    assert vecs.shape == (len(ids), 16)
    assert main(["encode", *common, "--out", str(tmp_path / "e64"), "--dtype", "float32"]) == 0
    ids64, vecs64 = read_embeddings([tmp_path / "e64"])
    assert ids64 == ids and np.abs(vecs - truncate(vecs64, 16)).max() <= 1e-6
    # a rerun at another width must not mix into the complete shards
    with pytest.raises(
        ValueError, match="single vectors of dimension 16, this run writes single vectors of dimension 32"
    ):
        main(["encode", *common, "--out", str(tmp_path / "e16"), "--dim", "32"])
    assert main(["index", "--embeddings", str(tmp_path / "e16"), "--out", str(tmp_path / "i16")]) == 0
    queries = mbeir_root / "query/test/mbeir_toy_t2i_test.jsonl"
    search = ["search", "--model", str(saved), "--index", str(tmp_path / "i16"), "--queries", str(queries)]
    search += ["--images-root", str(mbeir_root), "--out", str(tmp_path / "run.trec"), "--k", "3"]
    with pytest.raises(ValueError, match=r"holds 16-d vectors, the queries are 64-d .*--dim 16"):
        main(search)
    assert main([*search, "--dim", "16"]) == 0
    assert len((tmp_path / "run.trec").read_text().splitlines()) == 2 * 3  # 2 queries, top 3 of the union pool

    out = tmp_path / "eval"
    args = ["eval", "--model", str(saved), "--mbeir-root", str(mbeir_root), "--out", str(out), "--dims", "32", "16"]
    assert main(args) == 0
    report = json.loads((out / "eval.json").read_text())
    assert set(report["dims"]) == {"32", "16"}
    assert set(report["dims"]["16"]) == set(report["metrics"])
    assert "Matryoshka: recall@1 by dimension" in capsys.readouterr().out


def test_a_matryoshka_run_saves_its_dims_and_the_card_names_them(tiny_model_dir, mixed_pairs, tmp_path):
    from jfe.card import render_model_card
    from jfe.embedder import EmbedderConfig
    from jfe.export import export
    from jfe.train.trainer import run

    config = TrainConfig(
        model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), data_format="pairs",
        pairs_files=[str(mixed_pairs)], per_device_batch_size=8, max_steps=2, save_steps=2, logging_steps=1,
        trainable="lora", lora_dropout=0.0, matryoshka_dims=[16, 32], matryoshka_weights=[0.5, 1.0],
    )  # fmt: skip
    out = export(run(config), tmp_path / "export")
    assert EmbedderConfig.load(out).matryoshka_dims == [32, 16]
    assert "Matryoshka dimensions 16, 32 (weights 0.5, 1.0)" in render_model_card(out)
