import numpy as np
import pytest
import torch

from jfe import Embedder
from jfe.data.collator import ContrastiveCollator
from jfe.data.dataset import ContrastiveDataset, ExampleOptions
from jfe.data.instructions import Instructions
from jfe.data.mbeir import CandidatePool, MBeirLayout, load_queries
from jfe.data.mimic import MimicOptions
from jfe.inputs import BadInputError
from jfe.lengths import in_batch_order


@pytest.fixture(scope="module")
def embedder(tiny_model_dir):
    return Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")


def _dataset(root, names=("toy_t2i", "toy_i2t", "toy_it2i"), **options):
    layout = MBeirLayout(root)
    queries = [q for n in names for q in load_queries(layout.query_file(n, "test"), root)]
    pool = CandidatePool.load(layout.global_pool_file("test"), root)
    return ContrastiveDataset(
        queries, pool, Instructions.load(layout.instructions_file), options=ExampleOptions(**options)
    )


def test_examples_carry_instruction_positive_and_listed_negatives(mbeir_root):
    ds = _dataset(mbeir_root, num_negatives=2, fill_random_negatives=False)
    assert ds.groups() == {"toy_t2i": [0, 1], "toy_i2t": [2], "toy_it2i": [3]}
    ex = ds[(2, 0)]  # image -> text query with two listed negatives
    assert ex["qid"] == "2:1"
    assert ex["query"].text is None and ex["query"].image.size == (16, 16)
    assert ex["instruction"] in {"Caption this.", "Describe it.", "Name it.", "Say what it is."}
    assert ex["positive"].text == "a seven"
    assert sorted(n.text for n in ex["negatives"]) == ["a one", "a two"]
    # the instruction is redrawn per epoch but fixed for a given (index, epoch)
    assert ds[(2, 0)]["instruction"] == ex["instruction"]
    assert len({ds[(2, e)]["instruction"] for e in range(30)}) == 4


def test_mined_negatives_replace_listed_ones_and_random_fill_tops_up(mbeir_root):
    ds = _dataset(mbeir_root, num_negatives=2, fill_random_negatives=False)
    ds.mined = {"2:1": ["2:10", "2:12"]}  # the positive is excluded even if mined
    assert ds.negatives_of(2, 0) == ["2:12"]
    filled = _dataset(mbeir_root, num_negatives=1, fill_random_negatives=True)
    assert filled.negatives_of(1, 0) == ["1:10"]  # 1:2 lists none; the only other t2i candidate


def test_collator_layout_and_dummy_image(mbeir_root, embedder):
    ds = _dataset(mbeir_root, names=("toy_t2i",), num_negatives=1)
    collate = ContrastiveCollator(embedder.processor)
    batch = collate([ds[(0, 0)], ds[(1, 0)]])
    assert batch["query_rows"] == [2] and batch["candidate_rows"] == [4]
    (query,), (cands,) = batch["query"], batch["candidates"]
    # text-only queries get one trailing dummy-image row so the vision tower always runs
    assert query["input_ids"].shape[0] == 3
    assert "pixel_values" in query
    # image candidates need no dummy
    assert cands["input_ids"].shape[0] == 4
    plain = ContrastiveCollator(embedder.processor, dummy_image="none")([ds[(0, 0)], ds[(1, 0)]])["query"][0]
    assert "pixel_values" not in plain
    with torch.no_grad():
        with_dummy = embedder(**query)[:2]
        without = embedder(**plain)
    assert np.abs((with_dummy - without).numpy()).max() <= 1e-5


def test_collator_truncates_content_not_prompt(mbeir_root, embedder):
    ds = _dataset(mbeir_root, names=("toy_t2i",))
    example = ds[(0, 0)]
    example["query"].text = "seven " * 300
    batch = ContrastiveCollator(embedder.processor, max_text_tokens=16)([example])
    decoded = embedder.tokenizer.decode(batch["query"][0]["input_ids"][0], skip_special_tokens=False)
    assert decoded.rstrip("\n").endswith("one word:<|im_end|>\n<|im_start|>assistant")
    assert int(batch["query"][0]["attention_mask"][0].sum()) < 60


