"""Late interaction: jfe's token vectors, MeanMaxSim and loss against sentence-transformers 6's
MultiVectorEncoder, its maxsim and its MNRL loss (the oracle), and the export layouts."""

import dataclasses
import functools
import os

import numpy as np
import pytest
import torch
from sentence_transformers import MultiVectorEncoder, SentenceTransformer
from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss
from sentence_transformers.multi_vector_encoder.scoring import colbert_scores
from sentence_transformers.util.similarity import maxsim

from jfe import Embedder
from jfe.embedder import MULTI_VECTOR_FOLDER
from jfe.multivector import SKIPPED_TOKENS, TokenVectors, mean_maxsim
from jfe.train.loss import contrastive_loss
from tests.conftest import make_image

TOL = 1e-5
INSTRUCTION = "Retrieve an image of the handwritten digit described."


def _with(embedder: Embedder, embedding: str, dim: int = 32) -> Embedder:
    torch.manual_seed(0)
    config = dataclasses.replace(embedder.config, embedding=embedding, multi_dim=dim, prompts={"query": INSTRUCTION})
    return Embedder(embedder.model, embedder.processor, config)


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory):
    """A multi and a both model, saved and loaded back."""
    base = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    root = tmp_path_factory.mktemp("multivector")
    return {kind: _with(base, kind).save(root / kind) for kind in ("multi", "both")}


def _docs():
    return [
        {"text": "a red seven, written quickly"},
        {"image": make_image(0)},
        {"image": make_image(1, (24, 16)), "text": "inverted"},
        {"text": "nine"},
    ]


@pytest.mark.parametrize("kind", ["multi", "both"])
def test_token_vectors_and_scores_equal_multi_vector_encoder(saved, kind):
    ours = Embedder.from_pretrained(saved[kind], dtype="float32", device="cpu")
    folder = saved[kind] / MULTI_VECTOR_FOLDER if kind == "both" else saved[kind]
    st = MultiVectorEncoder(str(folder), device="cpu")
    docs_a, docs_b = ours.encode_multi(_docs()), st.encode_document(_docs())
    queries = ["seven", "a digit that is upside down"]
    q_a = ours.encode_multi(queries, instruction=INSTRUCTION)
    q_b = st.encode_query([{"text": q} for q in queries], prompt_name="query")
    for a, b in zip(docs_a + q_a, list(docs_b) + list(q_b), strict=True):
        assert a.shape == tuple(b.shape) and a.shape[1] == 32
        assert np.abs(a - b.numpy()).max() <= TOL
    np.testing.assert_allclose(np.linalg.norm(docs_a[1], axis=1), 1.0, atol=1e-6)
    assert st.similarity_fn_name == "meanmaxsim"
    pad = TokenVectors.cat
    ours_scores = mean_maxsim(
        pad([TokenVectors(torch.tensor(q)[None], torch.ones(1, len(q), dtype=torch.bool)) for q in q_a]),
        pad([TokenVectors(torch.tensor(d)[None], torch.ones(1, len(d), dtype=torch.bool)) for d in docs_a]),
    )
    assert torch.allclose(ours_scores, st.similarity(q_b, docs_b), atol=TOL)
    assert ours_scores.abs().max() <= 1.0 + 1e-6  # MeanMaxSim stays in the cosine range


def test_skipped_tokens_are_the_template_markers(saved):
    ours = Embedder.from_pretrained(saved["multi"], dtype="float32", device="cpu")
    features = ours.features(["seven"], instruction=INSTRUCTION)
    ids = features["input_ids"][0].tolist()
    vocab = ours.tokenizer.get_vocab()
    markers = sum(ids.count(vocab[t]) for t in SKIPPED_TOKENS)
    assert markers == 3  # <|im_start|> twice, <|im_end|> once (no image: no vision markers)
    (vectors,) = ours.encode_multi(["seven"], instruction=INSTRUCTION)
    assert len(vectors) == len(ids) - markers
    (image_vectors,) = ours.encode_multi([{"image": make_image(0)}])
    image_ids = ours.features([{"image": make_image(0)}])["input_ids"][0].tolist()
    assert len(image_vectors) == len(image_ids) - 5  # and both vision markers


def test_both_exports_a_sentence_transformer_and_a_multi_vector_encoder(saved):
    folder = saved["both"]
    ours = Embedder.from_pretrained(folder, dtype="float32", device="cpu")
    single = SentenceTransformer(str(folder), device="cpu").encode(_docs())
    assert np.abs(ours.encode(_docs()) - single).max() <= TOL
    # the multi-vector view shares the weights' bytes on disk
    weights = "model.safetensors"
    assert os.stat(folder / weights).st_ino == os.stat(folder / MULTI_VECTOR_FOLDER / weights).st_ino


def test_single_and_multi_only_calls_fail_clearly(saved, tiny_model_dir):
    multi = Embedder.from_pretrained(saved["multi"], dtype="float32", device="cpu")
    with pytest.raises(ValueError, match="token vectors only"):
        multi.encode(["seven"])
    single = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    with pytest.raises(ValueError, match="one vector per input"):
        single.encode_multi(["seven"])


def test_mean_maxsim_equals_sentence_transformers_maxsim_with_masks():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 5, 8, generator=g), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(4, 7, 8, generator=g), dim=-1)
    q_mask = torch.rand(3, 5, generator=g) > 0.3
    d_mask = torch.rand(4, 7, generator=g) > 0.3
    q_mask[:, 0] = d_mask[:, 0] = True
    ours = mean_maxsim(TokenVectors(q, q_mask), TokenVectors(d, d_mask), chunk=3)
    theirs = maxsim(q, d, a_mask=q_mask, b_mask=d_mask, length_normalize=True)
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("negatives", [0, 1])
def test_loss_equals_sentence_transformers_mnrl(saved, negatives):
    """jfe's InfoNCE over MeanMaxSim equals MultiVectorMultipleNegativesRankingLoss at scale
    1/temperature with the MeanMaxSim scorer, with and without a hard negative per query."""
    st = MultiVectorEncoder(str(saved["multi"]), device="cpu")
    ours = Embedder.from_pretrained(saved["multi"], dtype="float32", device="cpu")
    queries = [{"text": "seven"}, {"image": make_image(3)}, {"text": "nine", "image": make_image(4)}]
    positives = [{"text": "a seven"}, {"image": make_image(5)}, {"text": "a nine"}]
    hard = [{"text": "a one"}, {"text": "a two"}, {"image": make_image(6)}][: 3 * negatives]
    temperature = 0.05

    def side(rows, task, prompt=None):
        return {**st.preprocess(rows, prompt=prompt), "task": task}

    columns = [side(queries, "query", INSTRUCTION), side(positives, "document")]
    if negatives:
        columns.append(side(hard, "document"))
    scorer = functools.partial(colbert_scores, length_normalize=True)
    theirs = MultiVectorMultipleNegativesRankingLoss(st, scale=1 / temperature, similarity_fct=scorer)(columns)

    q = ours.embed(**ours.features(queries, instruction=INSTRUCTION)).multi
    c = ours.embed(**ours.features(positives + hard)).multi
    mine = contrastive_loss(q, c, temperature)
    assert abs(mine.item() - theirs.item()) <= TOL
