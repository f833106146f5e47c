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
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from jfe.fingerprint import items_fingerprint, model_fingerprint
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
    items: Sequence[EncodeItem],
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
    options: dict | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Encode the chosen shards of ``items`` (all by default), skipping complete ones. ``dim`` keeps
    each embedding's first components, renormalised (Matryoshka). ``multi`` writes each item's
    token vectors (:mod:`jfe.retrieval.multi_shards`).

    A complete shard is reused only when its fingerprint matches this run's: the model's content
    (``model_name``'s folder), the shard's items (ids, texts, images, instructions, in order), and
    the options that change vectors (kind, width, dtype, plus ``options``; never the batch size).
    Otherwise it is an error naming what differs, or with ``overwrite`` the shard is re-encoded."""
    if multi and dim:
        raise ValueError("--dim cuts single vectors (Matryoshka); token vectors keep their width")
    written = []
    kind = "multi" if multi else "single"
    width = embedder.config.multi_dim if multi else dim or embedder.dimension
    model_fp = model_fingerprint(model_name) if model_name else None
    run_options = {"vectors": kind, "dim": width, "dtype": dtype, **(options or {})}
    for index in shards if shards is not None else range(num_shards):
        folder = shard_dir(out, index, num_shards)
        rows = shard_slice(len(items), index, num_shards)
        part = list(items[rows.start : rows.stop])  # a pool converts only these rows
        fingerprint = {
            "model": model_fp,
            "items": items_fingerprint((it.id, it.text, it.image, it.instruction) for it in part),
            "range": [rows.start, rows.stop],
            "options": run_options,
        }
        if is_complete(folder) and not overwrite:
            meta = read_meta(folder)
            found = (meta.get("kind", "single"), meta["dim"])
            if found != (kind, width):
                raise ValueError(
                    f"{folder}: complete shard of {found[0]} vectors of dimension {found[1]}, "
                    f"this run writes {kind} vectors of dimension {width} (--overwrite re-encodes it)"
                )
            check_fingerprint(folder, meta.get("fingerprint"), fingerprint)
            logger.info("shard %s is complete: skipped", folder.name)
            written.append(folder)
            continue
        vecs, ok = encode_items(
            embedder, part, batch_size, num_workers, skip_bad, progress=f"shard {index + 1}/{num_shards}", multi=multi
        )
        if not ok.all():
            logger.warning("shard %s: skipped %d bad input(s)", folder.name, int((~ok).sum()))
        ids = [item.id for item, good in zip(part, ok, strict=True) if good]
        if multi:
            kept = [v.astype(dtype) for v, good in zip(vecs, ok, strict=True) if good]
            write_multi_shard(folder, ids, kept, model=model_name, dim=width, fingerprint=fingerprint)
        else:
            write_shard(folder, ids, truncate(vecs, dim)[ok].astype(dtype), model=model_name, fingerprint=fingerprint)
        written.append(folder)
    return written


def check_fingerprint(folder: Path, found: dict | None, expected: dict) -> None:
    """Refuse to reuse a complete shard made by another model, from other items or with other options."""
    advice = "--overwrite re-encodes it, or choose another --out"
    if not found:
        raise ValueError(f"{folder}: complete shard without a fingerprint (written by an older jfe): {advice}")
    if found.get("model") != expected["model"]:
        raise ValueError(
            f"{folder}: complete shard made by another model (fingerprint {found.get('model')}, "
            f"this model's {expected['model']}): {advice}"
        )
    if found.get("range") != expected["range"] or found.get("items") != expected["items"]:
        raise ValueError(
            f"{folder}: complete shard of other items (items {found.get('range')}, fingerprint "
            f"{found.get('items')}; this run's {expected['range']}, {expected['items']}): the data or its "
            f"order changed: {advice}"
        )
    if found.get("options") != expected["options"]:
        old, new = found.get("options") or {}, expected["options"]
        changed = ", ".join(
            f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
        )
        raise ValueError(f"{folder}: complete shard encoded with other options ({changed}): {advice}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe encode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder (jfe-saved or any Qwen2-VL-family checkpoint)")
    parser.add_argument("--data", required=True, help="candidate pool, M-BEIR query file or pair-format JSONL")
    parser.add_argument("--out", required=True, help="output folder for shard-*-of-* subfolders")
    parser.add_argument("--images-root", help="folder image paths are relative to (default: as written)")
    parser.add_argument("--instruction-file", help="M-BEIR query_instructions.tsv (for query files)")
    parser.add_argument(
        "--shard",
        type=int,
        help="encode only this shard (0-based); default: this rank's share under torchrun, deepspeed or srun "
        "(RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS), else all in turn",
    )
    parser.add_argument("--overwrite", action="store_true", help="re-encode complete shards instead of reusing them")
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
    rank, world = launcher_rank()
    num_shards = args.num_shards or max(default_num_shards(len(items)), world)
    if args.shard is not None and not 0 <= args.shard < num_shards:
        parser.error(f"--shard {args.shard} is outside 0..{num_shards - 1}")
    shards = [args.shard] if args.shard is not None else rank_shards(num_shards, rank, world)
    device = launcher_device()
    if args.engine == "vllm":
        from jfe.serving.vllm import VllmEmbedder

        embedder = VllmEmbedder(args.model, dtype=args.model_dtype, **model_kwargs(args))
    else:
        embedder = Embedder.from_pretrained(args.model, dtype=args.model_dtype, device=device, **model_kwargs(args))
    multi = wants_multi(embedder, args.vectors)
    # what changes the vectors besides the model, its items and the kind, width and dtype
    options = {"engine": args.engine, **model_kwargs(args)}
    folders = encode_to_shards(
        embedder,
        items,
        args.out,
        num_shards,
        shards=shards,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        dtype=args.dtype,
        skip_bad=args.skip_bad_inputs,
        model_name=str(args.model),
        dim=args.dim,
        multi=multi,
        options=options,
        overwrite=args.overwrite,
    )
    who = f"rank {rank} of {world}: " if world > 1 else ""
    print(f"{who}{len(items)} items, {len(folders)} shard(s) complete under {args.out}")
    return 0


def launcher_rank() -> tuple[int, int]:
    """(rank, world size) as torchrun and deepspeed (RANK, WORLD_SIZE) or Slurm's srun (SLURM_PROCID,
    SLURM_NTASKS) set them; (0, 1) outside a launcher."""
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if os.environ.get(world_key):
            rank, world = int(os.environ.get(rank_key, "0")), int(os.environ[world_key])
            if not 0 <= rank < world:
                raise ValueError(f"{rank_key}={rank} is outside 0..{world - 1} ({world_key}={world})")
            return rank, world
    return 0, 1


def rank_shards(num_shards: int, rank: int, world: int) -> list[int]:
    """The shards rank ``rank`` of ``world`` encodes: every ``world``-th, starting at its rank."""
    return list(range(rank, num_shards, world))


def launcher_device() -> str | None:
    """Each rank's own GPU (LOCAL_RANK, or SLURM_LOCALID under srun) when CUDA is there; None lets
    the embedder choose (CPU here)."""
    import torch

    local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID")
    if local is None or not torch.cuda.is_available():
        return None
    return f"cuda:{int(local) % torch.cuda.device_count()}"
