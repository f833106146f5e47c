"""The image-token budget: how many pixels (so visual tokens) one image may become.

A Qwen2-VL processor's default ``max_pixels`` (12.8 M) turns one photo into up to ~16k visual
tokens. jfe sets ``min_pixels`` / ``max_pixels`` on the processor itself, so the budget is saved
with the model (``preprocessor_config.json``) and sentence-transformers, vLLM or any client that
loads the folder resizes exactly as training did.
"""

from __future__ import annotations

from typing import Any


def set_pixel_budget(processor: Any, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
    """Bound the pixels of every image ``processor`` prepares (None leaves a bound as it is)."""
    images = processor.image_processor
    low = min_pixels if min_pixels else images.size["shortest_edge"]
    high = max_pixels if max_pixels else images.size["longest_edge"]
    if low > high:
        raise ValueError(f"min_pixels {low} is above max_pixels {high}")
    # transformers 5 reads the bounds from size; the attributes are what older configs carry
    images.size = {"shortest_edge": int(low), "longest_edge": int(high)}
    images.min_pixels, images.max_pixels = int(low), int(high)


def image_token_budget(processor: Any) -> int:
    """The most visual tokens one image can take under the processor's ``max_pixels``."""
    images = processor.image_processor
    per_token = (images.patch_size * images.merge_size) ** 2
    return images.size["longest_edge"] // per_token


def add_pixel_arguments(parser: Any) -> None:
    """``--min-pixels`` / ``--max-pixels`` for the commands that load a model."""
    parser.add_argument("--min-pixels", type=int, help="smallest image size in pixels (default: the model's)")
    parser.add_argument(
        "--max-pixels",
        type=int,
        help="largest image size in pixels: bounds its visual tokens (default: the model's)",
    )


def pixel_kwargs(args: Any) -> dict[str, int | None]:
    return {"min_pixels": args.min_pixels, "max_pixels": args.max_pixels}
