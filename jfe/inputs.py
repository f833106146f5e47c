"""Turn what users pass to ``encode`` into ``EmbedInput`` objects, with errors that name the input."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from PIL import Image, UnidentifiedImageError

from jfe.formatting import EmbedInput


class BadInputError(ValueError):
    """An input that cannot be embedded; the message names it."""


def load_image(path: str | os.PathLike, what: str = "image") -> Image.Image:
    """Open an image file as RGB, failing with the path in the message."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadInputError(f"{what}: image file not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise BadInputError(f"{what}: not a readable image: {path} ({err})") from err


def to_embed_input(raw: Any, index: int = 0) -> EmbedInput:
    """Accept a str (text), a PIL image, or a mapping ``{"text": ..., "image": path|PIL.Image}``."""
    what = f"input {index}"
    if isinstance(raw, EmbedInput):
        text, image = raw.text, raw.image
    elif isinstance(raw, str):
        text, image = raw, None
    elif isinstance(raw, Image.Image):
        text, image = None, raw
    elif isinstance(raw, Mapping):
        unknown = set(raw) - {"text", "image"}
        if unknown:
            raise BadInputError(f"{what}: unknown keys {sorted(unknown)}; expected 'text' and/or 'image'")
        text, image = raw.get("text"), raw.get("image")
    else:
        raise BadInputError(f"{what}: expected str, PIL.Image or dict, got {type(raw).__name__}")
    if text is not None and not isinstance(text, str):
        raise BadInputError(f"{what}: 'text' must be a string, got {type(text).__name__}")
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image, what)
    elif image is not None and not isinstance(image, Image.Image):
        raise BadInputError(f"{what}: 'image' must be a path or PIL.Image, got {type(image).__name__}")
    elif image is not None and image.mode != "RGB":
        image = image.convert("RGB")
    if not text and image is None:
        raise BadInputError(f"{what}: has neither text nor image")
    return EmbedInput(text=text or None, image=image)
