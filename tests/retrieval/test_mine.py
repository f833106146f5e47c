import re

import pytest

from jfe.retrieval.mine import mine_negatives, read_mined, write_mined

RUN = {
    "q1": {"p1": 0.99, "n1": 0.9, "n2": 0.8, "p2": 0.7, "n3": 0.6, "j0": 0.5, "n4": 0.4},
    "q2": {"n9": 0.3, "p9": 0.2},
}
QRELS = {"q1": {"p1": 1, "p2": 2, "j0": 0}, "q2": {"p9": 1}, "q3": {"x": 1}}


def test_positives_excluded_and_rank_order_kept():
    mined = mine_negatives(RUN, QRELS, k=30)
    # j0 is judged irrelevant (relevance 0), so it is a genuine negative
    assert mined == {"q1": ["n1", "n2", "n3", "j0", "n4"], "q2": ["n9"]}


def test_skip_top_and_k():
    assert mine_negatives(RUN, QRELS, k=2, skip_top=1)["q1"] == ["n2", "n3"]
    assert mine_negatives(RUN, QRELS, k=3, skip_top=4)["q1"] == ["n4"]
    assert mine_negatives(RUN, QRELS, k=3, skip_top=9)["q1"] == []


def test_run_query_without_qrels_is_named():
    with pytest.raises(ValueError, match="query 'q7'"):
        mine_negatives({**RUN, "q7": {"a": 1.0}}, QRELS)


def test_jsonl_round_trip(tmp_path):
    mined = mine_negatives(RUN, QRELS, k=3)
    path = write_mined(tmp_path / "neg.jsonl", mined)
    assert path.read_text().splitlines()[1] == '{"qid": "q2", "neg_dids": ["n9"]}'
    assert read_mined(path) == mined
    assert list(read_mined(path)) == list(mined)


@pytest.mark.parametrize("bad", ["{not json", '{"qid": "q", "neg_dids": "d"}', '["q"]', '{"qid": 3, "neg_dids": []}'])
def test_malformed_mined_line_names_path_and_line(tmp_path, bad):
    p = tmp_path / "neg.jsonl"
    p.write_text('{"qid": "q0", "neg_dids": []}\n' + bad + "\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:2:"):
        read_mined(p)
