import json
import shutil

import pytest

from jfe import Embedder, backbones


def test_every_registered_family_builds_a_tiny_checkpoint_of_its_own_type(tiny_model_dirs):
    assert set(backbones.names()) == {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}
    for arch, folder in tiny_model_dirs.items():
        family = backbones.backbone_for(folder)
        assert family.model_type == arch
        embedder = Embedder.from_pretrained(folder, dtype="float32", device="cpu")
        assert type(embedder.processor).__name__ == family.processor_class
        assert any(name.startswith(family.vision_prefix + ".") for name, _ in embedder.model.named_modules())


def test_a_checkpoint_of_an_unregistered_family_names_the_supported_ones(tiny_model_dir, tmp_path):
    other = tmp_path / "llava"
    shutil.copytree(tiny_model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    with pytest.raises(
        ValueError,
        match=r"unsupported model family 'llava' \(.*config\.json\): jfe supports qwen2_5_vl, qwen2_vl, qwen3_vl",
    ):
        Embedder.from_pretrained(other, dtype="float32", device="cpu")


def test_the_model_card_carries_the_family_tag(tmp_path, tiny_model_dirs):
    from huggingface_hub import ModelCard

    from jfe.card import write_model_card

    out = tmp_path / "exported"
    Embedder.from_pretrained(tiny_model_dirs["qwen3_vl"], dtype="float32", device="cpu").save(out)
    assert "qwen3-vl" in ModelCard.load(write_model_card(out)).data.tags


# Qwen2-VL trains in tests/train; every other family here
@pytest.mark.parametrize("arch", [n for n in backbones.names() if n != "qwen2_vl"])
def test_each_family_trains_with_lora_merges_and_exports(tiny_model_dirs, mixed_pairs, arch, tmp_path):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from jfe.export import export
    from jfe.train.config import TrainConfig
    from jfe.train.trainer import run

    config = TrainConfig(
        model=str(tiny_model_dirs[arch]), output_dir=str(tmp_path / "run"), data_format="pairs",
        pairs_files=[str(mixed_pairs)], per_device_batch_size=8, max_steps=2, save_steps=2, logging_steps=1,
        trainable="lora", lora_dropout=0.0, learning_rate=1e-2,
    )  # fmt: skip
    final = run(config)
    before = Embedder.from_pretrained(tiny_model_dirs[arch], dtype="float32", device="cpu").encode(["item 3"])
    out = export(final, tmp_path / "export")
    assert not (out / "adapter_config.json").exists()  # merged
    jfe_vecs = Embedder.from_pretrained(out, dtype="float32", device="cpu").encode(["item 3", "doc 7"])
    st_vecs = SentenceTransformer(str(out), device="cpu").encode([{"text": "item 3"}, {"text": "doc 7"}])
    assert np.abs(jfe_vecs - st_vecs).max() <= 1e-5
    assert np.abs(jfe_vecs[:1] - before).max() > 1e-4  # the adapters trained and were merged in
