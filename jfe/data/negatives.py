"""The mined-negatives file training reads (``negatives_file``) and ``jfe mine`` writes:
one JSON line per query, ``{"qid": ..., "neg_dids": [...]}``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from jfe.atomic import atomic_open
from jfe.data.jsonl import DataFormatError, json_lines


def write_mined(path: str | os.PathLike, mined: dict[str, list[str]]) -> Path:
    """One JSON line per query: ``{"qid": ..., "neg_dids": [...]}``, written atomically."""
    path = Path(path)
    with atomic_open(path, "w") as f:
        for qid, dids in mined.items():
            f.write(json.dumps({"qid": qid, "neg_dids": list(dids)}, ensure_ascii=False) + "\n")
    return path


def read_mined(path: str | os.PathLike) -> dict[str, list[str]]:
    """Query id -> mined negative dids, in file order; a bad line raises naming ``file:line``."""
    path = Path(path)
    mined: dict[str, list[str]] = {}
    for lineno, obj in json_lines(path):
        qid, dids = (obj.get("qid"), obj.get("neg_dids")) if isinstance(obj, dict) else (None, None)
        if not isinstance(qid, str) or not isinstance(dids, list) or not all(isinstance(d, str) for d in dids):
            raise DataFormatError(f'{path}:{lineno}: expected {{"qid": str, "neg_dids": [str, ...]}}')
        if qid in mined:
            raise DataFormatError(f"{path}:{lineno}: query {qid!r} appears twice")
        mined[qid] = dids
    return mined
