"""MiMIC's robustness options against visual modality collapse (a model that ignores the image).

- caption dropout: drop the text of an image+text input with probability ``p``, so the model must
  read the image;
- single-modality mix-in: with probability ``p`` replace an image+text input by one of its
  single-modality views (image-only or text-only, equally likely).

Both are off by default and leave single-modality inputs untouched.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class MimicOptions:
    """Set from the training options ``caption_dropout``, ``modality_mixin`` and ``mimic_apply_to``."""

    caption_dropout: float = 0.0  # probability of dropping the text of an image+text input
    modality_mixin: float = 0.0  # probability of replacing it by its image-only or text-only view
    apply_to: str = "both"  # which side to augment: query, candidate or both

    def __post_init__(self) -> None:
        for name in ("caption_dropout", "modality_mixin"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.apply_to not in ("query", "candidate", "both"):
            raise ValueError(f"apply_to must be 'query', 'candidate' or 'both', got {self.apply_to!r}")

    @property
    def active(self) -> bool:
        return self.caption_dropout > 0 or self.modality_mixin > 0

    def applies(self, side: str) -> bool:
        return self.active and self.apply_to in (side, "both")


def augment(text: str | None, image, options: MimicOptions, rng: random.Random) -> tuple[str | None, object]:
    """Return the (text, image) to embed after MiMIC's options; only image+text inputs change."""
    if text is None or image is None:
        return text, image
    if rng.random() < options.caption_dropout:
        return None, image
    if rng.random() < options.modality_mixin:
        return (None, image) if rng.random() < 0.5 else (text, None)
    return text, image
