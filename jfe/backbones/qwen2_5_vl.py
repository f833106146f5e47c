"""Qwen2.5-VL: patch 14, merge 2; a windowed-attention vision tower projected to the LLM's width."""

from jfe.backbones import Backbone, register
from jfe.backbones.tiny_text import text_config, tiny


def _tiny(ids: dict[str, int], vocab: int, hidden: int, layers: int, vision_hidden: int) -> dict:
    vision = {
        "hidden_size": vision_hidden,
        "intermediate_size": vision_hidden * 2,
        "out_hidden_size": hidden,
        "window_size": 16,
        "fullatt_block_indexes": [1],
    }
    return tiny(ids, text_config(ids, vocab, hidden, layers), vision)


QWEN2_5_VL = register(
    Backbone(
        model_type="qwen2_5_vl",
        card_tag="qwen2.5-vl",
        patch_size=14,
        merge_size=2,
        # Qwen/Qwen2.5-VL-*-Instruct preprocessor_config.json: as Qwen2-VL's, min_pixels 3136
        # (56 * 56), max_pixels 12845056 (28 * 28 * 16384), CLIP mean/std, videos the same bounds
        image_pixels=(56 * 56, 28 * 28 * 16384),
        video_pixels=(56 * 56, 28 * 28 * 16384),
        window_size=112,  # config.json vision_config: 4 x 4 visual tokens of 28 x 28 pixels
        tiny_config=_tiny,
        vision_lora=r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj)|merger\.mlp\.[02]",
        processor_class="Qwen2_5_VLProcessor",
        video_processor_class="Qwen2VLVideoProcessor",
    )
)
