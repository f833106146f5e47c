from huggingface_hub import ModelCard

from jfe import Embedder
from jfe.artifacts import EvalReport
from jfe.card import write_model_card


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
    assert "## Evaluation (test split, global pool)" in card.text
    assert "policy `uniir` (seed 7); UniIR's text format on" in card.text
    assert "| MSCOCO (task 0) | 0.4321 |" in card.text
