"""Sizes and checksums of the files a shard or an index folder holds, recorded in its meta when written.

Sizes are checked on every load (a truncated or replaced file is caught at once, at no cost);
checksums when the whole file is read anyway (indexing reads every shard) or when asked
(``jfe search --verify``), so a memory-mapped index still opens instantly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 4 * 2**20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_records(folder: Path, names: list[str]) -> dict[str, dict]:
    """``{name: {"bytes", "sha256"}}`` of the files ``names`` in ``folder``, for a meta file."""
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)} for name in names}


def check_files(folder: Path, records: dict | None, meta_name: str, verify: bool) -> None:
    """Compare ``folder``'s files with the ``records`` its ``meta_name`` holds: sizes always, checksums
    when ``verify``. Folders written before records existed (``records`` None) pass."""
    for name, record in (records or {}).items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{path}: missing ({meta_name} lists it)")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise ValueError(
                f"{path}: {size} bytes but {meta_name} records {record['bytes']}: the file was truncated or replaced"
            )
        if verify and sha256_file(path) != record["sha256"]:
            raise ValueError(f"{path}: its checksum differs from the one {meta_name} records: the file is damaged")
