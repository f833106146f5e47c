"""The image-token budget: how many pixels (so visual tokens) one image may become.

A Qwen2-VL processor's default ``max_pixels`` (12.8 M) turns one photo into up to ~16k visual
tokens. jfe sets ``min_pixels`` / ``max_pixels`` on the processor itself, so the budget is saved
with the model (``preprocessor_config.json``) and sentence-transformers, vLLM or any client that
loads the folder resizes exactly as training did.
"""

from __future__ import annotations

from typing import Any

from PIL import Image


def set_pixel_budget(processor: Any, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
    """Bound the pixels of every image ``processor`` prepares (None leaves a bound as it is)."""
    images = processor.image_processor
    low = min_pixels if min_pixels else images.size["shortest_edge"]
    high = max_pixels if max_pixels else images.size["longest_edge"]
    if low > high:
        raise ValueError(f"min_pixels {low} is above max_pixels {high}")
    # transformers 5 reads the bounds from size. Older processors also keep them as attributes; set
    # those only where they exist, as the processor passes any it finds to every call (a FutureWarning).
    images.size = {"shortest_edge": int(low), "longest_edge": int(high)}
    for name, value in (("min_pixels", low), ("max_pixels", high)):
        if getattr(images, name, None) is not None:
            setattr(images, name, int(value))


def image_token_budget(processor: Any) -> int:
    """The most visual tokens one image can take under the processor's ``max_pixels``."""
    images = processor.image_processor
    per_token = (images.patch_size * images.merge_size) ** 2
    return images.size["longest_edge"] // per_token


def image_tokens(processor: Any, height: int, width: int) -> int:
    """Placeholder tokens the processor expands an image of ``height`` x ``width`` into: its
    patches after the resize (the image processor's public count, the one vLLM relies on) over the
    patches merged into one token."""
    images = processor.image_processor
    count = getattr(images, "get_number_of_image_patches", None)
    if count is None:
        raise TypeError(
            f"{type(images).__name__} cannot count the patches of an image (no get_number_of_image_patches): "
            "jfe needs a Qwen2-VL-style image processor"
        )
    return int(count(height, width, {})) // images.merge_size**2


def placeholder_image(processor: Any) -> Image.Image:
    """The cheapest image ``processor`` accepts: one visual token's side (patch x merge pixels),
    which its ``min_pixels`` may still enlarge. Sized from the processor, not a family's default, so
    a tiny checkpoint's 4-pixel patches and Qwen3-VL's 16-pixel ones both get their own."""
    images = processor.image_processor
    side = images.patch_size * images.merge_size
    return Image.new("RGB", (side, side))
