"""The vision-language families jfe supports, one small module each, and what differs between them.

Everything else in jfe runs one code path for every family; code that needs a family's specifics
asks :func:`backbone_for` instead of branching on a model name. Adding a family is one module here
(registered by the import at the bottom) plus the parametrised tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (special-token ids and vocabulary size of the tiny tokenizer, hidden, layers, vision hidden) -> config kwargs
TinyConfig = Callable[[dict[str, int], int, int, int, int], dict[str, Any]]

# Every family's decoder layers: attention and MLP projections, all nn.Linear.
LANGUAGE_LORA = r"language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"

# ``lora_target`` presets: which halves of the model take adapters. Anything else is a regex.
LORA_PRESETS = ("language", "language+vision")

# OpenAI CLIP's pixel normalisation: the image_mean / image_std of the Qwen2-VL and Qwen2.5-VL
# checkpoints' preprocessor_config.json (and transformers' Qwen2VLImageProcessor defaults).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Backbone:
    model_type: str  # transformers' config.model_type
    card_tag: str  # the Hub tag of the family
    patch_size: int  # of the released checkpoints' vision tower
    merge_size: int  # patches merged per visual token, per side
    # The released checkpoints' processors: (min_pixels, max_pixels), i.e. the processor's
    # size {shortest_edge, longest_edge}, of one image (preprocessor_config.json) and of one video
    # (video_preprocessor_config.json where the checkpoints ship one, else the image file).
    image_pixels: tuple[int, int]
    video_pixels: tuple[int, int]
    tiny_config: TinyConfig
    processor_class: str  # transformers processor class the family's checkpoints ship
    video_processor_class: str
    # The vision tower's nn.Linear modules that take adapters, relative to ``vision_prefix``: its
    # blocks and mergers. Never the patch embedding: a Conv3d, which peft cannot wrap under ZeRO-3
    # (it sees the partitioned 1-d placeholder) and which a frozen tower's features rest on.
    vision_lora: str
    vision_prefix: str = "visual"  # the vision tower's module path inside the base model
    # kept in full precision under QLoRA: the small vision tower (frozen) and the unused LM head
    quantization_skip: tuple[str, ...] = ("visual", "lm_head")
    # the vision tower's attention window in pixels, for windowed towers (Qwen2.5-VL's window_size)
    window_size: int | None = None
    # Prefix of the weight names in a saved embedder: the layout of the family's released
    # checkpoints. transformers loads a Qwen3-VL base model from either layout; vLLM's Qwen3-VL loader
    # maps only the released one ("model.language_model.*", "model.visual.*").
    saved_prefix: str = ""
    # the released processors' pixel normalisation (per RGB channel)
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    def lora_target(self, target: str) -> str:
        """The module-name regex (peft full-matches it) of a ``lora_target`` preset; any other
        string is taken as a regex already."""
        if target not in LORA_PRESETS:
            return target
        parts = [LANGUAGE_LORA]
        if target == "language+vision":
            parts.append(rf"{self.vision_prefix}\.({self.vision_lora})")
        return rf"(.*\.)?({'|'.join(parts)})"


_REGISTRY: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    if backbone.model_type in _REGISTRY:
        raise ValueError(f"backbone {backbone.model_type!r} is registered twice")
    _REGISTRY[backbone.model_type] = backbone
    return backbone


def names() -> tuple[str, ...]:
    """The registered families' model types, sorted."""
    return tuple(sorted(_REGISTRY))


def get(model_type: str, where: str | None = None) -> Backbone:
    """The registered family ``model_type``; anything else fails naming the registered ones."""
    if model_type not in _REGISTRY:
        source = f" ({where})" if where else ""
        raise ValueError(f"unsupported model family {model_type!r}{source}: jfe supports {', '.join(names())}")
    return _REGISTRY[model_type]


def not_a_model(folder: Path) -> str:
    """Why ``folder`` (no config.json) is no model, and which folder to use instead."""
    if (folder / "final" / "config.json").is_file():
        return f"{folder} is a training output folder, not a model: use {folder / 'final'} (its merged model)"
    from jfe.train.checkpoints import latest_complete

    newest, incomplete = latest_complete(folder)
    if newest is None and incomplete:
        return (
            f"{folder} is a training output folder with no complete checkpoint ({incomplete[-1].name} was not "
            "finished): resume the run (resume=true) or train it to its final/"
        )
    if newest is not None:
        return (
            f"{folder} is a training output folder without a final model yet: export a checkpoint first, "
            f"e.g. jfe export --model {newest} --out {folder}-export"
        )
    return (
        f"{folder} is not a model folder: no config.json (expected a jfe export, a training run's final/ "
        "or a Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint)"
    )


def backbone_for(model_or_config: Any) -> Backbone:
    """The family of a model, a config, or a checkpoint folder."""
    if isinstance(model_or_config, (str, os.PathLike)):
        path = Path(model_or_config) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(not_a_model(Path(model_or_config)))
        return get(json.loads(path.read_text()).get("model_type", "?"), str(path))
    config = getattr(model_or_config, "config", model_or_config)
    return get(getattr(config, "model_type", "?"))


from jfe.backbones import qwen2_5_vl, qwen2_vl, qwen3_vl  # noqa: E402  (registers the families)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "LANGUAGE_LORA",
    "LORA_PRESETS",
    "Backbone",
    "backbone_for",
    "get",
    "names",
    "qwen2_5_vl",
    "qwen2_vl",
    "qwen3_vl",
    "register",
]
