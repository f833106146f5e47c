"""``jfe encode``: embed a candidate pool, a query file or pair-format data into resumable shards.

    jfe encode --model M --data FILE --out DIR [--images-root DIR] [--instruction-file TSV]
               [--shard I --num-shards N] [--batch-size B] [--dtype float16|float32] [--engine jfe|vllm]

Without ``--shard`` one process encodes every shard in turn; with it, N processes (GPUs, nodes)
split the corpus. A shard is written atomically and skipped when already complete, so a rerun
resumes where an interrupted one stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from jfe.formatting import EmbedInput
from jfe.inputs import BadInputError, load_image
from jfe.matryoshka import truncate
from jfe.model_args import add_model_arguments, model_kwargs
from jfe.multivector import check_vectors
from jfe.retrieval.items import EncodeItem, add_text_style_arguments, read_items, text_style
from jfe.retrieval.multi_shards import write_multi_shard
from jfe.retrieval.shards import default_num_shards, is_complete, read_meta, shard_dir, shard_slice, write_shard

logger = logging.getLogger(__name__)


def length_order(items: list[EncodeItem]) -> list[int]:
    """Indices in a rough token-count order that needs no image opened: text-only items first,
    each group by characters of text and instruction."""
    return sorted(
        range(len(items)),
        key=lambda i: (items[i].image is not None, len(items[i].text or "") + len(items[i].instruction or "")),
    )


class _Loaded(Dataset):
    """Opens images in DataLoader workers; bad images fail with their path or are skipped."""

    def __init__(self, items: list[EncodeItem], skip_bad: bool):
        self.items, self.skip_bad = items, skip_bad

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, EmbedInput | None]:
        item = self.items[i]
        try:
            image = load_image(item.image, f"item {item.id}") if item.image else None
        except BadInputError:
            if not self.skip_bad:
                raise
            return i, None
        return i, EmbedInput(text=item.text, image=image)


# Items are read in a rough order and each window of this many batches is re-sorted by exact token
# count: a wider window pads less, but holds more decoded images in memory at once.
SORT_WINDOW_BATCHES = 16


def encode_items(
    embedder,
    items: list[EncodeItem],
    batch_size: int = 32,
    num_workers: int = 0,
    skip_bad: bool = False,
    progress: str | None = "encode",
    window_batches: int = SORT_WINDOW_BATCHES,
    multi: bool = False,
) -> tuple[np.ndarray | list, np.ndarray]:
    """Embeddings (N, D) float32 in item order, and a bool mask of the items that were embedded;
    with ``multi``, each item's token vectors ((n_i, d) arrays, None where skipped).

    Images are decoded in DataLoader workers, ``window_batches`` batches at a time, in
    :func:`length_order`; the engine's ``embed_windows`` (for an :class:`~jfe.Embedder`, the loop
    ``Embedder.encode`` runs too) sorts each window by exact token count and embeds it. An engine
    whose ``schedules_batches`` is true (vLLM) gets the items in file order instead: its own
    scheduler packs requests by tokens, and measured it ran length-sorted requests slower."""
    order = list(range(len(items))) if getattr(embedder, "schedules_batches", False) else length_order(items)
    ordered = [items[i] for i in order]
    # workers decode batch-sized pieces, so the first window is ready as soon as its pieces are
    loader = DataLoader(_Loaded(ordered, skip_bad), batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    windows = (
        [(order[i], x, ordered[i].instruction) for i, x in w] for w in _windows(loader, batch_size * window_batches)
    )
    if multi:
        return embedder.embed_windows(windows, len(items), batch_size, progress, multi=True)
    return embedder.embed_windows(windows, len(items), batch_size, progress)


def _windows(loader: DataLoader, rows: int) -> Iterator[list[tuple[int, EmbedInput | None]]]:
    """The loader's rows, ``rows`` at a time (the last window may be smaller)."""
    window: list = []
    for piece in loader:
        window.extend(piece)
        if len(window) >= rows:
            yield window
            window = []
    if window:
        yield window


def add_vectors_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vectors",
        choices=["single", "multi"],
        help="single vectors or token vectors (late interaction); default: the model's own "
        "(single for an embedding: both model)",
    )


def wants_multi(embedder, vectors: str | None) -> bool:
    """Whether to use ``embedder``'s token vectors: ``vectors`` if given (checked), else its own kind."""
    embedding = embedder.config.embedding
    if vectors is None:
        return embedding == "multi"
    try:
        check_vectors(embedding, multi=vectors == "multi")
    except ValueError as err:
        raise ValueError(f"--vectors {vectors}: {err}") from None
    return vectors == "multi"


