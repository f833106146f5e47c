import json

import numpy as np
import pytest
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer

from jfe import Embedder
from jfe.cli import main
from jfe.train.config import TrainConfig
from jfe.train.trainer import run

PROBE = [{"text": "item 3"}, {"text": "doc 7"}, {"image": None, "text": "item 12"}]


def _config(model, out, pairs, **kw):
    values = dict(model=str(model), output_dir=str(out), data_format="pairs", pairs_files=[str(pairs)],
                  per_device_batch_size=8, learning_rate=2e-3, max_steps=4, logging_steps=1, save_steps=4)  # fmt: skip
    values.update(kw)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def two_stage(tiny_model_dir, mixed_pairs, tmp_path_factory):
    root = tmp_path_factory.mktemp("two-stage")
    stage1 = run(_config(tiny_model_dir, root / "s1", mixed_pairs, trainable="full"))
    stage2 = run(_config(stage1, root / "s2", mixed_pairs, stage="instruct", trainable="lora", num_negatives=1,
                         lora_dropout=0.0))  # fmt: skip
    evaluation = {
        "split": "test",
        "pool": "local",
        "metrics": {"digits_it2t": {"recall@1": 0.9123, "recall@5": 0.99}, "average": {"recall@1": 0.9123}},
        "probe": {
            "ablate": "image",
            "tasks": {"digits_it2t": {"recall@1": 0.9123, "recall@1 ablated": 0.2, "change": -0.7123}},
        },
    }
    eval_file = root / "eval.json"
    eval_file.write_text(json.dumps(evaluation))
    return root, stage1, stage2, eval_file


def test_export_loads_in_both_libraries_identically(two_stage, tmp_path):
    _, _, stage2, eval_file = two_stage
    out = tmp_path / "export"
    assert main(["export", "--model", str(stage2), "--out", str(out), "--eval", str(eval_file)]) == 0
    texts = [p["text"] for p in PROBE]
    jfe_vecs = Embedder.from_pretrained(out, dtype="float32", device="cpu").encode(texts)
    st_vecs = SentenceTransformer(str(out), device="cpu").encode([{"text": t} for t in texts])
    assert np.abs(jfe_vecs - st_vecs).max() <= 1e-5
    assert all(f.name != "adapter_config.json" for f in out.iterdir())  # merged, no adapter left


def test_export_from_a_checkpoint_merges_the_adapter(two_stage, tmp_path):
    _, _, stage2, _ = two_stage
    checkpoint = stage2.parent / "checkpoint-4"
    out = tmp_path / "from-checkpoint"
    assert main(["export", "--model", str(checkpoint), "--out", str(out)]) == 0
    a = Embedder.from_pretrained(out, dtype="float32", device="cpu").encode(["item 3", "doc 7"])
    b = Embedder.from_pretrained(stage2, dtype="float32", device="cpu").encode(["item 3", "doc 7"])
    assert np.abs(a - b).max() <= 1e-5  # the last checkpoint is the final model


def test_model_card_is_valid_hub_metadata_with_the_run(two_stage, tmp_path):
    _, stage1, stage2, eval_file = two_stage
    out = tmp_path / "export"
    main(["export", "--model", str(stage2), "--out", str(out), "--eval", str(eval_file), "--license", "mit"])
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "sentence-transformers"
    assert card.data.pipeline_tag == "feature-extraction"
    assert card.data.license == "mit"
    assert "jfe" in card.data.tags
    text = card.text
    assert "### Stage 1: post-training adaptation" in text and "### Stage 2: instruction tuning" in text
    assert "| digits_it2t | 0.9123 |" in text  # the eval table
    assert "-0.7123" in text  # the modality probe
    assert "SentenceTransformer(" in text and "Embedder.from_pretrained(" in text
    assert f"Started from: `{stage1}`" in text


def test_export_of_a_checkpoint_needs_the_run_config(two_stage, tmp_path):
    _, _, stage2, _ = two_stage
    lonely = tmp_path / "checkpoint-4"
    import shutil

    shutil.copytree(stage2.parent / "checkpoint-4", lonely)
    with pytest.raises(FileNotFoundError, match=r"jfe_train_config\.json"):
        main(["export", "--model", str(lonely), "--out", str(tmp_path / "x")])
