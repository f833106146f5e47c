"""encode_vs_st and encode_vs_bare: ``Embedder.encode`` against sentence-transformers loading the
saved model, and against the bare model forward on the same batches collated beforehand."""

from __future__ import annotations

from pathlib import Path

from tools.bench.inputs import mbeir_like_inputs
from tools.bench.timing import throughput


def measure(model_dir: Path, n: int, batch_size: int) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from jfe import Embedder
    from jfe.inputs import to_embed_input
    from jfe.lengths import collated_by_length

    embedder = Embedder.from_pretrained(model_dir, dtype="float32", device="cpu")
    saved = model_dir.parent / "saved"
    embedder.save(saved)
    st = SentenceTransformer(str(saved), device="cpu")
    inputs = mbeir_like_inputs(n)
    st_inputs = [{k: v for k, v in x.items() if v is not None} for x in inputs]

    # best of 3 after a warm-up: a single timed pass swung by 10% between runs here
    jfe_tp = throughput(lambda: embedder.encode(inputs, batch_size=batch_size), n, repeats=3)
    st_tp = throughput(lambda: st.encode(st_inputs, batch_size=batch_size), n, repeats=3)
    # bare: the same batches jfe forms, collated beforehand; only the model forward is timed
    items = [to_embed_input(x, i) for i, x in enumerate(inputs)]
    collated = collated_by_length(embedder.processor, items, [None] * n, embedder.config.max_text_tokens, batch_size)
    batches = [features for _, features in collated]

    def bare():
        with torch.inference_mode():
            for features in batches:
                embedder.model(**features, use_cache=False)

    bare_tp = throughput(bare, n, repeats=3)
    return {
        "encode_vs_st": jfe_tp / st_tp,
        "encode_vs_bare": jfe_tp / bare_tp,
        "encode_items_per_s": jfe_tp,
        "st_items_per_s": st_tp,
        "bare_items_per_s": bare_tp,
    }
