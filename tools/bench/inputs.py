"""The benchmark's inputs: an M-BEIR-like mix of captions, long texts and images, held in memory or
written as image files plus a pair-format file, and clustered unit vectors for the ANN figures."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ["a", "handwritten", "red", "green", "blue", "seven", "three", "rotated", "mirrored", "image", "of", "the"]
INSTRUCTION = "Retrieve the matching item."


def mbeir_like_inputs(n: int, seed: int = 0) -> list[dict]:
    """Short captions, a long tail of long texts, images with and without text (as in M-BEIR):
    ``{"text": str | None, "image": PIL.Image | None}``, never both None. The first ``k`` of ``n``
    inputs are the ``k`` inputs asked for with the same seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choice([rng.randint(3, 12)] * 7 + [rng.randint(20, 60)] * 2 + [rng.randint(80, 200)])
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        kind = rng.random()
        image = None
        if kind < 0.5:
            side = rng.choice([16, 24, 32])
            image = Image.fromarray(np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8))
        out.append({"text": text if kind > 0.25 else None, "image": image})
    return out


def write_inputs(folder: Path, n: int, seed: int) -> list[dict]:
    """:func:`mbeir_like_inputs` with each image saved as ``folder/images/<i>.png`` (lossless):
    ``{"text": str | None, "image": "images/<i>.png" | None}``, paths relative to ``folder``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    written = []
    for i, x in enumerate(mbeir_like_inputs(n, seed)):
        path = None
        if x["image"] is not None:
            path = f"images/{i}.png"
            x["image"].save(folder / path)
        written.append({"text": x["text"], "image": path})
    return written


def write_pairs(folder: Path, n_pairs: int, seed: int, instruction: str | None = None) -> Path:
    """A pair-format file ``folder/mix.jsonl`` (one task, "mix") of ``n_pairs`` lines: the query is
    input ``2i`` of the mix, its positive input ``2i + 1``; images beside it under ``images/``."""
    inputs = write_inputs(folder, 2 * n_pairs, seed)

    def side(x: dict) -> dict:
        return {k: v for k, v in x.items() if v is not None}

    path = folder / "mix.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n_pairs):
            row = {"query": side(inputs[2 * i]), "pos": [side(inputs[2 * i + 1])]}
            if instruction:
                row["instruction"] = instruction
            handle.write(json.dumps(row) + "\n")
    return path


def clustered(n: int, dim: int, centres: int, seed: int) -> np.ndarray:
    """``n`` unit vectors around ``centres`` Gaussian centres (float32)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32) * 3
    x = c[rng.integers(0, centres, n)] + rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
