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
