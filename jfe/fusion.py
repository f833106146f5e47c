"""Early or late fusion of an image+text input (``fusion: early | late``).

Early fusion (jfe's default, the JFE paper's model): the image and the text are one sequence and
one embedding. Late fusion (the baseline the papers compare with): the same VLM embeds the image
and the text of an image+text input as two inputs, each with the input's instruction, and their
embeddings are combined as UniIR's score fusion combines CLIP's, with one difference: UniIR sums
the unnormalised CLIP embeddings, jfe sums the two L2-normalised embeddings and normalises the sum
(so both modalities weigh the same and the result is a unit vector like every other embedding).
Single-modality inputs embed the same under both.

A late-fusion batch holds *parts*: an image+text row becomes an image-only and a text-only part,
both owned by the row; :func:`combine` turns part embeddings back into one per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from jfe.formatting import EmbedInput

FUSIONS = ("early", "late")


def check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise ValueError(f"fusion={fusion!r} is not one of {', '.join(FUSIONS)}")
    return fusion


def split_parts(
    items: Sequence[EmbedInput], instructions: Sequence[str | None]
) -> tuple[list[EmbedInput], list[str | None], list[int]]:
    """Each image+text item as its image and its text (same instruction), others as they are;
    returns the parts, their instructions and the item each part belongs to."""
    parts, part_instructions, owner = [], [], []
    for i, (item, instruction) in enumerate(zip(items, instructions, strict=True)):
        pieces = [EmbedInput(image=item.image), EmbedInput(text=item.text)] if item.image and item.text else [item]
        parts += pieces
        part_instructions += [instruction] * len(pieces)
        owner += [i] * len(pieces)
    return parts, part_instructions, owner


def combine(parts: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """(n, D): each row's parts (L2-normalised rows) summed and normalised (differentiable)."""
    summed = torch.zeros(n, parts.shape[1], dtype=parts.dtype, device=parts.device)
    return F.normalize(summed.index_add(0, owner.to(parts.device), parts), dim=-1)


def combine_numpy(out: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """Normalise the rows of ``out`` that hold summed parts (``fused``, a bool mask), in place."""
    if fused.any():
        rows = out[fused]
        out[fused] = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return out
