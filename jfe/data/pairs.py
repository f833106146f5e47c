"""The simple pair format for users' own data, one JSON object per line::

    {"query": {"text": "...", "image": "q.png"}, "pos": [{"text": "..."}], "neg": [{"image": "n.png"}],
     "instruction": "Retrieve ..."}

``neg`` and ``instruction`` are optional; ``task`` (optional) groups lines into task-homogeneous
batches and defaults to the file name. Candidates get content-derived ids, so the same candidate
appearing in several lines is one candidate.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from jfe.data.jsonl import DataFormatError, line_of_row, read_jsonl
from jfe.data.mbeir import Query, Record, dataset_id_of, image_resolver

# Fixed types, as for M-BEIR (jfe.data.mbeir): an optional field first set late in a large file
# reads like any other, and fields not named here are ignored.
_ITEM = pa.struct([("text", pa.string()), ("image", pa.string())])
PAIR_SCHEMA = pa.schema(
    [
        ("query", _ITEM),
        ("pos", pa.list_(_ITEM)),
        ("neg", pa.list_(_ITEM)),
        ("instruction", pa.string()),
        ("task", pa.string()),
    ]
)


def _modality(text: str | None, image: str | None) -> str:
    return ",".join(m for m, v in (("image", image), ("text", text)) if v)


class InMemoryPool:
    """A candidate pool held in a dict; the same interface as :class:`jfe.data.mbeir.CandidatePool`."""

    def __init__(self, records: dict[str, Record]):
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, did: str) -> bool:
        return did in self._records

    def __getitem__(self, did: str) -> Record:
        return self._records[did]

    def records(self) -> list[Record]:
        return list(self._records.values())

    def dids_by_dataset(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = defaultdict(list)
        for did in self._records:
            groups[dataset_id_of(did)].append(did)
        return dict(groups)


class _RowError(ValueError):
    """A problem inside one record; turned into ``file:line`` by :func:`load_pairs`."""


def _item(obj, where: str, root: Path | None, confine: bool = False) -> tuple[str | None, str | None]:
    if not isinstance(obj, dict):
        raise _RowError(f"{where} must be an object with 'text' and/or 'image'")
    text, image = obj.get("text") or None, obj.get("image") or None
    if text is None and image is None:
        raise _RowError(f"{where} has neither text nor image")
    if image is not None and root is not None:
        if confine:
            try:
                image_resolver(root)(image)  # refuses a path that leaves the images root
            except DataFormatError as err:
                raise _RowError(f"{where}: {err}") from None
        image = os.fspath(root / image)
    return text, image


def _candidates(
    items, key: str, task: str, root: Path | None, pool: dict[str, Record], confine: bool = False
) -> tuple[str, ...]:
    if items is None:
        return ()
    ids = []
    for j, cand in enumerate(items):
        text, image = _item(cand, f"{key}[{j}]", root, confine)
        digest = hashlib.sha1(f"{text}\0{image}".encode()).hexdigest()[:16]
        did = f"{task}:{digest}"
        pool.setdefault(did, Record(did, text, image, _modality(text, image)))
        ids.append(did)
    return tuple(ids)


def _query(
    row: dict, row_index: int, default_task: str, root: Path | None, pool: dict[str, Record], confine: bool = False
) -> Query:
    task = row.get("task") or default_task
    text, image = _item(row["query"], "query", root, confine)
    positives = _candidates(row["pos"], "pos", task, root, pool, confine)
    if not positives:
        raise _RowError("'pos' needs at least one candidate")
    return Query(
        id=f"{task}:q{row_index}",
        text=text,
        image=image,
        modality=_modality(text, image),
        positives=positives,
        negatives=_candidates(row.get("neg"), "neg", task, root, pool, confine),
        dataset=task,
        instruction=row.get("instruction") or None,
    )


def load_pairs(
    path: str | os.PathLike, images_root: str | os.PathLike | None = None
) -> tuple[list[Query], InMemoryPool]:
    """Queries (with positives/negatives as candidate ids) and the pool of every candidate.

    Image paths are relative to ``images_root`` (default: the file's folder). Given an
    ``images_root``, a path that leaves it is an error (the author of a pair file next to its
    images may point anywhere, "../images/x.png" included)."""
    path = Path(path)
    root = Path(images_root) if images_root else path.parent
    table = read_jsonl(path, PAIR_SCHEMA, ("query", "pos"))
    pool: dict[str, Record] = {}
    queries = []
    for row_index, row in enumerate(table.to_pylist()):
        try:
            queries.append(_query(row, row_index, path.stem, root, pool, confine=images_root is not None))
        except _RowError as err:
            raise DataFormatError(f"{path}:{line_of_row(path, row_index)}: {err}") from None
    return queries, InMemoryPool(pool)
