"""pool_read_speedup: rows a second that ``jfe encode`` reads a candidate pool into items at
(:class:`jfe.retrieval.items.PoolItems`, column by column) / rows a second read one row at a time
(``pool[did]``, which the pool's records came from before), on a synthetic M-BEIR-like pool."""

from __future__ import annotations

import json
import time
from pathlib import Path

ROW_WISE_SAMPLE = 20_000  # the slow path is timed on this many rows, not the whole pool


def write_pool(path: Path, n: int) -> Path:
    """``n`` candidates: half with an image, a third of those without text, as M-BEIR's union pool mixes them."""
    with open(path, "w") as out:
        for i in range(n):
            image = f"mbeir_images/set/{i}.jpg" if i % 2 else None
            text = "" if image and i % 3 == 0 else f"candidate {i}: a short caption of the kind pools hold"
            modality = "image" if not text else "image,text" if image else "text"
            out.write(json.dumps({"did": f"9:{i}", "txt": text, "img_path": image, "modality": modality}) + "\n")
    return path


def measure(n: int, workdir: Path) -> dict:
    from jfe.data.mbeir import CandidatePool
    from jfe.retrieval.items import read_items

    workdir.mkdir(parents=True, exist_ok=True)
    path = write_pool(workdir / "pool.jsonl", n)
    read_items(path, workdir)  # the JSON -> Arrow conversion, once, as for any pool read twice
    start = time.perf_counter()
    items = read_items(path, workdir)
    loaded = time.perf_counter()
    whole = items[:]
    column_s = time.perf_counter() - loaded
    pool = CandidatePool.load(path, workdir)
    dids = [item.id for item in whole[:ROW_WISE_SAMPLE]]
    start_rows = time.perf_counter()
    rows = [pool[did] for did in dids]
    row_s = time.perf_counter() - start_rows
    assert [r.image for r in rows] == [item.image for item in whole[: len(rows)]]
    column_rate, row_rate = n / column_s, len(dids) / row_s
    return {"pool_read_speedup": column_rate / row_rate, "pool_rows_per_s": column_rate,
            "pool_row_wise_rows_per_s": row_rate, "pool_load_seconds": loaded - start, "pool_rows": n}  # fmt: skip
