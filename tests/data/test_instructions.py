import random

import pytest

from jfe.data.instructions import Instructions
from jfe.data.jsonl import DataFormatError
from jfe.data.mbeir import MBeirLayout, load_queries


def test_first_prompt_in_eval_random_in_training(mbeir_root):
    layout = MBeirLayout(mbeir_root)
    table = Instructions.load(layout.instructions_file)
    q = load_queries(layout.query_file("toy_t2i", "test"), mbeir_root)[0]
    assert table.for_eval(q) == "Find the image."
    rng = random.Random(0)
    drawn = {table.for_train(q, rng) for _ in range(200)}
    assert drawn == {"Find the image.", "Show the picture.", "Retrieve the photo.", "Get the image."}
    it2i = load_queries(layout.query_file("toy_it2i", "test"), mbeir_root)[0]
    assert table.for_eval(it2i) == "Apply the change."
    assert table.names == {"1": "toy_t2i", "2": "toy_i2t", "3": "toy_it2i"}


def test_unknown_combination_and_bad_header(mbeir_root, tmp_path):
    layout = MBeirLayout(mbeir_root)
    table = Instructions.load(layout.instructions_file)
    q = load_queries(layout.query_file("toy_t2i", "test"), mbeir_root)[0]
    with pytest.raises(
        KeyError, match="no instruction for dataset id 1, query modality 'text', candidate modality 'text'"
    ):
        table.for_eval(q, cand_modality="text")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv:1: expected a tab-separated header"):
        Instructions.load(bad)


def _queries(n: int, dataset_id: str = "1") -> list:
    from jfe.data.mbeir import Query

    return [Query(f"{dataset_id}:{i}", "a red seven", None, "text", positives=("1:10",), task_id=0) for i in range(n)]


def test_uniir_policy_draws_per_query_and_repeats_exactly(mbeir_root):
    table = Instructions.load(MBeirLayout(mbeir_root).instructions_file)
    queries = _queries(200)
    drawn = [table.for_query(q, "uniir", seed=0) for q in queries]
    assert drawn == [table.for_query(q, "uniir", seed=0) for q in queries]  # every path and rerun agrees
    assert set(drawn) == {"Find the image.", "Show the picture.", "Retrieve the photo.", "Get the image."}
    assert drawn != [table.for_query(q, "uniir", seed=1) for q in queries]
    assert {table.for_query(q, "first") for q in queries} == {"Find the image."}
    assert [table.for_query(queries[0], "all", index=i) for i in range(table.count(queries[0]))] == [
        "Find the image.",
        "Show the picture.",
        "Retrieve the photo.",
        "Get the image.",
    ]
    with pytest.raises(ValueError, match="instruction policy 'random' is not one of uniir, first, all"):
        table.for_query(queries[0], "random")


def test_tsv_is_read_by_position_with_tabs_only(tmp_path, caplog):
    path = tmp_path / "query_instructions.tsv"
    path.write_text(
        "q_mod\tc_mod\tname\tid\tp1\tp2\n"
        'text\timage\tVisualNews\t0\t"Find" a news image.\tRetrieve, please\n'
        "\n"
        "image\ttext\tMSCOCO\t9\tCaption it.\n"
    )
    with caplog.at_level("WARNING"):
        table = Instructions.load(path)
    assert "reading the columns by position" in caplog.text
    assert table.prompts[("0", "text", "image")] == ['"Find" a news image.', "Retrieve, please"]  # quotes kept
    assert table.names == {"0": "VisualNews", "9": "MSCOCO"}
    path.write_text("query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\ntext\timage\tX\t0\n")
    with pytest.raises(DataFormatError, match=r"query_instructions\.tsv:2: expected at least one prompt"):
        Instructions.load(path)


def test_own_dataset_positive_rule_and_task_rule_pick_the_same_instruction():
    """UniIR keys an OVEN/InfoSeek query's instruction by a positive of its own dataset; jfe by the
    task id. On a query that also lists the other dataset's positive, both give the same prompt."""
    from jfe.data.instructions import uniir_cand_modality
    from jfe.data.mbeir import Query

    table = Instructions(
        {("5", "image,text", "image,text"): ["Find the Wikipedia page."], ("5", "image,text", "text"): ["Wrong."]}
    )
    oven = Query("5:1", "what is it", "q.jpg", "image,text", positives=("6:3", "5:7"), task_id=8)
    modality_of = {"6:3": "text", "5:7": "image,text"}  # the InfoSeek positive is text-only
    uniir_modality = uniir_cand_modality(oven, modality_of)
    assert uniir_modality == "image,text" == oven.cand_modality
    assert table.for_eval(oven, cand_modality=uniir_modality) == table.for_eval(oven) == "Find the Wikipedia page."
