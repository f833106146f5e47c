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
