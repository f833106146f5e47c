from pathlib import Path

import pytest

from jfe.train.config import load_config

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_there_are_recipes_for_each_stage_and_size():
    names = {p.stem for p in RECIPES}
    for size in ("2b", "7b"):
        assert {f"qwen2vl-{size}-stage1", f"qwen2vl-{size}-stage2-lora", f"qwen2vl-{size}-stage2-qlora"} <= names
    assert {"tiny-stage1", "tiny-stage2", "tiny-stage2-qlora"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid_and_states_its_batch(recipe):
    config = load_config(str(recipe))
    config.validate()
    assert config.stage == ("adapt" if "stage1" in recipe.stem else "instruct")
    assert 0.01 <= config.temperature <= 0.1
    assert config.max_steps > 0 and config.learning_rate > 0
    if recipe.stem.startswith("qwen2vl"):
        assert "Effective batch" in recipe.read_text()
        assert "Trains:" in recipe.read_text()
    if "qlora" in recipe.stem:
        assert config.quantization == "nf4" and config.trainable == "lora"
    if "stage2" in recipe.stem:
        assert config.num_negatives > 0 and config.use_instructions
        assert config.model.endswith("stage1/final")
