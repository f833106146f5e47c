"""The vLLM gate for token vectors (late interaction), one step of ``tools/vllm_check.py``.

A multi-vector model jfe exports is a sentence-transformers ``MultiVectorEncoder`` folder, which
vLLM serves with the ``token_embed`` pooling task (the saved ``Dense`` head applied to every
token's state, then L2-normalised); :class:`jfe.serving.vllm.VllmEmbedder` drops the template
markers by the prompt's token ids. Compared in fp32 (max abs diff <= 1e-5, the same tokens):

- ``VllmEmbedder.encode_multi`` against ``Embedder.encode_multi`` of an ``embedding: multi``
  export, on the single-vector check's cases (text with instruction, image, image+text, long text);
- ``jfe encode --engine vllm`` of that export against ``jfe encode``'s token-vector shards (same
  files, ids and offsets), and, in the run's first family only, the same for an ``embedding: both``
  export, whose ``multi_vector/`` view is the folder vLLM loads: that choice is jfe's, the same for
  every family, and each vLLM engine costs about a minute on a CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

TOL = 1e-5
MULTI_DIM = 64


def export_multi(base: Path, root: Path, prompts: dict[str, str]) -> tuple[Path, Path]:
    """The ``multi`` and ``both`` exports of the model in ``base``, with one random head."""
    import torch

    from jfe import Embedder

    loaded = Embedder.from_pretrained(base, dtype="float32", device="cpu")
    config = dataclasses.replace(loaded.config, embedding="multi", multi_dim=MULTI_DIM, prompts=prompts)
    torch.manual_seed(0)
    multi = Embedder(loaded.model, loaded.processor, config)
    out_multi = multi.save(root / "export-multi")
    both = Embedder(loaded.model, loaded.processor, dataclasses.replace(config, embedding="both"), multi.multi_head)
    return out_multi, both.save(root / "export-both")


def _diff(ours: list, theirs: list) -> tuple[float, bool]:
    """Max abs diff of two lists of token-vector sets; inf where their token counts differ."""
    import numpy as np

    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs, strict=True)):
        return float("inf"), False
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    return diff, diff <= TOL


def _shards(arch: str, ours, engine, pool: Path, root: Path, name: str) -> tuple[str, str, bool]:
    """``jfe encode`` token-vector shards of ``pool`` by ``ours`` and by ``engine``: (name, line, ok)."""
    import numpy as np

    from jfe.retrieval.encode import encode_to_shards
    from jfe.retrieval.items import read_items
    from jfe.retrieval.multi_shards import read_multi_embeddings

    items = read_items(pool, pool.parent)
    dirs = [root / f"{name}-jfe", root / f"{name}-vllm"]
    for embedder, out in zip((ours, engine), dirs, strict=True):
        encode_to_shards(embedder, items, out, num_shards=2, dtype="float32", multi=True)
    a, b = (read_multi_embeddings([d]) for d in dirs)
    files = [sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file()) for d in dirs]
    same_ids, same_offsets = a.ids == b.ids, np.array_equal(a.offsets, b.offsets)
    same = same_ids and same_offsets and files[0] == files[1]
    diff = float(np.abs(a.vectors - b.vectors).max()) if same else float("inf")
    ok = same and diff <= TOL
    line = (
        f"{len(b.ids)} items, {len(b.vectors)} token vectors in {len(files[1])} files, same ids, offsets and "
        f"files, max abs diff {diff:.2e}"
        if ok
        else f"FAILED: ids equal {same_ids}, offsets equal {same_offsets}, files {files[0]} vs {files[1]}, "
        f"max abs diff {diff:.2e}"
    )
    return f"{arch} encode --engine vllm --vectors multi ({name} model)", line, ok


def check_multi(arch: str, base: Path, root: Path, cases: dict, prompts: dict, pool: Path, both: bool) -> dict:
    """Every token-vector check of one family; name -> result line, and ``{arch} multi ok``.
    ``both`` adds the ``embedding: both`` model (one more engine)."""
    from jfe import Embedder
    from jfe.serving.vllm import VllmEmbedder

    results: dict[str, str] = {}
    failed = False
    folder_multi, folder_both = export_multi(base, root, prompts)
    ours = Embedder.from_pretrained(folder_multi, dtype="float32", device="cpu")
    engine = VllmEmbedder(folder_multi, dtype="float32", enforce_eager=True, max_model_len=4096)
    for name, (inputs, instruction) in cases.items():
        theirs, mine = engine.encode_multi(inputs, instruction), ours.encode_multi(inputs, instruction)
        diff, ok = _diff(mine, theirs)
        failed |= not ok
        tokens = "+".join(str(len(v)) for v in theirs)
        results[f"{arch} vllm multi-vector {name}"] = f"max abs diff {diff:.2e} ({tokens} token vectors)" + (
            "" if ok else f" FAILED (> {TOL} or other tokens)"
        )
    name, line, ok = _shards(arch, ours, engine, pool, root, "multi")
    failed |= not ok
    results[name] = line
    del engine
    if both:
        # a both model's token vectors come from its multi_vector/ view, a folder of its own for vLLM
        ours = Embedder.from_pretrained(folder_both, dtype="float32", device="cpu")
        engine = VllmEmbedder(folder_both, dtype="float32", enforce_eager=True, max_model_len=4096)
        name, line, ok = _shards(arch, ours, engine, pool, root, "both")
        failed |= not ok
        results[name] = line
        del engine
    results[f"{arch} multi ok"] = "no" if failed else "yes"
    return results
