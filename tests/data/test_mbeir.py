import json

import pytest

from jfe.data.jsonl import DataFormatError
from jfe.data.mbeir import CandidatePool, MBeirLayout, dataset_id_of, load_queries


def test_reads_queries_with_null_fields_and_resolves_images(mbeir_root):
    layout = MBeirLayout(mbeir_root)
    assert layout.datasets("test") == ["toy_i2t", "toy_it2i", "toy_t2i"]
    t2i = load_queries(layout.query_file("toy_t2i", "test"), mbeir_root)
    assert [q.id for q in t2i] == ["1:1", "1:2"]
    assert t2i[0].text == "a red seven" and t2i[0].image is None
    assert t2i[0].positives == ("1:10",) and t2i[0].negatives == ("1:11",)
    assert t2i[0].dataset == "toy_t2i" and t2i[0].dataset_id == "1" and t2i[0].cand_modality == "image"
    (i2t,) = load_queries(layout.query_file("toy_i2t", "test"), mbeir_root)
    assert i2t.text is None and i2t.image == str(mbeir_root / "images/2.png") and i2t.modality == "image"
    (it2i,) = load_queries(layout.query_file("toy_it2i", "test"), mbeir_root)
    assert (it2i.text, it2i.modality, it2i.task_id) == ("rotated", "image,text", 7)


def test_local_and_global_pools(mbeir_root):
    layout = MBeirLayout(mbeir_root)
    local = CandidatePool.load(layout.local_pool_file("toy_i2t", "test"), mbeir_root)
    assert len(local) == 3 and "2:11" in local and "1:10" not in local
    assert local["2:10"].text == "a seven" and local["2:10"].image is None
    union = CandidatePool.load(layout.global_pool_file("test"), mbeir_root)
    assert len(union) == 7
    assert union["3:10"].image == str(mbeir_root / "images/4.png")
    assert sorted(union.dids_by_dataset()) == ["1", "2", "3"]
    with pytest.raises(KeyError, match="did '9:9' is not in the candidate pool"):
        union["9:9"]


def test_malformed_line_names_file_and_line(mbeir_root):
    path = mbeir_root / "query/test/mbeir_toy_t2i_test.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + '{"qid": "1:2", "query_txt": oops}\n')
    with pytest.raises(DataFormatError, match=r"mbeir_toy_t2i_test\.jsonl:2: not valid JSON"):
        load_queries(path, mbeir_root)


def test_missing_key_names_file_and_line(mbeir_root):
    path = mbeir_root / "query/test/mbeir_toy_t2i_test.jsonl"
    row = json.loads(path.read_text().splitlines()[0])
    del row["pos_cand_list"]
    row["qid"] = "1:3"
    path.write_text(path.read_text() + json.dumps(row) + "\n")
    with pytest.raises(DataFormatError, match=r"mbeir_toy_t2i_test\.jsonl:3: missing key\(s\) \['pos_cand_list'\]"):
        load_queries(path, mbeir_root)


def test_duplicate_ids_are_reported_with_line(mbeir_root):
    path = mbeir_root / "cand_pool/local/mbeir_toy_t2i_test_cand_pool.jsonl"
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataFormatError, match=r"cand_pool\.jsonl:3: duplicate did '1:10'"):
        CandidatePool.load(path)
    qpath = mbeir_root / "query/test/mbeir_toy_i2t_test.jsonl"
    qpath.write_text(qpath.read_text() * 2)
    with pytest.raises(DataFormatError, match=r"mbeir_toy_i2t_test\.jsonl:2: duplicate qid '2:1'"):
        load_queries(qpath)


def test_dataset_id_of_reads_the_prefix_of_qids_and_dids():
    assert dataset_id_of("9:123") == "9"
    assert dataset_id_of("digits_t2i:q4") == "digits_t2i"
    assert dataset_id_of("7:1:2") == "7"  # only the first colon separates


TEN_MB = 10 * 2**20


def _write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
    return path


def _until_over(limit, line_of):
    """Lines ``line_of(0), line_of(1), ...`` until they hold more than ``limit`` bytes."""
    lines, size = [], 0
    while size <= limit:
        lines.append(line_of(len(lines)))
        size += len(lines[-1]) + 1
    return lines


