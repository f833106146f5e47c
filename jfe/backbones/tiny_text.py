"""The language-model half of every family's tiny config (Qwen2 / Qwen3 decoders with mrope)."""

from __future__ import annotations

from typing import Any

HEADS = 4


def special_ids(ids: dict[str, int]) -> dict[str, int]:
    # set in text_config too: transformers does not copy the top-level ids down
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def text_config(ids: dict[str, int], vocab: int, hidden: int, layers: int, **extra: Any) -> dict[str, Any]:
    head_dim = hidden // HEADS
    # mrope splits head_dim/2 rotary frequencies across (temporal, height, width)
    quarter = head_dim // 2 // 4
    rope = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter],
    }
    rope.update(extra.pop("rope", {}))
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": rope,
        **special_ids(ids),
        **extra,
    }


def vision_tokens(ids: dict[str, int]) -> dict[str, int]:
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


# the tiny vision tower's patching; small so a 16-pixel image costs a handful of tokens
TINY_VISION = {
    "depth": 2,
    "num_heads": 4,
    "patch_size": 4,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "in_channels": 3,
}


def tiny(ids: dict[str, int], text: dict[str, Any], vision: dict[str, Any]) -> dict[str, Any]:
    return {
        "text_config": text,
        "vision_config": {**TINY_VISION, **vision},
        **vision_tokens(ids),
        "tie_word_embeddings": False,
        **special_ids(ids),
    }
