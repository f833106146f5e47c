"""Embedding shards on disk.

A shard is a folder ``OUT/shard-{i:05d}-of-{n:05d}/`` holding ``embeddings.safetensors`` (key ``"embeddings"``,
shape (N, D), float16 or float32), ``ids.txt`` (N lines) and ``meta.json``. ``meta.json`` is written last, so a
shard is complete iff it exists: an encoding job killed half-way leaves an incomplete shard that is redone, never read.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from jfe.atomic import atomic_path, atomic_write_text
from jfe.checksums import check_files, file_records

EMBEDDINGS_FILE = "embeddings.safetensors"
IDS_FILE = "ids.txt"
META_FILE = "meta.json"
TENSOR_KEY = "embeddings"
_SHARD_RE = re.compile(r"^shard-(\d{5,})-of-(\d{5,})$")
_DTYPES = {"float16": np.float16, "float32": np.float32}
_MAX_HEADER = 100 * 2**20  # safetensors refuses larger headers too
# meta.json's "kind" (index.json's too): one vector per item, or a variable number (late interaction);
# files written before multi-vector shards existed have none and are single
KINDS = {"single": "single-vector", "multi": "multi-vector (late-interaction)"}
# Default shard size: a shard is the unit a crash redoes, and one float16 shard of 100k x 1536 is 300 MB.
ROWS_PER_SHARD = 100_000


def default_num_shards(n_items: int) -> int:
    """One shard per :data:`ROWS_PER_SHARD` items (at least one)."""
    return max(1, math.ceil(n_items / ROWS_PER_SHARD))


def shard_dir(out: str | os.PathLike, index: int, num_shards: int) -> Path:
    """The folder of shard ``index`` (0-based) out of ``num_shards`` under ``out``."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}), got {index}")
    return Path(out) / f"shard-{index:05d}-of-{num_shards:05d}"


def shard_slice(n_items: int, index: int, num_shards: int) -> range:
    """Contiguous item range of shard ``index``; sizes differ by at most one, earlier shards take the remainder."""
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    shard_dir(".", index, num_shards)  # same argument checks
    base, extra = divmod(n_items, num_shards)
    start = index * base + min(index, extra)
    return range(start, start + base + (1 if index < extra else 0))


def is_complete(dir: str | os.PathLike) -> bool:
    return (Path(dir) / META_FILE).is_file()


def _check_ids(ids: list[str], where: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if not isinstance(i, str) or not i or i != i.strip() or "\n" in i or "\r" in i:
            raise ValueError(f"{where}: invalid id {i!r} (ids must be non-empty strings without surrounding space)")
        if i in seen:
            raise ValueError(f"{where}: duplicate id {i!r}")
        seen.add(i)


def write_shard(
    dir: str | os.PathLike,
    ids: list[str],
    embeddings: np.ndarray,
    model: str | None = None,
    fingerprint: dict | None = None,
) -> Path:
    """Write one shard atomically; ``meta.json`` goes last and marks it complete. ``fingerprint``
    (what made it: :func:`jfe.retrieval.encode.encode_to_shards`) is kept in the meta. Returns the
    shard folder."""
    dir = Path(dir)
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"{dir}: embeddings must be 2-D (N, D), got shape {embeddings.shape}")
    if embeddings.dtype not in (np.float16, np.float32):
        if not np.issubdtype(embeddings.dtype, np.floating):
            raise ValueError(f"{dir}: embeddings must be floating point, got {embeddings.dtype}")
        embeddings = embeddings.astype(np.float32)
    if len(ids) != embeddings.shape[0]:
        raise ValueError(f"{dir}: {len(ids)} ids for {embeddings.shape[0]} embedding rows")
    _check_ids(ids, str(dir))
    meta = {
        "count": int(embeddings.shape[0]),
        "dim": int(embeddings.shape[1]),
        "dtype": str(embeddings.dtype),
        "model": model,
    }
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint
    return write_shard_files(dir, {TENSOR_KEY: np.ascontiguousarray(embeddings)}, ids, meta)


