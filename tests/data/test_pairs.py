import json

import pytest

from jfe.data.jsonl import DataFormatError
from jfe.data.pairs import load_pairs


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_pairs_become_queries_and_a_deduplicated_pool(tmp_path):
    path = tmp_path / "mine.jsonl"
    _write(
        path,
        [
            {
                "query": {"text": "a dog"},
                "pos": [{"image": "dog.png"}],
                "neg": [{"text": "a cat"}],
                "instruction": "Find.",
            },
            {"query": {"image": "q.png", "text": "red"}, "pos": [{"text": "a cat"}], "task": "other"},
        ],
    )
    queries, pool = load_pairs(path)
    assert [q.dataset for q in queries] == ["mine", "other"]
    first, second = queries
    assert first.instruction == "Find." and second.instruction is None
    assert first.modality == "text" and second.modality == "image,text"
    assert second.image == str(tmp_path / "q.png")
    assert pool[first.positives[0]].image == str(tmp_path / "dog.png")
    # "a cat" is a negative of one line and (in another task) a positive of the other
    assert pool[first.negatives[0]].text == "a cat"
    assert pool[second.positives[0]].text == "a cat"
    assert len(pool) == 3


def test_pair_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    _write(path, [{"query": {"text": "x"}, "pos": [{"text": "y"}]}, {"query": {"text": "x"}, "pos": [{}]}])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: pos\[0\] has neither text nor image"):
        load_pairs(path)
    _write(path, [{"query": {"text": "x"}, "pos": []}])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:1: 'pos' needs at least one candidate"):
        load_pairs(path)
    path.write_text('{"query": {"text": "x"}, "pos": [{"text": "y"}]}\nnot json\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: not valid JSON"):
        load_pairs(path)


def test_optional_fields_may_first_appear_late_and_unknown_ones_are_ignored(tmp_path, monkeypatch):
    from jfe.data import jsonl

    # several parse blocks, the late fields in the last one: nothing is guessed from the first
    monkeypatch.setattr(jsonl, "BLOCK_BYTES", 512)
    rows = [{"query": {"text": f"q{i}"}, "pos": [{"text": f"p{i}"}]} for i in range(40)]
    rows.append({"query": {"text": "late", "lang": "en"}, "pos": [{"text": "p"}], "neg": [{"text": "n"}],
                 "instruction": "Find.", "task": "other", "meta": {"source": 1}})  # fmt: skip
    path = tmp_path / "late.jsonl"
    _write(path, rows)
    queries, pool = load_pairs(path)
    assert len(queries) == 41 and queries[0].negatives == () and queries[0].instruction is None
    last = queries[-1]
    assert (last.instruction, last.dataset, pool[last.negatives[0]].text) == ("Find.", "other", "n")


def test_a_pair_field_of_another_type_names_file_and_line(tmp_path):
    path = tmp_path / "typed.jsonl"
    _write(path, [{"query": {"text": "x"}, "pos": [{"text": "y"}]}, {"query": {"text": "x"}, "pos": {"text": "y"}}])
    with pytest.raises(DataFormatError, match=r"typed\.jsonl:2: 'pos' should be a list of objects, got an object"):
        load_pairs(path)
    _write(path, [{"query": {"text": "x"}, "pos": [{"text": "y"}], "task": 3}])
    with pytest.raises(DataFormatError, match=r"typed\.jsonl:1: 'task' should be a string, got a number \(3\)"):
        load_pairs(path)
    _write(path, [{"query": {"text": "x"}, "pos": [{"text": "y", "image": ["a.png"]}]}])
    with pytest.raises(DataFormatError, match=r"typed\.jsonl:1: 'pos\[0\]\.image' should be a string, got a list"):
        load_pairs(path)
