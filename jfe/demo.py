"""``jfe demo``: the built-in default run on CPU, offline.

Builds the tiny model, embeds text, image and image+text inputs, saves the embedder, and checks
that sentence-transformers loads the saved folder and gives the same embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _digit_like_image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jfe demo", description=__doc__)
    parser.add_argument("--out", default="jfe-demo", help="folder for the saved model and results.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from sentence_transformers import SentenceTransformer

    from jfe import Embedder
    from jfe.cache import tiny_model

    start = time.perf_counter()
    out = Path(args.out)
    print("== building the tiny model (cached after the first run)")
    embedder = Embedder.from_pretrained(tiny_model(), dtype="float32", device="cpu")
    inputs = [
        "a handwritten seven",
        {"image": _digit_like_image(0)},
        {"text": "rotated", "image": _digit_like_image(1)},
    ]
    print("== embedding text, image and image+text inputs")
    vecs = embedder.encode(inputs, show_progress=True)
    print(f"embeddings: {vecs.shape}, norms {np.round(np.linalg.norm(vecs, axis=1), 4).tolist()}")
    print("cosine similarities:\n" + np.array2string(vecs @ vecs.T, precision=3))
    print(f"== saving to {out / 'model'} and reloading with sentence-transformers")
    embedder.save(out / "model")
    st = SentenceTransformer(str(out / "model"), device="cpu")
    parity = float(np.abs(st.encode(inputs) - vecs).max())
    print(f"sentence-transformers vs jfe max abs diff: {parity:.2e}")
    results = {
        "dimension": int(vecs.shape[1]),
        "st_parity_max_abs_diff": parity,
        "seconds": time.perf_counter() - start,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'results.json'}")
    return 0 if parity <= 1e-5 else 1
