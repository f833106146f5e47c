"""Matryoshka (MRL) embeddings: the first D components of an embedding, renormalised, are an
embedding of their own; training with ``matryoshka_dims`` makes them a good one.

Truncating then renormalising is what sentence-transformers' ``truncate_dim`` with
``normalize_embeddings=True`` does, so a truncated jfe embedding and a truncated ST embedding of
the same folder agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def truncate(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """Rows cut to their first ``dim`` components and L2-normalised again (``None``: unchanged)."""
    if dim is None or dim == vectors.shape[1]:
        return vectors
    if not 0 < dim < vectors.shape[1]:
        raise ValueError(f"dimension {dim} is not between 1 and the embedding's {vectors.shape[1]}")
    cut = np.ascontiguousarray(vectors[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return cut / np.maximum(norms, 1e-12)


def prefixes(x: torch.Tensor, dims: Sequence[int]) -> list[torch.Tensor]:
    """``x``'s first ``d`` components for each ``d``, renormalised (differentiable)."""
    return [F.normalize(x[:, :d], dim=-1) for d in dims]


def check_dims(dims: Sequence[int], weights: Sequence[float], width: int) -> None:
    """Dimensions below the embedding's ``width``, one weight each (or none)."""
    bad = [d for d in dims if not 0 < d < width]
    if bad:
        raise ValueError(f"matryoshka_dims {bad} are not between 1 and the embedding width {width} (always trained)")
    if weights and len(weights) != len(dims):
        raise ValueError(f"matryoshka_weights has {len(weights)} entries for {len(dims)} matryoshka_dims")