def test_files_whose_optional_fields_first_appear_after_10_mb_load(tmp_path):
    # As UniIR's union pools begin: ~a million VisualNews image rows without src_content or txt,
    # then candidates with text, no image, src_content and fields jfe does not know.
    head = _until_over(
        TEN_MB,
        lambda i: json.dumps(
            {"did": f"0:{i}", "img_path": f"mbeir_images/visualnews_images/{i:08d}.jpg", "modality": "image"}
        ),
    )
    tail = [
        json.dumps({"did": "9:1", "txt": "a dog", "img_path": None, "modality": "text", "src_content": '{"id": 1}'}),
        json.dumps({"did": "9:2", "txt": "a cat", "modality": "text", "src_content": {"id": 2}, "extra": [1, "x"]}),
    ]
    pool_path = _write_lines(tmp_path / "cand_pool/global/mbeir_union_train_cand_pool.jsonl", head + tail)
    pool = CandidatePool.load(pool_path, tmp_path)
    assert len(pool) == len(head) + 2
    assert pool["0:0"].image == str(tmp_path / "mbeir_images/visualnews_images/00000000.jpg")
    assert pool["0:0"].text is None
    assert (pool["9:1"].text, pool["9:1"].image, pool["9:1"].modality) == ("a dog", None, "text")
    assert pool["9:2"].text == "a cat"
    # the same for a query file whose query_txt, query_src_content and task 3's fields come late
    image_query = {"query_img_path": "q.jpg", "query_modality": "image", "pos_cand_list": ["0:1"], "neg_cand_list": []}
    head = _until_over(TEN_MB, lambda i: json.dumps({"qid": f"0:{i}", **image_query, "task_id": 3}))
    tail = [
        json.dumps(
            {
                "qid": "9:1",
                "query_txt": "a dog",
                "query_modality": "text",
                "query_src_content": '{"id": 1}',
                "pos_cand_list": ["9:1"],
                "neg_cand_list": ["9:2"],
                "task_id": 1,
                "unknown": {"deep": [1]},
            }
        )
    ]
    queries = load_queries(_write_lines(tmp_path / "query/train/mbeir_union_up_train.jsonl", head + tail), tmp_path)
    assert len(queries) == len(head) + 1
    assert (queries[0].text, queries[0].task_id, queries[0].positives) == (None, 3, ("0:1",))
    last = queries[-1]
    assert (last.id, last.text, last.image, last.task_id, last.negatives) == ("9:1", "a dog", None, 1, ("9:2",))


def test_ids_stay_strings_and_unknown_fields_are_ignored(tmp_path):
    pool_path = _write_lines(
        tmp_path / "pool.jsonl",
        [
            json.dumps({"did": "9:007", "txt": "x", "modality": "text", "src_content": {"a": 1}, "new_field": 3}),
            json.dumps({"did": "10", "txt": "y", "img_path": None, "modality": "text", "src_content": None}),
        ],
    )
    pool = CandidatePool.load(pool_path)
    assert "9:007" in pool and "10" in pool and pool["10"].text == "y"
    assert pool.table.column_names == ["did", "txt", "img_path", "modality"]
    query = {
        "qid": "9:01",
        "query_txt": "x",
        "query_modality": "text",
        "pos_cand_list": ["9:007"],
        "neg_cand_list": [],
        "task_id": 1,
        "query_src_content": {"nested": True},
        "version": 2,
    }
    (q,) = load_queries(_write_lines(tmp_path / "q.jsonl", [json.dumps(query)]))
    assert (q.id, q.positives, q.image) == ("9:01", ("9:007",), None)


