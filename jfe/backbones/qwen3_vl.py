"""Qwen3-VL (and the Qwen3-VL-Embedding models built on it): patch 16, merge 2; interleaved mrope,
learned position embeddings in the vision tower and deepstack features fed to early LLM layers."""

from jfe.backbones import Backbone, register
from jfe.backbones.tiny_text import HEADS, text_config, tiny


def _tiny(ids: dict[str, int], vocab: int, hidden: int, layers: int, vision_hidden: int) -> dict:
    text = text_config(ids, vocab, hidden, layers, head_dim=hidden // HEADS, rope={"mrope_interleaved": True})
    vision = {
        "hidden_size": vision_hidden,
        "intermediate_size": vision_hidden * 2,
        "out_hidden_size": hidden,
        "num_position_embeddings": 64,  # a square number: a grid of learned positions
        "deepstack_visual_indexes": [0],
    }
    return tiny(ids, text, vision)


QWEN3_VL = register(
    Backbone(
        model_type="qwen3_vl",
        card_tag="qwen3-vl",
        patch_size=16,
        merge_size=2,
        # Qwen/Qwen3-VL-*-Instruct preprocessor_config.json: size {shortest_edge: 65536 (256 * 256),
        # longest_edge: 16777216 (4096 * 4096)}, mean/std 0.5; video_preprocessor_config.json:
        # size {shortest_edge: 4096, longest_edge: 25165824}, the bound of all frames together
        image_pixels=(256 * 256, 4096 * 4096),
        video_pixels=(64 * 64, 32 * 32 * 24576),
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        tiny_config=_tiny,
        vision_lora=r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc[12])|(merger|deepstack_merger_list\.\d+)\.linear_fc[12]",
        saved_prefix="model.",
        processor_class="Qwen3VLProcessor",
        video_processor_class="Qwen3VLVideoProcessor",
    )
)
