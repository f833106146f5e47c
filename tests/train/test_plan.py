"""``jfe train --plan``: the counts come from the real data and the real trainable set."""

import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig

from jfe.train.config import load_config
from jfe.train.model import load_embedder, parameter_counts
from jfe.train.plan import activation_bytes, plan

REPO = Path(__file__).resolve().parents[2]


def _config(tiny_model_dir, tmp_path, *overrides):
    recipe = REPO / "recipes" / "tiny-stage2.yaml"
    return load_config(str(recipe), [f"model={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", *overrides])


@pytest.mark.parametrize(
    "overrides", [["lora_target=language"], ["lora_target=language+vision"], ["trainable=full", "train_vision=true"]]
)
def test_parameters_are_those_the_run_trains(tiny_model_dir, tmp_path, overrides):
    config = _config(tiny_model_dir, tmp_path, "per_device_batch_size=4", *overrides)
    planned = plan(config, batches=2)
    assert (planned.trainable_parameters, planned.total_parameters) == parameter_counts(
        load_embedder(config, str(tiny_model_dir))
    )


def test_tokens_of_the_sampled_batches(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, "per_device_batch_size=8", "num_negatives=2")
    planned = plan(config, batches=4)
    assert planned.batches == 4
    assert planned.query.rows in (8, 9)  # a side without images gets a dummy-image row
    assert planned.candidates.rows in (8 * 3, 8 * 3 + 1)
    for side in (planned.query, planned.candidates):
        assert 0 < side.real_tokens <= side.padded_tokens <= side.max_padded_tokens
        # every placeholder token stands for merge_size^2 = 4 patches of the tower
        assert side.vision_patches == 4 * side.visual_tokens
    assert planned.activation_gib["peak"] == pytest.approx(
        planned.activation_gib["queries"] + planned.activation_gib["candidates"]
    )
    assert not (tmp_path / "run").exists()  # a plan writes nothing


def test_activation_estimate_scales_as_stated(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    one = activation_bytes(config, 1000, 400, "float32", checkpointing=False)
    assert activation_bytes(config, 2000, 800, "float32", checkpointing=False) == 2 * one
    assert activation_bytes(config, 1000, 400, "bfloat16", checkpointing=False) == one // 2
    assert activation_bytes(config, 1000, 400, "float32", checkpointing=False, concurrent_rows=0.25) == one // 4
    # the tiny model has 2 layers: checkpointing keeps their inputs plus one layer in flight
    assert activation_bytes(config, 1000, 400, "float32", checkpointing=True) < one


def test_plan_on_the_command_line(tiny_model_dir, tmp_path):
    command = [
        sys.executable, "-m", "jfe.train", "--config", str(REPO / "recipes" / "tiny-stage2.yaml"), "--plan",
        "--plan-batches", "2", f"model={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", "per_device_batch_size=4",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    lines = result.stdout.splitlines()
    assert lines[1].startswith("trainable parameters: ") and "mean over 2 sampled batches" in lines[2]
    assert lines[3].lstrip().startswith("queries") and lines[4].lstrip().startswith("candidates")
    assert lines[5].startswith("activation memory estimate per rank: queries ")
    assert not (tmp_path / "run").exists()
