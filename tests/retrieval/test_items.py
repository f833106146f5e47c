import pytest
from transformers import AutoProcessor

from jfe.data.instructions import Instructions
from jfe.data.mbeir import MBeirLayout, load_queries
from jfe.data.uniir import format_string
from jfe.formatting import EMBEDDING_CHAT_TEMPLATE, EmbedInput, render
from jfe.retrieval.items import TextStyle, read_items


def test_query_file_items_follow_uniir_by_default(mbeir_root):
    layout = MBeirLayout(mbeir_root)
    tsv = str(layout.instructions_file)
    items = read_items(layout.query_file("toy_t2i", "test"), mbeir_root, tsv)
    table = Instructions.load(tsv)
    queries = load_queries(layout.query_file("toy_t2i", "test"), mbeir_root)
    for item, q in zip(items, queries, strict=True):
        prompt = table.for_query(q, "uniir", seed=0)
        assert item.instruction == format_string(prompt)
        # instruction and text, joined as jfe's template joins them, are what UniIR embeds
        assert f"{item.instruction} {item.text}" == format_string(f"{format_string(prompt)} {q.text}")
    assert items[0].text == "a red seven."  # after the prompt: not capitalised, the period at the end
    raw = read_items(layout.query_file("toy_t2i", "test"), mbeir_root, tsv, TextStyle("first", uniir_format=False))
    assert [(i.instruction, i.text) for i in raw] == [
        ("Find the image.", "a red seven"),
        ("Find the image.", "a blue three"),
    ]


def test_pool_texts_are_formatted_and_pair_files_are_not(mbeir_root, tmp_path):
    pool = MBeirLayout(mbeir_root).local_pool_file("toy_i2t", "test")
    assert [i.text for i in read_items(pool, mbeir_root)] == ["A seven.", "A one.", "A two."]
    assert [i.text for i in read_items(pool, mbeir_root, style=TextStyle(uniir_format=False))] == [
        "a seven",
        "a one",
        "a two",
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": {"text": "a red seven"}, "pos": [{"text": "seven"}], "instruction": "find it"}\n')
    (item,) = read_items(pairs)
    assert (item.instruction, item.text) == ("find it", "a red seven")


def test_the_rendered_query_carries_uniirs_joined_string(mbeir_root, tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    processor.chat_template = EMBEDDING_CHAT_TEMPLATE
    layout = MBeirLayout(mbeir_root)
    (item,) = read_items(layout.query_file("toy_it2i", "test"), mbeir_root, str(layout.instructions_file))
    (prompt,) = render(processor, [EmbedInput(text=item.text)], [item.instruction], 512)
    assert f"\n{item.instruction} rotated.\nSummarize above sentence in one word:" in prompt


def test_policy_all_needs_an_index_and_bad_policies_are_refused(mbeir_root):
    layout = MBeirLayout(mbeir_root)
    tsv = str(layout.instructions_file)
    path = layout.query_file("toy_i2t", "test")
    texts = [read_items(path, mbeir_root, tsv, TextStyle("all", prompt_index=i))[0].instruction for i in range(4)]
    assert texts == ["Caption this.", "Describe it.", "Name it.", "Say what it is."]
    with pytest.raises(ValueError, match="instruction policy 'best'"):
        read_items(path, mbeir_root, tsv, TextStyle("best"))
