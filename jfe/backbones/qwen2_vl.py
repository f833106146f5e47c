"""Qwen2-VL: patch 14, merge 2; the vision tower's width is ``embed_dim``."""

from jfe.backbones import Backbone, register
from jfe.backbones.tiny_text import text_config, tiny


def _tiny(ids: dict[str, int], vocab: int, hidden: int, layers: int, vision_hidden: int) -> dict:
    vision = {"embed_dim": vision_hidden, "mlp_ratio": 2, "hidden_size": hidden}  # hidden_size: the merger's output
    return tiny(ids, text_config(ids, vocab, hidden, layers), vision)


QWEN2_VL = register(
    Backbone(
        model_type="qwen2_vl",
        card_tag="qwen2-vl",
        patch_size=14,
        merge_size=2,
        # Qwen/Qwen2-VL-*-Instruct preprocessor_config.json: min_pixels 3136 (56 * 56), max_pixels
        # 12845056 (28 * 28 * 16384), CLIP mean/std; no video file, so videos get the same bounds
        image_pixels=(56 * 56, 28 * 28 * 16384),
        video_pixels=(56 * 56, 28 * 28 * 16384),
        tiny_config=_tiny,
        vision_lora=r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])|merger\.mlp\.[02]",
        processor_class="Qwen2VLProcessor",
        video_processor_class="Qwen2VLVideoProcessor",
    )
)
