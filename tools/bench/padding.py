"""padding_efficiency: real / padded tokens of the batches jfe forms on the M-BEIR-like mix, the
lower of ``jfe encode``'s batches (here) and the training batches (:mod:`tools.bench.train`)."""

from __future__ import annotations

from pathlib import Path

from tools.bench.inputs import write_inputs


def real_and_padded(batches: list[dict]) -> tuple[int, int]:
    """Over collated training batches: the real tokens of the real rows, and every token the model
    runs (the padding and the dummy-image rows included)."""
    real = padded = 0
    for batch in batches:
        chunks = batch["query"] + batch["candidates"]
        for chunk, n in zip(chunks, batch["query_rows"] + batch["candidate_rows"], strict=True):
            real += int(chunk["attention_mask"][:n].sum())
            padded += chunk["attention_mask"].numel()
    return real, padded


def encode_tokens(embedder, items: list, batch_size: int) -> tuple[int, int]:
    """Real and padded tokens of the batches :func:`jfe.retrieval.encode.encode_items` forms for
    ``items``, counted from the collated features; nothing runs through the model."""
    import torch

    from jfe.inference import embed_windows
    from jfe.retrieval.encode import encode_items

    counted = {"real": 0, "padded": 0}

    class Counting:
        """Stands in for the embedder: counts the tokens of each batch instead of running it."""

        processor, config, dimension = embedder.processor, embedder.config, 1

        def __call__(self, **features):
            mask = features["attention_mask"]
            counted["real"] += int(mask.sum())
            counted["padded"] += mask.numel()
            return torch.zeros(mask.shape[0], 1)

        def embed_windows(self, *args):
            return embed_windows(self, *args)

    encode_items(Counting(), items, batch_size, progress=None)
    return counted["real"], counted["padded"]


def measure_encode(model_dir: Path, n: int, batch_size: int, workdir: Path) -> dict:
    """``encode_padding_efficiency`` over ``n`` items of the mix written under ``workdir`` (no
    model forward, so the corpus can be large)."""
    from jfe import Embedder
    from jfe.retrieval.encode import EncodeItem

    embedder = Embedder.from_pretrained(model_dir, dtype="float32", device="cpu")
    written = write_inputs(workdir, n, seed=3)
    items = [
        EncodeItem(str(i), x["text"], str(workdir / x["image"]) if x["image"] else None) for i, x in enumerate(written)
    ]
    real, padded = encode_tokens(embedder, items, batch_size)
    return {"encode_padding_efficiency": real / padded}


def combined(results: dict) -> float:
    """The headline figure: the lower of the encode and the training batches' efficiencies."""
    return min(results["encode_padding_efficiency"], results["train_padding_efficiency"])
