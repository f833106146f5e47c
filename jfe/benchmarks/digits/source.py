"""The pixels the benchmark is made of: scikit-learn's digits, their transforms and rendering, and the
pixel distances that pick hard negatives."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from jfe.benchmarks.digits.tasks import N_WRITERS, VARIANTS


@dataclass(frozen=True)
class DigitsSource:
    """The sklearn digits as 0..16 integer grids, with their digit and pseudo-writer."""

    images: np.ndarray  # (n, 8, 8) int64, 0..16
    digits: np.ndarray  # (n,) int64
    writers: np.ndarray  # (n,) int64, 0..N_WRITERS-1

    @classmethod
    def load(cls) -> DigitsSource:
        from sklearn.datasets import load_digits

        data = load_digits()
        images = np.rint(data.images).astype(np.int64)
        n = len(images)
        # The UCI original is stored writer by writer, so contiguous blocks stand in for its writers.
        writers = np.empty(n, dtype=np.int64)
        for writer, block in enumerate(np.array_split(np.arange(n), N_WRITERS)):
            writers[block] = writer
        return cls(images, np.asarray(data.target, dtype=np.int64), writers)

    def samples(self, writers: Iterable[int]) -> list[int]:
        return [int(i) for i in np.flatnonzero(np.isin(self.writers, list(writers)))]


def transform_digit(grid: np.ndarray, variant: str) -> np.ndarray:
    """``grid`` (8x8, 0..16) under one of :data:`VARIANTS`."""
    if variant == "plain":
        return grid
    if variant == "rotated":
        return np.rot90(grid, 2)
    if variant == "mirrored":
        return grid[:, ::-1]
    if variant == "inverted":
        return 16 - grid
    raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def render_digit(grid: np.ndarray) -> Image.Image:
    """An 8x8 0..16 grid as a 16x16 RGB image, white ink on black."""
    grey = (np.asarray(grid, dtype=np.int64) * 255 // 16).astype(np.uint8)
    big = np.repeat(np.repeat(grey, 2, axis=0), 2, axis=1)
    return Image.fromarray(np.stack([big] * 3, axis=-1))  # (h, w, 3) uint8 is RGB


def sq_dists(targets: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """Squared pixel distances between every target and every grid, shape (targets, grids).

    Integer grids go through a float64 matrix product, exact since every term stays far below 2**53,
    so the result (and any tie-breaking on it) is the same whatever the BLAS summation order.
    Fractional ones (centroids) take the slower elementwise path for the same reason.
    """
    a = targets.reshape(len(targets), -1).astype(np.float64)
    b = grids.reshape(len(grids), -1).astype(np.float64)
    if np.issubdtype(targets.dtype, np.integer) and np.issubdtype(grids.dtype, np.integer):
        return (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)


def nearest(dists: np.ndarray, k: int, among: np.ndarray | None = None) -> list[int]:
    """Indices of the ``k`` smallest of ``dists`` (optionally only those in ``among``); ties go to
    the lower index, so the choice is reproducible."""
    among = np.arange(len(dists)) if among is None else np.asarray(among)
    return [int(among[i]) for i in np.argsort(dists[among], kind="stable")[:k]]
