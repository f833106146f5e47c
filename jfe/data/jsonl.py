"""JSONL loading through `datasets`, with errors that point at ``file:line``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import datasets

# one progress bar per small JSONL file is noise in every command's output
datasets.disable_progress_bars()


class DataFormatError(ValueError):
    """A data file that cannot be read as documented; the message names ``file:line``."""


def json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line; a line that is not JSON raises
    :class:`DataFormatError` naming ``file:line``."""
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None


def find_bad_line(path: str | os.PathLike, required: Iterable[str] = ()) -> str | None:
    """Scan ``path`` line by line; describe the first line that is not a JSON object with ``required``."""
    required = list(required)
    try:
        for lineno, obj in json_lines(path):
            if not isinstance(obj, dict):
                return f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
            missing = [key for key in required if key not in obj]
            if missing:
                return f"{path}:{lineno}: missing key(s) {missing}"
    except DataFormatError as err:
        return str(err)
    return None


def load_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> datasets.Dataset:
    """Load a JSONL file as a `datasets` table (memory-mapped Arrow, so a large pool stays on disk).

    Malformed lines and missing keys raise :class:`DataFormatError` naming ``file:line``.
    """
    path = Path(path)
    required = list(required)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        table = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as err:  # datasets wraps parser errors in several types; locate the line ourselves
        problem = find_bad_line(path, required)
        raise DataFormatError(problem or f"{path}: cannot be read as JSONL ({err})") from err
    columns = table.column_names
    if any(key not in columns for key in required):
        problem = find_bad_line(path, required)
        raise DataFormatError(problem or f"{path}: missing column(s) {[k for k in required if k not in columns]}")
    if len(table) == 0:
        raise DataFormatError(f"{path}: no records")
    return table


def line_of_row(path: str | os.PathLike, row: int) -> int:
    """1-based line number of the ``row``-th record (blank lines are skipped by the loader)."""
    seen = -1
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno
    return row + 1