def encode_to_shards(
    embedder,
    items: list[EncodeItem],
    out: str | os.PathLike,
    num_shards: int,
    shards: list[int] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    dtype: str = "float16",
    skip_bad: bool = False,
    model_name: str | None = None,
    dim: int | None = None,
    multi: bool = False,
) -> list[Path]:
    """Encode the chosen shards of ``items`` (all by default), skipping complete ones. ``dim`` keeps
    each embedding's first components, renormalised (Matryoshka). ``multi`` writes each item's
    token vectors (:mod:`jfe.retrieval.multi_shards`)."""
    if multi and dim:
        raise ValueError("--dim cuts single vectors (Matryoshka); token vectors keep their width")
    written = []
    kind = "multi" if multi else "single"
    width = embedder.config.multi_dim if multi else dim or embedder.dimension
    for index in shards if shards is not None else range(num_shards):
        folder = shard_dir(out, index, num_shards)
        if is_complete(folder):
            meta = read_meta(folder)
            found = (meta.get("kind", "single"), meta["dim"])
            if found != (kind, width):
                raise ValueError(
                    f"{folder}: complete shard of {found[0]} vectors of dimension {found[1]}, "
                    f"this run writes {kind} vectors of dimension {width}"
                )
            logger.info("shard %s is complete: skipped", folder.name)
            written.append(folder)
            continue
        part = [items[i] for i in shard_slice(len(items), index, num_shards)]
        vecs, ok = encode_items(
            embedder, part, batch_size, num_workers, skip_bad, progress=f"shard {index + 1}/{num_shards}", multi=multi
        )
        if not ok.all():
            logger.warning("shard %s: skipped %d bad input(s)", folder.name, int((~ok).sum()))
        ids = [item.id for item, good in zip(part, ok, strict=True) if good]
        if multi:
            kept = [v.astype(dtype) for v, good in zip(vecs, ok, strict=True) if good]
            write_multi_shard(folder, ids, kept, model=model_name, dim=width)
        else:
            write_shard(folder, ids, truncate(vecs, dim)[ok].astype(dtype), model=model_name)
        written.append(folder)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe encode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder (jfe-saved or any Qwen2-VL-family checkpoint)")
    parser.add_argument("--data", required=True, help="candidate pool, M-BEIR query file or pair-format JSONL")
    parser.add_argument("--out", required=True, help="output folder for shard-*-of-* subfolders")
    parser.add_argument("--images-root", help="folder image paths are relative to (default: as written)")
    parser.add_argument("--instruction-file", help="M-BEIR query_instructions.tsv (for query files)")
    parser.add_argument("--shard", type=int, help="encode only this shard (0-based); default: all, in turn")
    parser.add_argument("--num-shards", type=int, help="number of shards (default: one per 100,000 items)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding images")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored embedding dtype")
    parser.add_argument("--model-dtype", default=None, help="weights dtype (default: bfloat16 on CUDA, else float32)")
    parser.add_argument("--skip-bad-inputs", action="store_true", help="skip and count unreadable images")
    parser.add_argument(
        "--dim", type=int, help="keep the first D components, renormalised (Matryoshka; default: the full width)"
    )
    parser.add_argument(
        "--engine",
        choices=["jfe", "vllm"],
        default="jfe",
        help="jfe (transformers, the default) or vllm: the forward in vLLM's pooling runner, the fast path "
        "for large pools on GPUs (pip install 'jfe[vllm]'); same items, prompts, shards and resume",
    )
    add_vectors_argument(parser)
    add_text_style_arguments(parser)
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from jfe.embedder import Embedder

    items = read_items(args.data, args.images_root, args.instruction_file, text_style(args))
    num_shards = args.num_shards or default_num_shards(len(items))
    if args.shard is not None and not 0 <= args.shard < num_shards:
        parser.error(f"--shard {args.shard} is outside 0..{num_shards - 1}")
    if args.engine == "vllm":
        from jfe.serving.vllm import VllmEmbedder

        embedder = VllmEmbedder(args.model, dtype=args.model_dtype, **model_kwargs(args))
    else:
        embedder = Embedder.from_pretrained(args.model, dtype=args.model_dtype, **model_kwargs(args))
    multi = wants_multi(embedder, args.vectors)
    folders = encode_to_shards(
        embedder,
        items,
        args.out,
        num_shards,
        shards=None if args.shard is None else [args.shard],
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        dtype=args.dtype,
        skip_bad=args.skip_bad_inputs,
        model_name=str(args.model),
        dim=args.dim,
        multi=multi,
    )
    print(f"{len(items)} items, {len(folders)} shard(s) complete under {args.out}")
    return 0
