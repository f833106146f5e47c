"""FAISS inner-product indexes: build (any ``index_factory`` string), save, load, tune search parameters.

FAISS stores positions 0..N-1; the string ids live beside the index in ``ids.txt`` (position i -> line i).
Embeddings are expected to be L2-normalised already, so inner product is cosine similarity.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from jfe.atomic import atomic_path, atomic_write_text
from jfe.checksums import check_files, file_records
from jfe.retrieval.shards import check_kind

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.txt"
META_FILE = "index.json"
# an IVF index built out of core (jfe.retrieval.ondisk) keeps its inverted lists in this file beside it
IVFDATA_FILE = "index.ivfdata"
_ADD_CHUNK = 65536
# how to load each kind of index folder (index.json's "kind"; none means single)
INDEX_READERS = {
    "single": "load it with jfe.retrieval.index.load_index",
    "multi": "load it with jfe.retrieval.multi_index.load_multi_index",
}


def _faiss_message(err: Exception) -> str:
    """FAISS errors start with the C++ signature and source location; keep only the human part."""
    msg = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", msg)


def _num_gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return get() if get is not None else 0


def _maybe_to_gpu(index: faiss.Index, use_gpu: bool | None) -> faiss.Index:
    """Move to all GPUs when asked (True) or when available (None); faiss-cpu builds simply stay on CPU."""
    if use_gpu is False:
        return index
    if _num_gpus() == 0 or not hasattr(faiss, "index_cpu_to_all_gpus"):
        if use_gpu:
            warnings.warn("use_gpu=True but FAISS sees no GPU (faiss-cpu build?); staying on CPU", stacklevel=3)
        return index
    try:
        options = faiss.GpuMultipleClonerOptions()
        # several GPUs each hold 1/n of the vectors (FAISS merges their results) rather than n copies
        options.shard = _num_gpus() > 1
        return faiss.index_cpu_to_all_gpus(index, co=options)
    except RuntimeError as err:
        # not every index type has a GPU implementation (HNSW has none); with use_gpu=None that is not an error
        if use_gpu:
            raise ValueError(f"cannot move this index to GPU: {_faiss_message(err)}") from err
        return index


def _to_cpu(index: faiss.Index) -> faiss.Index:
    if _num_gpus() > 0 and hasattr(faiss, "index_gpu_to_cpu"):
        return faiss.index_gpu_to_cpu(index)
    return index


def _as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} must be floating point, got {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def training_rows(n: int, train_size: int, seed: int = 0) -> np.ndarray | slice:
    """The rows :func:`build_index` trains on: a seeded sample of ``train_size`` of ``n``, or all."""
    if n <= train_size:
        return slice(None)
    # sorted: sequential memory access
    return np.sort(np.random.default_rng(seed).choice(n, size=train_size, replace=False))


def build_index(
    embeddings: np.ndarray,
    ids: list[str],
    factory: str = "Flat",
    train_size: int = 100_000,
    seed: int = 0,
    use_gpu: bool | None = None,
) -> faiss.Index:
    """Build an inner-product index from ``faiss.index_factory(dim, factory)``, trained on a seeded sample if needed."""
    x = _as_matrix(embeddings, "embeddings")
    n, dim = x.shape
    if n == 0 or dim == 0:
        raise ValueError(f"cannot build an index from empty embeddings (shape {x.shape})")
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} embedding rows")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"duplicate id {i!r}")
        seen.add(i)
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"invalid FAISS factory string {factory!r}: {_faiss_message(err)}") from err
    index = _maybe_to_gpu(index, use_gpu)
    if not index.is_trained:
        if train_size < 1:
            raise ValueError(f"factory {factory!r} needs training but train_size is {train_size}")
        try:
            index.train(x[training_rows(n, train_size, seed)])
        except RuntimeError as err:
            raise ValueError(
                f"training factory {factory!r} on {min(train_size, n)} vectors failed: {_faiss_message(err)}"
            ) from err
    for start in tqdm(range(0, n, _ADD_CHUNK), desc="index add", unit="chunk", disable=n <= _ADD_CHUNK):
        index.add(x[start : start + _ADD_CHUNK])
    return index


def save_index(
    index: faiss.Index,
    ids: list[str],
    out_dir: str | os.PathLike,
    factory: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``index.faiss``, ``ids.txt`` and, last (completion marker), ``index.json`` into ``out_dir``.

    ``factory`` is recorded in ``index.json``; FAISS objects cannot carry it, so pass the string used
    to build. ``extra`` adds fields to it (the search parameters a recall target picked).
    """
    out_dir = Path(out_dir)
    if len(ids) != index.ntotal:
        raise ValueError(f"{out_dir}: {len(ids)} ids for an index holding {index.ntotal} vectors")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)
    write_ids(out_dir, ids)
    cpu = _to_cpu(index)
    with atomic_path(out_dir / INDEX_FILE) as tmp:
        faiss.write_index(cpu, str(tmp))
    write_index_meta(out_dir, {**index_fields(cpu, factory), **(extra or {})}, [INDEX_FILE, IDS_FILE])
    return out_dir


def check_id_text(ids: list[str], out_dir: Path) -> None:
    """Refuse an id that ``ids.txt`` (one id a line) could not hold."""
    bad = next((i for i in ids if not i or "\n" in i or i != i.strip()), None)
    if bad is not None:
        raise ValueError(f"{out_dir}: invalid id {bad!r}")


