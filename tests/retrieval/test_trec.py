import re

import pytest

from jfe.retrieval.trec import ranked, read_qrels, read_qrels_tasks, read_run


def test_read_mbeir_qrels_and_tasks(tmp_path):
    p = tmp_path / "qrels.txt"
    p.write_text("9:1 0 9:100 1 3\n9:1 0 9:101 0 3\n\n9:2 0 8:5 2 7\n")
    assert read_qrels(p) == {"9:1": {"9:100": 1, "9:101": 0}, "9:2": {"8:5": 2}}
    assert read_qrels_tasks(p) == {"9:1": 3, "9:2": 7}


def test_read_plain_trec_qrels(tmp_path):
    p = tmp_path / "qrels.txt"
    p.write_text("q1 0 d1 1\nq1\t0\td2  2\n")
    assert read_qrels(p) == {"q1": {"d1": 1, "d2": 2}}
    with pytest.raises(ValueError, match=r"qrels\.txt:1: no task_id column"):
        read_qrels_tasks(p)


@pytest.mark.parametrize(
    "bad",
    ["q1 0 d1\n", "q1 0 d1 high 3\n", "q1 0 d1 1 3 extra\n", "q1 0 d1 1 x\n"],
    ids=["short", "rel", "long", "task"],
)
def test_malformed_qrels_line_names_path_and_line(tmp_path, bad):
    p = tmp_path / "qrels.txt"
    p.write_text("q0 0 d0 1 0\n\n" + bad)
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:3:"):
        read_qrels(p)


def test_conflicting_qrels_and_tasks_are_errors(tmp_path):
    p = tmp_path / "q.txt"
    p.write_text("q 0 d 1 0\nq 0 d 2 0\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:2: conflicting relevance"):
        read_qrels(p)
    p.write_text("q 0 d 1 0\nq 0 e 1 4\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:2: query 'q' has task_id 4"):
        read_qrels_tasks(p)


def test_read_run_orders_by_rank_and_reports_bad_lines(tmp_path):
    p = tmp_path / "run.trec"
    # lines out of rank order, and a score tie that only the rank column can settle
    p.write_text("q1 Q0 b 2 0.500000 t\nq1 Q0 a 1 0.500000 t\nq1 Q0 c 3 0.100000 t\nq2 Q0 a 1 1.0 t\n")
    run = read_run(p)
    assert run == {"q1": {"a": 0.5, "b": 0.5, "c": 0.1}, "q2": {"a": 1.0}}
    assert ranked(run["q1"]) == ["a", "b", "c"]
    p.write_text("q1 Q0 a 1 0.5 t\nq1 Q0 b two 0.4 t\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}:2: bad rank"):
        read_run(p)


UNIIR_RUN = "9:1 Q0 9:b 2 0.5 mbeir_mscoco_task0_single_pool_test_k50 0\n9:1 Q0 9:a 1 0.5 r 0\n9:2 Q0 9:a 1 1.0 r 3\n"


def test_uniir_seven_column_run_reads_as_its_six_column_twin(tmp_path):
    seven, six = tmp_path / "uniir.txt", tmp_path / "trec.txt"
    seven.write_text(UNIIR_RUN)
    six.write_text("".join(" ".join(line.split()[:6]) + "\n" for line in UNIIR_RUN.splitlines()))
    assert read_run(seven) == read_run(six) == {"9:1": {"9:a": 0.5, "9:b": 0.5}, "9:2": {"9:a": 1.0}}
    assert ranked(read_run(seven)["9:1"]) == ["9:a", "9:b"]  # the tie settled by the rank column


@pytest.mark.parametrize("bad", ["q1 Q0 a 1 0.5\n", "q1 Q0 a 1 0.5 t 0 extra\n", "q1\n"], ids=["5", "8", "1"])
def test_run_line_of_another_width_names_file_line_and_both_formats(tmp_path, bad):
    p = tmp_path / "run.trec"
    p.write_text("q0 Q0 a 1 0.5 t\n\n" + bad)
    trec, uniir = "'qid Q0 did rank score tag' (trec)", "'qid Q0 did rank score run_id task_id' (uniir)"
    both = f"expected 6 columns {trec} or 7 columns {uniir}"
    with pytest.raises(ValueError, match=rf"^{re.escape(f'{p}:3: {both}, got {len(bad.split())}')}$"):
        read_run(p)


def test_uniir_task_id_must_be_an_integer_and_one_per_query(tmp_path):
    p = tmp_path / "run.txt"
    p.write_text("q1 Q0 a 1 0.5 r 0\nq1 Q0 b 2 0.4 r t2i\n")
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(p))}:2: task_id \(column 7\) must be an integer, got 't2i'$"
    ):
        read_run(p)
    p.write_text("q1 Q0 a 1 0.5 r 0\nq2 Q0 a 1 0.5 r 3\nq1 Q0 b 2 0.4 r 3\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(p))}:3: query 'q1' has task_id 3 here but 0 earlier"):
        read_run(p)


def test_ranked_sorts_by_descending_score():
    assert ranked({"a": 0.1, "b": 0.9, "c": 0.5}) == ["b", "c", "a"]
    assert ranked({}) == []
