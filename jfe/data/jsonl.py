"""JSONL reading with fixed column types, so a file reads the same whatever order its rows come in.

Arrow's JSON reader reads every line against an explicit schema: a field absent from a line is
null there, a field the schema does not name is ignored, and nothing is inferred from the first
rows (``datasets`` fixes a column's type from the first block, so a field that is null for the
first ~10 MB and set later cannot be read that way). Errors name ``file:line``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from jfe.atomic import atomic_path

logger = logging.getLogger(__name__)

# Arrow parses in blocks and needs every line inside one; a longer line retries with larger blocks.
BLOCK_BYTES = 16 << 20
# Files at least this large are served memory-mapped from an Arrow copy in jfe's cache (one per file
# version, shared by every rank of a run, and reused by the next run) instead of from each process's memory.
MMAP_BYTES = 64 << 20


class DataFormatError(ValueError):
    """A data file that cannot be read as documented; the message names ``file:line``."""


def json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line; a line that is not JSON (or not UTF-8) raises
    :class:`DataFormatError` naming ``file:line``."""
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                # a byte-order mark is allowed on the first line, as Arrow's reader allows it
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(f"{path}:{lineno}: not UTF-8 ({err.reason} at byte {err.start})") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return json.dumps(value)
    kinds = {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}
    shown = json.dumps(value)
    return f"{kinds.get(type(value), type(value).__name__)} ({shown[:40] + '...' if len(shown) > 40 else shown})"


def _wanted(kind: pa.DataType) -> str:
    if pa.types.is_list(kind):
        return f"a list of {_wanted(kind.value_type).split(' ', 1)[1]}s"
    if pa.types.is_struct(kind):
        return "an object"
    return "an integer" if pa.types.is_integer(kind) else "a string"


def type_problem(value: Any, kind: pa.DataType, where: str) -> str | None:
    """Why ``value`` (parsed JSON) does not fit ``kind`` (null always fits), or None. Nothing is cast:
    an id written as a number is reported, not turned into a string that may not be the id meant."""
    if value is None:
        return None
    if pa.types.is_list(kind):
        if isinstance(value, list):
            inner = (type_problem(v, kind.value_type, f"{where}[{i}]") for i, v in enumerate(value))
            return next((p for p in inner if p), None)
    elif pa.types.is_struct(kind):
        if isinstance(value, dict):
            inner = (type_problem(value.get(f.name), f.type, f"{where}.{f.name}") for f in kind)
            return next((p for p in inner if p), None)
    elif pa.types.is_integer(kind):
        if isinstance(value, int) and not isinstance(value, bool):
            return None
    elif isinstance(value, str):  # the schemas hold strings, integers, lists and objects only
        return None
    return f"'{where}' should be {_wanted(kind)}, got {_json_kind(value)}"


def find_bad_line(path: str | os.PathLike, required: Iterable[str] = (), schema: pa.Schema | None = None) -> str | None:
    """Scan ``path`` line by line; describe the first line that is not a JSON object with ``required``,
    or whose fields do not have the types of ``schema``."""
    required = list(required)
    try:
        for lineno, obj in json_lines(path):
            if not isinstance(obj, dict):
                return f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
            missing = [key for key in required if key not in obj]
            if missing:
                return f"{path}:{lineno}: missing key(s) {missing}"
            for field in schema or ():
                problem = type_problem(obj.get(field.name), field.type, field.name)
                if problem:
                    return f"{path}:{lineno}: {problem}"
    except DataFormatError as err:
        return str(err)
    return None


def _parse(path: Path, schema: pa.Schema) -> pa.Table:
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    block = BLOCK_BYTES
    while True:
        try:
            table = pj.read_json(path, read_options=pj.ReadOptions(block_size=block), parse_options=options)
            table.validate(full=True)  # the reader passes invalid UTF-8 on into strings; catch it here
            return table
        except pa.ArrowInvalid as err:
            if "straddl" in str(err) and block < path.stat().st_size:
                block *= 4  # one line is longer than a block
                continue
            # Arrow's messages count rows per block; locate the line ourselves
            problem = find_bad_line(path, schema=schema)
            if problem is None and not any(True for _ in json_lines(path)):
                problem = f"{path}: no records"
            raise DataFormatError(problem or f"{path}: cannot be read as JSONL ({err})") from None


def read_jsonl(path: str | os.PathLike, schema: pa.Schema, not_null: Iterable[str] = ()) -> pa.Table:
    """The fields of ``schema`` of every record of ``path``, typed as ``schema`` says, in file order.

    Fields the schema does not name are ignored; an absent field is null. A malformed line, a field
    of another type, or a null/absent field of ``not_null`` raises :class:`DataFormatError` naming
    ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: no records")
    table = _parse(path, schema)
    if table.num_rows == 0:
        raise DataFormatError(f"{path}: no records")
    not_null = list(not_null)
    if not_null:
        nulls = functools.reduce(pc.or_, [pc.is_null(table.column(key)) for key in not_null])
        row = pc.index(nulls, True).as_py()
        if row >= 0:
            absent = [key for key in not_null if table.column(key)[row].as_py() is None]
            raise DataFormatError(f"{path}:{line_of_row(path, row)}: missing key(s) {absent}")
    return table


def _cached_copy(path: Path, schema: pa.Schema, not_null: list[str]) -> Path:
    """Where the Arrow copy of this version of ``path`` (size and modification time) lives."""
    from jfe.cache import cache_dir

    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{schema}\0{not_null}"
    return cache_dir() / "jsonl-arrow" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.arrow"


def load_jsonl(path: str | os.PathLike, schema: pa.Schema, not_null: Iterable[str] = ()) -> datasets.Dataset:
    """:func:`read_jsonl` as a `datasets` table; a file of ``MMAP_BYTES`` or more is memory-mapped
    from its Arrow copy in jfe's cache (written on first read), so a large pool stays on disk."""
    path, not_null = Path(path), list(not_null)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.stat().st_size < MMAP_BYTES:
        return datasets.Dataset(read_jsonl(path, schema, not_null))
    copy = _cached_copy(path, schema, not_null)
    if copy.is_file():  # written only after the file was read and checked
        return datasets.Dataset.from_file(str(copy))
    table = read_jsonl(path, schema, not_null)
    try:
        # ranks that race here each write a whole copy and rename it into place: any one is complete
        with (
            atomic_path(copy) as tmp,
            pa.OSFile(str(tmp), "wb") as sink,
            pa.ipc.new_stream(sink, table.schema) as writer,
        ):
            writer.write_table(table)
    except OSError as err:
        logger.warning("cannot write the Arrow copy of %s (%s): keeping it in memory", path, err)
        return datasets.Dataset(table)
    return datasets.Dataset.from_file(str(copy))


def line_of_row(path: str | os.PathLike, row: int) -> int:
    """1-based line number of the ``row``-th record (blank lines are skipped by the loader)."""
    seen = -1
    with open(path, "rb") as handle:
        for lineno, line in enumerate(handle, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno
    return row + 1