def test_bad_images_fail_with_path_or_are_skipped_and_counted(mbeir_root, embedder):
    (mbeir_root / "images/1.png").write_bytes(b"not an image")  # candidate 1:11, a negative of 1:1
    (mbeir_root / "images/2.png").unlink()  # the image query 2:1
    strict = _dataset(mbeir_root, num_negatives=1, fill_random_negatives=False)
    with pytest.raises(BadInputError, match=r"query 2:1: image file not found: .*images/2\.png"):
        strict[(2, 0)]
    with pytest.raises(BadInputError, match=r"candidate 1:11: not a readable image: .*images/1\.png"):
        strict[(0, 0)]
    lenient = _dataset(mbeir_root, num_negatives=1, fill_random_negatives=False, skip_bad_inputs=True)
    collate = ContrastiveCollator(embedder.processor)
    batch = collate([lenient[(i, 0)] for i in range(4) if i != 1])
    assert batch["qids"] == ["1:1", "3:1"]
    assert batch["candidate_rows"] == [3]  # two positives + 3:1's negative; 1:1's corrupt negative dropped
    assert collate.skipped == {"examples": 1, "negatives": 1}


def test_mimic_applies_to_the_chosen_side(mbeir_root):
    ds = _dataset(mbeir_root, names=("toy_it2i",), mimic=MimicOptions(caption_dropout=1.0, apply_to="query"))
    ex = ds[(0, 0)]
    assert ex["query"].text is None and ex["query"].image is not None
    untouched = _dataset(mbeir_root, names=("toy_it2i",))[(0, 0)]
    assert untouched["query"].text == "rotated"


def _rows(chunks: list, counts: list[int]) -> int:
    return sum(int(chunk["input_ids"].shape[0]) for chunk in chunks) - sum(counts)


def test_chunks_for_gradcache_are_length_sorted(mbeir_root, embedder):
    ds = _dataset(mbeir_root, num_negatives=1)
    examples = [ds[(i, 0)] for i in range(4)]
    batch = ContrastiveCollator(embedder.processor, chunk_size=3, dummy_image="chunk")(examples)
    assert batch["query_rows"] == [3, 1]
    assert batch["candidate_rows"] == [3, 3, 2]
    # for ZeRO-3 every chunk runs the vision tower: chunks without an image carry the dummy row
    assert all("pixel_values" in chunk for chunk in batch["query"] + batch["candidates"])
    lengths = [int(m.sum()) for chunk in batch["query"] for m in chunk["attention_mask"][:3]][:4]
    assert lengths == sorted(lengths)
    assert sorted(batch["query_order"].tolist()) == [0, 1, 2, 3]


def test_side_dummy_is_one_row_only_when_a_side_has_no_image(mbeir_root, embedder):
    ds = _dataset(mbeir_root, names=("toy_t2i",), num_negatives=1)
    examples = [ds[(0, 0)], ds[(1, 0)]]
    batch = ContrastiveCollator(embedder.processor, length_chunks=2)(examples)
    assert _rows(batch["query"], batch["query_rows"]) == 1  # text queries: one dummy for the side
    assert _rows(batch["candidates"], batch["candidate_rows"]) == 0  # image candidates: none
    per_chunk = ContrastiveCollator(embedder.processor, length_chunks=2, dummy_image="chunk")(examples)
    assert _rows(per_chunk["query"], per_chunk["query_rows"]) == 2
    with pytest.raises(ValueError, match="dummy_image='yes'"):
        ContrastiveCollator(embedder.processor, dummy_image="yes")


def test_length_chunks_change_padding_not_embeddings(mbeir_root, embedder):
    ds = _dataset(mbeir_root, num_negatives=1)
    examples = [ds[(i, 0)] for i in range(4)]
    examples[0]["query"].text = "a handwritten seven " * 12  # one long row among short ones
    one = ContrastiveCollator(embedder.processor)(examples)
    split = ContrastiveCollator(embedder.processor, length_chunks=2)(examples)
    assert len(split["query"]) == 2 and sum(split["query_rows"]) == 4

    def padded(batch):
        return sum(chunk["attention_mask"].numel() for chunk in batch["query"])

    assert padded(split) < padded(one)
    real = [
        int(one["query"][0]["attention_mask"][:4].sum()),
        sum(int(c["attention_mask"][:n].sum()) for c, n in zip(split["query"], split["query_rows"], strict=True)),
    ]
    assert real[0] == real[1]
    with torch.no_grad():
        whole = embedder(**one["query"][0])[:4]
        parts = torch.cat([embedder(**c)[:n] for c, n in zip(split["query"], split["query_rows"], strict=True)])
    restored = in_batch_order(parts, split["query_order"])
    assert np.abs((restored - whole).numpy()).max() <= 1e-5
