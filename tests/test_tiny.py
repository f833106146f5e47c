import json
import subprocess
import sys

import pytest
from transformers import AutoConfig, AutoProcessor

from jfe.tiny import build_tiny_model


def test_tool_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "m"
    subprocess.run(
        [
            sys.executable,
            "tools/make_tiny_model.py",
            str(out),
            "--arch",
            "qwen2_5_vl",
            "--seed",
            "3",
            "--vision-hidden",
            "96",
        ],
        check=True,
        capture_output=True,
    )
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (out / name).is_file(), name
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "qwen2_5_vl"
    assert (config.vision_config.hidden_size, config.vision_config.out_hidden_size) == (96, 64)
    # mrope sections must cover head_dim / 2 rotary frequencies
    head_dim = config.text_config.hidden_size // config.text_config.num_attention_heads
    assert sum(config.text_config.rope_parameters["mrope_section"]) == head_dim // 2
    assert config.text_config.pad_token_id == config.pad_token_id
    processor = AutoProcessor.from_pretrained(out)
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == config.image_token_id
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]


def test_seed_controls_the_weights(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=1).joinpath("model.safetensors").read_bytes()
    b = build_tiny_model(tmp_path / "b", seed=1).joinpath("model.safetensors").read_bytes()
    c = build_tiny_model(tmp_path / "c", seed=2).joinpath("model.safetensors").read_bytes()
    assert a == b
    assert a != c


def test_unknown_arch_is_refused(tmp_path):
    with pytest.raises(
        ValueError, match="unsupported model family 'llava': jfe supports qwen2_5_vl, qwen2_vl, qwen3_vl"
    ):
        build_tiny_model(tmp_path / "x", arch="llava")