def write_shard_files(dir: Path, tensors: dict[str, np.ndarray], ids: list[str], meta: dict) -> Path:
    """A shard's ``embeddings.safetensors`` (``tensors``), ``ids.txt`` and, last, ``meta.json``
    (``meta`` plus each file's size and checksum).

    The new files are written under temporary names before anything is replaced: a write that fails
    (a full disk, a killed job) leaves the shard that was there complete and as it was. Only for the
    two renames and the meta write is the shard incomplete, never old meta beside new data.
    """
    dir.mkdir(parents=True, exist_ok=True)
    for stale in dir.glob(".*.tmp"):  # left by a writer killed mid-file (kill -9 runs no cleanup)
        stale.unlink(missing_ok=True)
    try:
        with atomic_path(dir / EMBEDDINGS_FILE) as tensors_tmp, atomic_path(dir / IDS_FILE) as ids_tmp:
            save_file(tensors, str(tensors_tmp))
            with open(ids_tmp, "w", encoding="utf-8") as handle:
                handle.write("".join(f"{i}\n" for i in ids))
            (dir / META_FILE).unlink(missing_ok=True)
        meta = {**meta, "files": file_records(dir, [EMBEDDINGS_FILE, IDS_FILE])}
        atomic_write_text(dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    except (OSError, SafetensorError) as err:
        state = "the shard that was there is unchanged" if is_complete(dir) else "it stays incomplete"
        failure = OSError(f"{dir}: writing the shard failed ({' '.join(str(err).split())}); {state}")
        failure.errno = getattr(err, "errno", None)  # ENOSPC stays ENOSPC for a caller that checks
        raise failure from err
    return dir


def _expand(path: Path) -> list[Path]:
    """Shard folders named by ``path``: the folder itself, or the ``shard-*`` folders directly under it."""
    if not path.exists():
        raise FileNotFoundError(f"no such embeddings path: {path}")
    if not path.is_dir():
        raise ValueError(f"{path}: expected a shard folder or a folder of shard-* folders")
    if _SHARD_RE.match(path.name) or (path / META_FILE).exists() or (path / EMBEDDINGS_FILE).exists():
        return [path]
    shards = sorted(p for p in path.iterdir() if p.is_dir() and _SHARD_RE.match(p.name))
    totals = {int(_SHARD_RE.match(p.name).group(2)) for p in shards}
    if len(totals) > 1:
        raise ValueError(f"{path}: shard folders from different shardings (-of- counts {sorted(totals)})")
    if totals:
        # a missing shard would silently drop documents from the index, so insist on the full set
        (total,) = totals
        present = {int(_SHARD_RE.match(p.name).group(1)) for p in shards}
        missing = sorted(set(range(total)) - present)
        if missing:
            raise ValueError(f"{path}: missing shard {shard_dir(path, missing[0], total)} ({len(missing)} missing)")
    return shards


def read_meta(shard: Path) -> dict:
    """A complete shard's ``meta.json``, checked (count, dim, dtype); errors name the file."""
    if not is_complete(shard):
        raise ValueError(f"incomplete shard {shard}: {META_FILE} missing (the shard was not finished writing)")
    meta_path = shard / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        count, dim = int(meta["count"]), int(meta["dim"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{meta_path}: malformed shard metadata: {err}") from err
    if meta.get("dtype") not in _DTYPES:
        raise ValueError(f"{meta_path}: unsupported dtype {meta.get('dtype')!r}")
    return {**meta, "count": count, "dim": dim}


def check_kind(meta_path: Path, meta: dict, expected: str, what: str, readers: dict[str, str]) -> None:
    """Refuse ``meta`` (read from ``meta_path``) unless its ``kind`` is ``expected``: the error says
    which kind the ``what`` (shard, index) is and, from ``readers`` (kind -> how), how to read that kind."""
    kind = meta.get("kind", "single")
    if kind not in KINDS:
        raise ValueError(f"{meta_path}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if kind != expected:
        raise ValueError(f"{meta_path}: a {KINDS[kind]} {what}, not a {KINDS[expected]} one: {readers[kind]}")


SHARD_READERS = {
    "single": "read it with read_embeddings (jfe index without --multi)",
    "multi": "read it with read_multi_embeddings (jfe index --multi)",
}


def complete_shards(paths: list[str | os.PathLike] | str | os.PathLike, kind: str) -> list[tuple[Path, dict]]:
    """The shard folders ``paths`` name (see :func:`read_embeddings`) with their checked ``meta.json``,
    each complete and of ``kind``; at least one."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    shards = [s for p in paths for s in _expand(Path(p))]
    if not shards:
        raise ValueError(f"no embeddings found under {', '.join(str(p) for p in paths) or '(no paths given)'}")
    metas = [read_meta(s) for s in shards]
    for shard, meta in zip(shards, metas, strict=True):
        check_kind(shard / META_FILE, meta, kind, "shard", SHARD_READERS)
    return list(zip(shards, metas, strict=True))


def _read_ids(shard: Path, count: int) -> list[str]:
    path = shard / IDS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: missing ids file")
    ids = path.read_text(encoding="utf-8").splitlines()
    if len(ids) != count:
        raise ValueError(f"{path}: {len(ids)} ids but the shard has {count} embedding rows")
    return ids


def _load_tensor(path: Path) -> np.ndarray:
    try:
        with safe_open(str(path), framework="numpy") as f:
            if TENSOR_KEY not in f.keys():  # noqa: SIM118 - safe_open handles are not containers
                raise ValueError(f"{path}: no tensor named {TENSOR_KEY!r}")
            return f.get_tensor(TENSOR_KEY)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: truncated or damaged safetensors file: {err}") from err


def _map_tensor(path: Path) -> np.ndarray:
    """The embeddings tensor as a read-only memory map when it is float32 (else loaded).

    safetensors files are an 8-byte little-endian header size, a JSON header giving each tensor's
    dtype, shape and byte range, then the raw row-major data, so a float32 tensor maps in place.
    """
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            entry = json.loads(f.read(min(size, _MAX_HEADER)))[TENSOR_KEY]
        begin, end = (int(o) for o in entry["data_offsets"])
        shape = tuple(int(d) for d in entry["shape"])
        dtype = entry["dtype"]
    except (OSError, struct.error, ValueError, KeyError, TypeError):
        dtype = None
    if dtype != "F32" or len(shape) != 2:
        return _load_tensor(path)  # float16, or anything odd: safetensors reads it and explains what is wrong
    if end - begin != 4 * shape[0] * shape[1] or 8 + size + end > path.stat().st_size:
        raise ValueError(
            f"{path}: truncated or damaged: tensor {TENSOR_KEY!r} claims bytes {begin}..{end} "
            "that the file does not hold"
        )
    if 0 in shape:
        return np.empty(shape, dtype=np.float32)
    return np.memmap(path, dtype="<f4", mode="r", offset=8 + size + begin, shape=shape).view(np.ndarray)


def single_shards(paths: list[str | os.PathLike] | str | os.PathLike) -> list[tuple[Path, dict]]:
    """The complete single-vector shards ``paths`` name, with their metas, checked to share one dim
    and one model."""
    pairs = complete_shards(paths, "single")
    (first, m0), rest = pairs[0], pairs[1:]
    for shard, meta in rest:
        if meta["dim"] != m0["dim"]:
            raise ValueError(f"embedding dim mismatch: {first} has dim {m0['dim']}, {shard} has dim {meta['dim']}")
        if meta.get("model") != m0.get("model"):
            raise ValueError(
                f"shards from different models: {first} has {m0.get('model')!r}, {shard} has {meta.get('model')!r}"
            )
    return pairs


def shard_vectors(shard: Path, meta: dict, mapped: bool = False, verify: bool = True) -> tuple[list[str], np.ndarray]:
    """One complete shard's ids and (count, dim) vectors, sizes (and with ``verify`` checksums: the
    file is read whole anyway) checked against its meta. ``mapped`` memory-maps a float32 tensor
    instead of reading it."""
    path = shard / EMBEDDINGS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: missing embeddings file")
    check_files(shard, meta.get("files"), META_FILE, verify)
    emb = _map_tensor(path) if mapped else _load_tensor(path)
    if emb.shape != (meta["count"], meta["dim"]):
        raise ValueError(f"{path}: tensor shape {emb.shape} but {META_FILE} says ({meta['count']}, {meta['dim']})")
    return _read_ids(shard, emb.shape[0]), emb


def iter_shards(
    pairs: list[tuple[Path, dict]], mapped: bool = False, check_duplicates: bool = True, verify: bool = True
) -> Iterator[tuple[Path, list[str], np.ndarray]]:
    """(shard, ids, vectors) of each of ``pairs`` in turn, one shard in memory at a time; an id met in
    two shards is an error naming both (unless the caller checks that itself: ``check_duplicates``).
    ``verify``: checksums too (see :func:`shard_vectors`)."""
    owner: dict[str, Path] = {}
    for shard, meta in pairs:
        ids, emb = shard_vectors(shard, meta, mapped, verify)
        if check_duplicates:
            for i in ids:
                if i in owner:
                    raise ValueError(f"duplicate id {i!r} in {owner[i]} and {shard}")
                owner[i] = shard
        yield shard, ids, emb


def check_unique_ids(pairs: list[tuple[Path, dict]], hashes: np.ndarray) -> None:
    """Refuse an id found in two of the shards ``pairs``, given the ``hash()`` of every id in order:
    eight bytes an id instead of a dictionary of them, with the ids of colliding hashes reread to
    tell a real duplicate from a collision."""
    ordered = np.sort(hashes)
    clashes = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not clashes:
        return
    owner: dict[str, Path] = {}
    for shard, meta in pairs:
        for i in _read_ids(shard, meta["count"]):
            if hash(i) in clashes:
                if i in owner:
                    raise ValueError(f"duplicate id {i!r} in {owner[i]} and {shard}")
                owner[i] = shard


def sample_rows(pairs: list[tuple[Path, dict]], rows: np.ndarray | slice) -> np.ndarray:
    """The float32 vectors at global ``rows`` of the shards' concatenation, read one shard at a time
    (shards holding none of them are not opened)."""
    total = sum(m["count"] for _, m in pairs)
    wanted = np.arange(total) if isinstance(rows, slice) else rows
    parts, start = [], 0
    for shard, meta in pairs:
        end = start + meta["count"]
        mine = wanted[(wanted >= start) & (wanted < end)] - start
        if len(mine):
            _, vectors = shard_vectors(shard, meta, mapped=True, verify=False)
            parts.append(np.asarray(vectors[mine], dtype=np.float32))
        start = end
    return np.concatenate(parts) if parts else np.empty((0, pairs[0][1]["dim"]), dtype=np.float32)


def read_embeddings(paths: list[str | os.PathLike] | str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read and concatenate shards (in the given order; shard-* folders under a parent in sorted order).

    Returns the ids and a float32 (N, D) array. A single float32 shard comes back memory-mapped and
    read-only: indexing a large pool then costs no second gigabyte-sized copy, pages are read as
    FAISS touches them. Several shards (or float16) are copied into one writable array.
    """
    return concatenate(single_shards(paths))


def concatenate(pairs: list[tuple[Path, dict]]) -> tuple[list[str], np.ndarray]:
    """:func:`read_embeddings` of the shards :func:`single_shards` found."""
    total, dim = sum(m["count"] for _, m in pairs), pairs[0][1]["dim"]
    if len(pairs) == 1:
        ((_, ids, emb),) = iter_shards(pairs, mapped=True)
        return ids, emb.astype(np.float32, copy=False)
    # several are copied into one array, shard by shard, so peak memory stays the result plus one shard
    out = np.empty((total, dim), dtype=np.float32)
    all_ids: list[str] = []
    for _, ids, emb in iter_shards(pairs):
        out[len(all_ids) : len(all_ids) + len(ids)] = emb
        all_ids.extend(ids)
    return all_ids, out
