"""Multi-vector (late-interaction) embedding shards on disk.

The same folders as single-vector shards (:func:`jfe.retrieval.shards.shard_dir`), written and resumed
the same way: ``embeddings.safetensors`` holds ``vectors`` (T, D), float16 or float32, every item's token
vectors one item after another, and ``offsets`` (N + 1,) int64: item i owns rows ``offsets[i]:offsets[i + 1]``
(at least one). ``ids.txt`` has N lines. ``meta.json``, written last, marks the shard complete and says
``"kind": "multi"``, so the single-vector reader refuses the shard instead of misreading it (and this one
refuses single-vector shards).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from jfe.checksums import check_files
from jfe.retrieval.shards import (
    EMBEDDINGS_FILE,
    META_FILE,
    _check_ids,
    _read_ids,
    complete_shards,
    write_shard_files,
)

VECTORS_KEY = "vectors"
OFFSETS_KEY = "offsets"


def check_offsets(offsets: np.ndarray, n_items: int, n_tokens: int, where: str) -> None:
    """Raise ValueError (starting with ``where``) unless ``offsets`` is int64 (n_items + 1,), runs from 0
    to ``n_tokens`` and gives every item at least one token vector."""
    if offsets.dtype != np.int64 or offsets.shape != (n_items + 1,):
        raise ValueError(
            f"{where}: offsets must be int64 of shape ({n_items + 1},) for {n_items} items, "
            f"got {offsets.dtype} {offsets.shape}"
        )
    if offsets[0] != 0 or offsets[-1] != n_tokens:
        raise ValueError(
            f"{where}: offsets must run from 0 to {n_tokens} (the token rows), got {offsets[0]}..{offsets[-1]}"
        )
    short = np.flatnonzero(np.diff(offsets) < 1)
    if short.size:
        i = int(short[0])
        raise ValueError(
            f"{where}: item {i} owns {offsets[i + 1] - offsets[i]} token vectors "
            f"(offsets {offsets[i]}..{offsets[i + 1]}); every item needs at least one"
        )


def pack(vectors: Sequence[np.ndarray], where: str, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-item (n_i, D) arrays into (T, D) token rows and their (N + 1,) offsets.

    float16 stays float16 when every item is float16; anything else becomes float32. ``dim`` is needed
    only when there are no items (an empty shard still records its width)."""
    arrays = [np.asarray(v) for v in vectors]
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[0] < 1 or not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{where}: item {i} must be a non-empty 2-D float array (n, D), got {a.dtype} {a.shape}")
    widths = {a.shape[1] for a in arrays} | ({dim} if dim is not None else set())
    if len(widths) > 1:
        raise ValueError(f"{where}: items of different widths {sorted(widths)}")
    if not widths:
        raise ValueError(f"{where}: no items, so the width is unknown: pass dim")
    dtype = np.float16 if arrays and all(a.dtype == np.float16 for a in arrays) else np.float32
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays, dtype=dtype) if arrays else np.empty((0, widths.pop()), dtype=dtype)
    return flat, offsets


