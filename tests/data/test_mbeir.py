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
