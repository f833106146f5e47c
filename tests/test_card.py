import dataclasses

import pytest
from huggingface_hub import ModelCard

from jfe import Embedder
from jfe.artifacts import EvalReport
from jfe.card import write_model_card
from tests.conftest import make_image


def test_card_states_how_queries_were_instructed_and_shows_the_table(tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(out)
    report = EvalReport(
        metrics={"MSCOCO (task 0)": {"recall@5": 0.4321}, "average": {"recall@5": 0.4321}},
        split="test",
        pool="global",
        instructions={"policy": "uniir", "seed": 7, "uniir_format": True},
    )
    report.write(out, name=EvalReport.EXPORTED)
    card = ModelCard.load(write_model_card(out))
    assert "## Evaluation (test split, global pool, single vectors)" in card.text
    assert "policy `uniir` (seed 7); UniIR's text format on" in card.text
    assert "| MSCOCO (task 0) | 0.4321 |" in card.text


@pytest.mark.parametrize("kind", ["multi", "both"])
def test_late_interaction_card_code_runs_as_written(tiny_model_dir, tmp_path, monkeypatch, kind):
    """The card's MultiVectorEncoder snippet, run on the folder (the Hub id swapped for the path)."""
    base = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    config = dataclasses.replace(base.config, embedding=kind, multi_dim=16)
    out = Embedder(base.model, base.processor, config).save(tmp_path / "model")
    text = ModelCard.load(write_model_card(out)).text
    assert "## Late interaction (token vectors)" in text and "16-d" in text
    assert ("SentenceTransformer(" in text) == (kind == "both")  # a multi-only folder has no single vector
    snippet = text.split("## Late interaction")[1].split("```python\n")[1].split("```")[0]
    snippet = snippet.replace('snapshot_download("REPO_ID")', repr(str(out))).replace('"REPO_ID"', repr(str(out)))
    make_image(0).save(tmp_path / "three.png")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet, scope)
    assert tuple(scope["scores"].shape) == (1, 2)
    assert float(scope["scores"].abs().max()) <= 1.0 + 1e-6  # MeanMaxSim


def test_a_late_fusion_card_says_how_to_embed_image_text_inputs(tiny_model_dir, tmp_path):
    base = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    out = Embedder(base.model, base.processor, dataclasses.replace(base.config, fusion="late")).save(tmp_path / "m")
    card = ModelCard.load(write_model_card(out))
    assert card.data.tags[4] == "late-fusion" and "# One-tower late-fusion" in card.text
    assert "embedded as its image and its text apart" in card.text