def test_a_field_of_another_type_names_file_and_line(tmp_path):
    good = json.dumps({"did": "1:1", "txt": "x", "modality": "text"})
    path = _write_lines(tmp_path / "pool.jsonl", [good, json.dumps({"did": 12, "txt": "y", "modality": "text"})])
    with pytest.raises(DataFormatError, match=r"pool\.jsonl:2: 'did' should be a string, got a number \(12\)"):
        CandidatePool.load(path)
    _write_lines(path, [good, json.dumps({"did": "1:2", "txt": ["a", "b"], "modality": "text"})])
    with pytest.raises(DataFormatError, match=r"pool\.jsonl:2: 'txt' should be a string, got a list"):
        CandidatePool.load(path)
    query = {"qid": "1:1", "query_txt": "x", "query_modality": "text", "pos_cand_list": ["1:1"], "neg_cand_list": []}
    qpath = _write_lines(
        tmp_path / "q.jsonl", [json.dumps({**query, "task_id": 1}), json.dumps({**query, "task_id": "1"})]
    )
    with pytest.raises(DataFormatError, match=r"q\.jsonl:2: 'task_id' should be an integer, got a string"):
        load_queries(qpath)
    _write_lines(qpath, [json.dumps({**query, "task_id": 1, "pos_cand_list": [1]})])
    with pytest.raises(DataFormatError, match=r"q\.jsonl:1: 'pos_cand_list\[0\]' should be a string, got a number"):
        load_queries(qpath)


def test_required_query_fields_and_positive_ids(tmp_path):
    query = {"qid": "1:1", "query_txt": "x", "query_modality": "text", "pos_cand_list": ["1:1"], "neg_cand_list": []}
    qpath = _write_lines(
        tmp_path / "q.jsonl", [json.dumps({**query, "task_id": 1}), json.dumps({**query, "qid": "1:2"})]
    )
    with pytest.raises(DataFormatError, match=r"q\.jsonl:2: missing key\(s\) \['task_id'\]"):
        load_queries(qpath)
    _write_lines(qpath, [json.dumps({**query, "task_id": 1, "pos_cand_list": ["1:1", None]})])
    with pytest.raises(DataFormatError, match=r"q\.jsonl:1: pos_cand_list of query 1:1 holds a null or empty id"):
        load_queries(qpath)
    # a null negative names nothing to draw: dropped
    _write_lines(qpath, [json.dumps({**query, "task_id": 1, "neg_cand_list": ["1:2", None, ""]})])
    assert load_queries(qpath)[0].negatives == ("1:2",)
    pool = _write_lines(tmp_path / "pool.jsonl", [json.dumps({"did": "1:1", "txt": "x"})])
    with pytest.raises(DataFormatError, match=r"pool\.jsonl:1: missing key\(s\) \['modality'\]"):
        CandidatePool.load(pool)


def test_repeated_qids_are_separate_queries_when_allowed(mbeir_root):
    # UniIR's up-sampled union training file repeats a qid as several rows
    path = mbeir_root / "query/test/mbeir_toy_t2i_test.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], lines[0], lines[0]]) + "\n")
    with pytest.raises(DataFormatError, match=r"mbeir_toy_t2i_test\.jsonl:3: duplicate qid '1:1'"):
        load_queries(path, mbeir_root)
    queries = load_queries(path, mbeir_root, allow_duplicate_ids=True)
    assert [q.id for q in queries] == ["1:1", "1:2", "1:1", "1:1"]
    assert queries[0] == queries[2] == queries[3]


def test_an_escaping_image_path_fails_when_the_pool_is_read(tmp_path):
    import json

    from jfe.data.jsonl import DataFormatError
    from jfe.data.mbeir import CandidatePool

    rows = [{"did": "1:1", "txt": "a", "img_path": "images/a.jpg", "modality": "image,text"},
            {"did": "1:2", "txt": "b", "img_path": "images/../../secret.jpg", "modality": "image,text"}]  # fmt: skip
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataFormatError, match=r"pool.jsonl:2: image path 'images/../../secret.jpg' leaves"):
        CandidatePool.load(tmp_path / "pool.jsonl", tmp_path)
    # inside the root, "." included, paths resolve as os.path.join then normpath would
    (tmp_path / "pool.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert CandidatePool.load(tmp_path / "pool.jsonl", ".").records()[0].image == "images/a.jpg"
    assert CandidatePool.load(tmp_path / "pool.jsonl", tmp_path)["1:1"].image == str(tmp_path / "images/a.jpg")
