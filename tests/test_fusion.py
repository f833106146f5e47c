"""Late fusion against its definition: an image+text input is its image and its text embedded
apart, the two unit vectors summed and normalised (UniIR's score fusion over normalised vectors)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from jfe import Embedder
from jfe.data.collator import ContrastiveCollator
from jfe.formatting import EmbedInput
from jfe.fusion import split_parts
from jfe.train.config import TrainConfig
from tests.conftest import make_image

INSTRUCTION = "Retrieve an image of the digit described."


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    early = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    late = Embedder(early.model, early.processor, dataclasses.replace(early.config, fusion="late"))
    return early, late


def _inputs():
    return [
        {"text": "a red seven"},
        {"image": make_image(0)},
        {"image": make_image(1), "text": "inverted"},
        {"image": make_image(2, (24, 16)), "text": "a blue three, written quickly"},
    ]


def test_late_fusion_is_the_normalised_sum_of_the_two_embeddings(models):
    early, late = models
    got = late.encode(_inputs(), instruction=INSTRUCTION, batch_size=2)
    for row, x in zip(got, _inputs(), strict=True):
        if "image" in x and "text" in x:
            parts = early.encode([{"image": x["image"]}, {"text": x["text"]}], instruction=INSTRUCTION)
            expected = parts.sum(0) / np.linalg.norm(parts.sum(0))
            assert np.abs(row - expected).max() <= 1e-5
            fused = early.encode([x], instruction=INSTRUCTION)[0]
            assert np.abs(row - fused).max() > 1e-3  # early fusion is another embedding
        else:
            assert np.abs(row - early.encode([x], instruction=INSTRUCTION)[0]).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_a_late_fusion_embedding_does_not_depend_on_its_batch(models):
    _, late = models
    inputs = _inputs()
    alone = np.concatenate([late.encode([x]) for x in inputs])
    assert np.abs(late.encode(inputs, batch_size=1) - alone).max() <= 1e-5
    assert np.abs(late.encode(inputs, batch_size=len(inputs)) - alone).max() <= 1e-5


def _fused_pairs(folder):
    """Pair data whose queries and positives mix texts, images and image+text inputs."""
    rows = []
    for k in range(6):
        make_image(2000 + k).save(folder / f"q{k}.png")
        make_image(3000 + k).save(folder / f"p{k}.png")
        query = {"text": f"item {k}", "image": f"q{k}.png"} if k % 2 == 0 else {"text": f"item {k}"}
        pos = {"image": f"p{k}.png", "text": f"doc {k}"} if k % 3 == 0 else {"image": f"p{k}.png"}
        rows.append({"query": query, "pos": [pos], "instruction": INSTRUCTION})
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "pairs.jsonl"


@pytest.mark.parametrize("length_chunks", [1, 2])
def test_the_collator_splits_image_text_rows_and_the_model_combines_them(models, tmp_path, length_chunks):
    from jfe.data.dataset import ContrastiveDataset
    from jfe.data.pairs import load_pairs
    from jfe.train.loss import contrastive_loss
    from jfe.train.model import ContrastiveModel

    _, late = models
    queries, pool = load_pairs(_fused_pairs(tmp_path))
    examples = [ContrastiveDataset(queries, pool)[(i, 0)] for i in range(6)]
    batch = ContrastiveCollator(late.processor, fusion="late", length_chunks=length_chunks)(examples)
    assert sum(batch["query_rows"]) == 6 + 3  # one more row per image+text query
    assert sum(batch["candidate_rows"]) == 6 + 2
    model = ContrastiveModel(late, TrainConfig(model="m", output_dir="o", fusion="late"))
    with torch.no_grad():
        got = model(**batch)["loss"]
    q = torch.from_numpy(late.encode([e["query"] for e in examples], [e["instruction"] for e in examples]))
    c = torch.from_numpy(late.encode([e["positive"] for e in examples]))
    ids = {"positive_ids": batch["positive_ids"], "candidate_ids": batch["candidate_ids"]}
    expected = contrastive_loss(q, c, model.temperature(), **ids)
    assert abs(got.item() - expected.item()) <= 1e-5


def test_split_parts_keeps_single_modality_items_and_the_instruction():
    image = make_image(0)
    parts, instructions, owner = split_parts(
        [EmbedInput(text="a"), EmbedInput(image=image, text="b"), EmbedInput(image=image)], ["q", "r", None]
    )
    assert [(p.text, p.image is not None) for p in parts] == [("a", False), (None, True), ("b", False), (None, True)]
    assert instructions == ["q", "r", "r", None] and owner == [0, 1, 1, 2]


def test_late_fusion_is_saved_and_refused_with_token_vectors(models, tmp_path):
    _, late = models
    loaded = Embedder.from_pretrained(late.save(tmp_path / "late"), dtype="float32", device="cpu")
    assert loaded.config.fusion == "late"
    assert np.abs(loaded.encode(_inputs()) - late.encode(_inputs())).max() <= 1e-6
    with pytest.raises(ValueError, match="fusion=late combines single vectors"):
        TrainConfig(
            model="m", output_dir="o", data_format="pairs", pairs_files=["p"], fusion="late", embedding="multi"
        ).validate()
    with pytest.raises(ValueError, match="fusion='sideways' is not one of early, late"):
        Embedder(late.model, late.processor, dataclasses.replace(late.config, fusion="sideways"))


def test_gradcache_gives_the_full_batch_gradients_under_late_fusion(tiny_model_dir, tmp_path):
    from jfe.data.dataset import ContrastiveDataset, ExampleOptions
    from jfe.data.pairs import load_pairs
    from jfe.train.model import ContrastiveModel, load_embedder
    from tests.train.test_gradcache import _grads

    config = TrainConfig(model=str(tiny_model_dir), output_dir="unused", trainable="full", fusion="late")
    torch.manual_seed(0)
    model = ContrastiveModel(load_embedder(config, str(tiny_model_dir)), config).train()
    assert model.embedder.config.fusion == "late"
    queries, pool = load_pairs(_fused_pairs(tmp_path))
    dataset = ContrastiveDataset(queries, pool, options=ExampleOptions(num_negatives=1))
    examples = [dataset[(i, 0)] for i in range(6)]
    processor = model.embedder.processor
    full_loss, full = _grads(model, ContrastiveCollator(processor, fusion="late")(examples))
    model.chunk_size = 3
    cached_loss, cached = _grads(model, ContrastiveCollator(processor, fusion="late", chunk_size=3)(examples))
    assert abs(full_loss - cached_loss) < 1e-5
    assert max(float((full[n] - cached[n]).abs().max()) for n in full) <= 1e-5
