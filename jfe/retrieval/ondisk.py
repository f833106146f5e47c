"""IVF indexes built out of core: peak memory is one shard plus the coarse quantizer, whatever the pool.

The quantizer is trained on a seeded sample drawn shard by shard; each shard is then added to its
own copy of the trained, empty index and written as a block; FAISS's ``merge_ondisk`` merges the
blocks' inverted lists into one ``index.ivfdata`` file that searches map rather than read. Blocks
are kept in ``OUT/.blocks`` until the merge ends, so a killed build redoes only the missing ones.

Flat and HNSW indexes cannot be built this way: they keep every vector (or the whole graph) in one
in-memory structure, which is why ``jfe index --on-disk`` refuses them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from jfe.atomic import atomic_open, atomic_path, atomic_write_text
from jfe.retrieval.index import (
    IDS_FILE,
    INDEX_FILE,
    IVFDATA_FILE,
    META_FILE,
    _faiss_message,
    check_id_text,
    index_fields,
    training_rows,
    write_index_meta,
)
from jfe.retrieval.shards import check_unique_ids, iter_shards, sample_rows

BLOCKS_DIR = ".blocks"


def empty_ivf(factory: str, dim: int) -> faiss.Index:
    """``faiss.index_factory(dim, factory)`` for inner product, refused unless it is an IVF index."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"invalid FAISS factory string {factory!r}: {_faiss_message(err)}") from err
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is None or isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQR):
        raise ValueError(
            f"--on-disk builds IVF indexes only (e.g. IVF4096,Flat or IVF4096,PQ64), not {factory!r}: Flat and "
            "HNSW keep every vector in one in-memory structure; build those without --on-disk"
        )
    return index


def build_on_disk(
    pairs: list[tuple[Path, dict]],
    out_dir: Path,
    factory: str,
    train_size: int = 100_000,
    seed: int = 0,
    extra: dict | None = None,
) -> dict:
    """Build ``factory`` (an IVF type) from the shards ``pairs`` (from
    :func:`jfe.retrieval.shards.single_shards`) into ``out_dir``; returns the written ``index.json``."""
    dim, total = pairs[0][1]["dim"], sum(m["count"] for _, m in pairs)
    trained = empty_ivf(factory, dim)
    blocks = out_dir / BLOCKS_DIR
    plan = {"factory": factory, "train_size": train_size, "seed": seed,
            "shards": [[str(s.resolve()), m["count"], m.get("files")] for s, m in pairs]}  # fmt: skip
    plan_path = blocks / "plan.json"
    if plan_path.is_file() and json.loads(plan_path.read_text()) != plan:
        shutil.rmtree(blocks)  # blocks of another build (other shards, factory or sample) never mix in
    blocks.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)
    atomic_write_text(plan_path, json.dumps(plan) + "\n")

    trained_path = blocks / "trained.index"
    if not trained_path.is_file():
        sample = sample_rows(pairs, training_rows(total, train_size, seed))
        try:
            trained.train(sample)
        except RuntimeError as err:
            raise ValueError(f"training {factory!r} on {len(sample)} vectors failed: {_faiss_message(err)}") from err
        del sample
        with atomic_path(trained_path) as tmp:
            faiss.write_index(trained, str(tmp))

    # ids go straight to ids.txt and only their hashes stay in memory: 8 bytes an id, not a string
    names, hashes, start = [], [], 0
    with atomic_open(out_dir / IDS_FILE) as ids_file:
        shards = iter_shards(pairs, mapped=True, check_duplicates=False)
        for i, (_, shard_ids, vectors) in enumerate(tqdm(shards, total=len(pairs), desc="index blocks", unit="shard")):
            block = blocks / f"block-{i:05d}.index"
            if not block.is_file():
                index = faiss.read_index(str(trained_path))
                # FAISS positions stay global: line i of ids.txt names position i, as for an in-memory index
                index.add_with_ids(np.asarray(vectors, dtype=np.float32), np.arange(start, start + len(vectors)))
                with atomic_path(block) as tmp:
                    faiss.write_index(index, str(tmp))
                del index
            names.append(str(block))
            check_id_text(shard_ids, out_dir)
            ids_file.write("".join(f"{i}\n" for i in shard_ids))
            hashes.append(np.fromiter((hash(i) for i in shard_ids), dtype=np.int64, count=len(shard_ids)))
            start += len(vectors)
        check_unique_ids(pairs, np.concatenate(hashes))
    del hashes

    merged = faiss.read_index(str(trained_path))
    (out_dir / IVFDATA_FILE).unlink(missing_ok=True)
    from faiss.contrib.ondisk import merge_ondisk

    merge_ondisk(merged, names, str(out_dir / IVFDATA_FILE))
    with atomic_path(out_dir / INDEX_FILE) as tmp:
        faiss.write_index(merged, str(tmp))
    fields = {**index_fields(merged, factory), "storage": "on_disk", "shards": len(pairs), **(extra or {})}
    del merged  # unmaps index.ivfdata, so its checksum below reads what is on disk
    write_index_meta(out_dir, fields, [INDEX_FILE, IVFDATA_FILE, IDS_FILE])
    shutil.rmtree(blocks)
    return json.loads((out_dir / META_FILE).read_text())
