"""JSONL reading: fixed types whatever the row order, unknown fields ignored, errors at file:line."""

import json

import pyarrow as pa
import pytest

from jfe.data import jsonl
from jfe.data.jsonl import DataFormatError, load_jsonl, read_jsonl

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("ids", pa.list_(pa.string())), ("n", pa.int64())])


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_a_field_absent_or_null_at_first_reads_typed_and_unknown_fields_are_ignored(tmp_path):
    path = _write(
        tmp_path / "a.jsonl",
        [
            {"id": "1:1", "extra": {"nested": [1, 2]}},  # text, ids, n absent; an unknown object
            {"id": "1:2", "text": None, "ids": None, "extra": "now a string"},
            "",  # blank lines are skipped
            {"id": "1:3", "text": "set", "ids": ["1:9", "1:10"], "n": 7, "other": [{"x": 1}]},
        ],
    )
    table = read_jsonl(path, SCHEMA)
    assert table.schema == SCHEMA
    assert table.to_pylist() == [
        {"id": "1:1", "text": None, "ids": None, "n": None},
        {"id": "1:2", "text": None, "ids": None, "n": None},
        {"id": "1:3", "text": "set", "ids": ["1:9", "1:10"], "n": 7},
    ]
    assert load_jsonl(path, SCHEMA)[2] == {"id": "1:3", "text": "set", "ids": ["1:9", "1:10"], "n": 7}


def test_a_malformed_line_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [{"id": "1"}, "", {"id": "2"}, '{"id": "3", oops}'])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:4: not valid JSON"):
        read_jsonl(path, SCHEMA)
    _write(path, [{"id": "1"}, "[1, 2]"])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: expected a JSON object, got list"):
        read_jsonl(path, SCHEMA)
    path.write_bytes(b'{"id": "1"}\n{"id": "\xff"}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: not UTF-8"):
        read_jsonl(path, SCHEMA)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": 5}, r"'id' should be a string, got a number \(5\)"),  # ids are never cast: say so
        ({"id": "1", "text": ["a"]}, r"'text' should be a string, got a list \(\[\"a\"\]\)"),
        ({"id": "1", "text": {"a": 1}}, r"'text' should be a string, got an object"),
        ({"id": "1", "ids": "1:2"}, r"'ids' should be a list of strings, got a string \(\"1:2\"\)"),
        ({"id": "1", "ids": ["1:2", 3]}, r"'ids\[1\]' should be a string, got a number \(3\)"),
        ({"id": "1", "n": "3"}, r"'n' should be an integer, got a string"),
        ({"id": "1", "n": 3.5}, r"'n' should be an integer, got a number \(3.5\)"),
        ({"id": True}, r"'id' should be a string, got true"),
    ],
)
def test_a_field_of_another_type_names_file_line_and_field(tmp_path, row, message):
    path = _write(tmp_path / "typed.jsonl", [{"id": "0", "text": "fine", "ids": ["0:1"], "n": 1}, row])
    with pytest.raises(DataFormatError, match=rf"typed\.jsonl:2: {message}"):
        read_jsonl(path, SCHEMA)


def test_required_fields_absent_or_null_name_the_line(tmp_path):
    path = _write(tmp_path / "r.jsonl", [{"id": "1", "ids": []}, "", {"id": "2", "ids": None}, {"ids": ["x"]}])
    with pytest.raises(DataFormatError, match=r"r\.jsonl:3: missing key\(s\) \['ids'\]"):
        read_jsonl(path, SCHEMA, ("id", "ids"))
    with pytest.raises(DataFormatError, match=r"r\.jsonl:4: missing key\(s\) \['id'\]"):
        read_jsonl(path, SCHEMA, ("id",))


def test_empty_and_absent_files(tmp_path):
    for text in ("", "\n  \n"):
        (tmp_path / "empty.jsonl").write_text(text)
        with pytest.raises(DataFormatError, match=r"empty\.jsonl: no records"):
            read_jsonl(tmp_path / "empty.jsonl", SCHEMA)
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_jsonl(tmp_path / "absent.jsonl", SCHEMA)


def test_a_line_longer_than_a_parse_block_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "BLOCK_BYTES", 256)
    rows = [{"id": str(i), "ids": [f"{i}:{j}" for j in range(200)]} for i in range(5)]
    table = read_jsonl(_write(tmp_path / "long.jsonl", rows), SCHEMA)
    assert table.column("ids").to_pylist() == [r["ids"] for r in rows]


def test_a_large_file_is_memory_mapped_from_one_cached_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "MMAP_BYTES", 0)
    monkeypatch.setenv("JFE_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path / "pool.jsonl", [{"id": "1:1", "text": "a"}, {"id": "1:2"}])
    first = load_jsonl(path, SCHEMA, ("id",))
    (copy,) = (tmp_path / "cache" / "jsonl-arrow").glob("pool-*.arrow")
    assert [f["filename"] for f in first.cache_files] == [str(copy)]  # memory-mapped, not in memory
    assert first["id"] == ["1:1", "1:2"] and first[1]["text"] is None

    def no_parse(*args):
        raise AssertionError("parsed again")

    parse = jsonl._parse
    monkeypatch.setattr(jsonl, "_parse", no_parse)
    assert load_jsonl(path, SCHEMA, ("id",)).to_list() == first.to_list()  # the copy, not the JSONL again
    monkeypatch.setattr(jsonl, "_parse", parse)
    _write(path, [{"id": "2:1"}])  # another version of the file gets its own copy
    assert load_jsonl(path, SCHEMA, ("id",))["id"] == ["2:1"]
    # a bad file never leaves a copy behind
    bad = _write(tmp_path / "bad.jsonl", [{"text": "no id"}])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:1: missing key\(s\) \['id'\]"):
        load_jsonl(bad, SCHEMA, ("id",))
    assert not list((tmp_path / "cache" / "jsonl-arrow").glob("bad-*"))