def write_ids(out_dir: Path, ids: list[str]) -> None:
    """``ids.txt``: position i of the index is line i."""
    check_id_text(ids, out_dir)
    atomic_write_text(out_dir / IDS_FILE, "".join(f"{i}\n" for i in ids))


def index_fields(index: faiss.Index, factory: str | None) -> dict:
    """What ``index.json`` says of an index: factory string, FAISS type, dim, count, metric."""
    return {
        "factory": factory,
        "index_type": type(faiss.downcast_index(index)).__name__,
        "dim": int(index.d),
        "count": int(index.ntotal),
        "metric": "inner_product",
    }


def write_index_meta(out_dir: Path, fields: dict, files: list[str]) -> None:
    """``index.json``, written last (the completion marker): ``fields`` and the size and checksum of
    each of ``files``."""
    meta = {**fields, "files": file_records(out_dir, files)}
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2) + "\n")


def update_index_meta(out_dir: Path, fields: dict) -> dict:
    """Add ``fields`` to a complete index's ``index.json`` (atomically); returns the new meta."""
    meta = {**json.loads((out_dir / META_FILE).read_text(encoding="utf-8")), **fields}
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


def read_index_meta(dir: Path, kind: str) -> dict:
    """``dir``'s ``index.json``, checked: complete, of ``kind`` ("single" or "multi"), inner product,
    integer count and dim. Errors name the file."""
    meta_path = dir / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} missing: {dir} is not a saved index (or saving did not finish)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise TypeError(f"a JSON {type(meta).__name__}, not an object")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{meta_path}: malformed index metadata: {err}") from err
    # the kind first: the other kind's fields are not this one's
    check_kind(meta_path, meta, kind, "index", INDEX_READERS)
    try:
        meta = {**meta, "count": int(meta["count"]), "dim": int(meta["dim"])}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{meta_path}: malformed index metadata: {err}") from err
    if meta.get("metric") != "inner_product":
        raise ValueError(f"{meta_path}: unsupported metric {meta.get('metric')!r}")
    return meta


def read_faiss(path: Path, mmap: bool = False, on_disk: bool = False) -> faiss.Index:
    """A FAISS index file, its IVF lists mapped rather than read with ``mmap`` (an ``on_disk`` index's
    lists are always mapped, from the ``.ivfdata`` file beside it); errors name the file."""
    # read-only: a search never writes the lists, and the index may sit on a read-only mount
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY if on_disk else faiss.IO_FLAG_MMAP if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as err:
        raise ValueError(f"{path}: cannot read FAISS index: {_faiss_message(err)}") from err


def load_index(
    dir: str | os.PathLike, use_gpu: bool | None = False, mmap: bool = False, verify: bool = False
) -> tuple[faiss.Index, list[str], dict]:
    """Load an index saved by :func:`save_index` (or built on disk); returns (index, ids, meta).

    ``mmap`` maps IVF lists from the file instead of reading them: loading is instant and only the
    lists that queries visit are paged in, which wins for one run of up to tens of thousands of
    queries; each search is slower (about 1.5x at IVF4000 nprobe 8 here), so a long-lived process
    or a very large query set should read. Index types FAISS cannot map are read either way.

    Every file's size is checked against ``index.json`` and the id map's checksum too (it is read
    whole anyway); ``verify`` checks the index files' checksums as well, which reads them once.
    """
    dir = Path(dir)
    meta = read_index_meta(dir, "single")
    count, dim = meta["count"], meta["dim"]
    records = dict(meta.get("files") or {})
    ids_record = {IDS_FILE: records.pop(IDS_FILE)} if IDS_FILE in records else None
    check_files(dir, records, META_FILE, verify)
    check_files(dir, ids_record, META_FILE, verify=True)
    index = read_faiss(dir / INDEX_FILE, mmap, on_disk=meta.get("storage") == "on_disk")
    ids = (dir / IDS_FILE).read_text(encoding="utf-8").splitlines()
    if index.ntotal != count or index.d != dim:
        raise ValueError(f"{dir / INDEX_FILE}: holds {index.ntotal}x{index.d} but {META_FILE} says {count}x{dim}")
    if len(ids) != count:
        raise ValueError(f"{dir / IDS_FILE}: {len(ids)} ids but the index holds {count} vectors")
    return _maybe_to_gpu(index, use_gpu), ids, meta


def set_search_params(index: faiss.Index, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Set IVF ``nprobe`` and/or HNSW ``efSearch``; raises ValueError if the index has no such parameter."""
    # ParameterSpace sees through wrappers (IndexPreTransform, IndexRefine, ...) that direct attributes would miss
    gpu_space = getattr(faiss, "GpuParameterSpace", None)
    space = gpu_space() if gpu_space is not None and _num_gpus() > 0 else faiss.ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        if value is None:
            continue
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        try:
            space.set_index_parameter(index, name, int(value))
        except RuntimeError as err:
            kind = type(faiss.downcast_index(index)).__name__ if isinstance(index, faiss.Index) else type(index)
            raise ValueError(f"cannot set {name} on a {kind} index: {_faiss_message(err)}") from err