@dataclass
class MultiVectors:
    """Items with a variable number of token vectors each: ``vectors[offsets[i]:offsets[i + 1]]``
    (float32, L2-normalised by the encoder) belong to item ``ids[i]``."""

    ids: list[str]
    vectors: np.ndarray  # (T, D) float32
    offsets: np.ndarray  # (N + 1,) int64

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2:
            raise ValueError(f"MultiVectors: vectors must be 2-D (T, D), got shape {self.vectors.shape}")
        check_offsets(np.asarray(self.offsets), len(self.ids), self.vectors.shape[0], "MultiVectors")

    @classmethod
    def from_items(cls, ids: list[str], vectors: Sequence[np.ndarray], dim: int | None = None) -> MultiVectors:
        """From one (n_i, D) array per id."""
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} items")
        flat, offsets = pack(vectors, "MultiVectors", dim)
        return cls(list(ids), flat, offsets)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        """Token vectors per item, (N,) int64."""
        return np.diff(self.offsets)

    def item(self, i: int) -> np.ndarray:
        """Item i's (n_i, D) token vectors (a view)."""
        return self.vectors[self.offsets[i] : self.offsets[i + 1]]

    def token_items(self) -> np.ndarray:
        """The item owning each token row, (T,) int64."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)


def write_multi_shard(
    dir: str | os.PathLike,
    ids: list[str],
    vectors: Sequence[np.ndarray],
    model: str | None = None,
    dim: int | None = None,
    fingerprint: dict | None = None,
) -> Path:
    """Write one multi-vector shard atomically, ``vectors[i]`` (n_i, D) being item ``ids[i]``'s token
    vectors; ``meta.json`` goes last and marks it complete. ``dim`` is needed only for an empty shard.
    Returns the shard folder."""
    dir = Path(dir)
    flat, offsets = pack(vectors, str(dir), dim)
    if len(ids) != len(offsets) - 1:
        raise ValueError(f"{dir}: {len(ids)} ids for {len(offsets) - 1} items")
    _check_ids(ids, str(dir))
    meta = {"kind": "multi", "count": len(ids), "dim": int(flat.shape[1]), "dtype": flat.dtype.name,
            "tokens": int(flat.shape[0]), "model": model}  # fmt: skip
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint
    return write_shard_files(dir, {VECTORS_KEY: flat, OFFSETS_KEY: offsets}, ids, meta)


def read_tensors(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    """The named tensors of a safetensors file; a missing, damaged or truncated file is an error naming it."""
    if not path.is_file():
        raise ValueError(f"{path}: missing file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            missing = [k for k in keys if k not in f.keys()]  # noqa: SIM118 - safe_open handles are not containers
            if missing:
                raise ValueError(f"{path}: no tensor named {missing[0]!r}")
            return [f.get_tensor(k) for k in keys]
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: unreadable safetensors file: {err}") from err


def _read_shard(shard: Path, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """A complete shard's vectors and offsets, checked against its meta.json."""
    path = shard / EMBEDDINGS_FILE
    if path.is_file():  # else read_tensors says it is missing
        check_files(shard, meta.get("files"), META_FILE, verify=True)
    vectors, offsets = read_tensors(path, (VECTORS_KEY, OFFSETS_KEY))
    expected = (meta["tokens"], meta["dim"])
    if vectors.shape != expected or vectors.dtype.name != meta["dtype"]:
        raise ValueError(
            f"{path}: tensor {VECTORS_KEY!r} is {vectors.dtype} {vectors.shape}, "
            f"but {META_FILE} says {meta['dtype']} {expected}"
        )
    check_offsets(offsets, meta["count"], meta["tokens"], str(path))
    return vectors, offsets


def _multi_meta(shard: Path, meta: dict) -> dict:
    try:
        return {**meta, "tokens": int(meta["tokens"])}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{shard / META_FILE}: malformed shard metadata: tokens: {err}") from err


def read_multi_embeddings(paths: list[str | os.PathLike] | str | os.PathLike) -> MultiVectors:
    """Read and concatenate multi-vector shards (in the given order; shard-* folders under a parent in
    sorted order, every one of them present) into one float32 :class:`MultiVectors`.

    Shards must agree on dim and model, and no id may repeat; every error names the file at fault."""
    found = complete_shards(paths, "multi")
    shards, metas = [s for s, _ in found], [_multi_meta(s, m) for s, m in found]
    for shard, meta in zip(shards[1:], metas[1:], strict=True):
        for key in ("dim", "model"):
            if meta.get(key) != metas[0].get(key):
                raise ValueError(
                    f"{key} mismatch: {shards[0]} has {metas[0].get(key)!r}, {shard} has {meta.get(key)!r}"
                )
    # filled shard by shard: peak memory is the result plus one shard
    vectors = np.empty((sum(m["tokens"] for m in metas), metas[0]["dim"]), dtype=np.float32)
    offsets = np.zeros(sum(m["count"] for m in metas) + 1, dtype=np.int64)
    ids: list[str] = []
    owner: dict[str, Path] = {}
    for shard, meta in zip(shards, metas, strict=True):
        part, part_offsets = _read_shard(shard, meta)
        part_ids = _read_ids(shard, meta["count"])
        for i in part_ids:
            if i in owner:
                raise ValueError(f"duplicate id {i!r} in {owner[i]} and {shard}")
            owner[i] = shard
        start = offsets[len(ids)]
        vectors[start : start + len(part)] = part
        offsets[len(ids) + 1 : len(ids) + len(part_ids) + 1] = start + part_offsets[1:]
        ids.extend(part_ids)
    return MultiVectors(ids, vectors, offsets)
