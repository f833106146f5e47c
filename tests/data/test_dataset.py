"""ContrastiveDataset: what one training example holds, drawn reproducibly per (index, epoch)."""

import pytest

from jfe.data.dataset import ContrastiveDataset, ExampleOptions
from jfe.data.instructions import Instructions
from jfe.data.mbeir import CandidatePool, Query, Record, dataset_id_of, load_queries
from jfe.data.mimic import MimicOptions
from jfe.data.pairs import InMemoryPool
from jfe.inputs import BadInputError
from jfe.lengths import guessed_length
from tests.conftest import make_image

EPOCHS = range(40)
PROMPTS = ["First.", "Second.", "Third.", "Fourth."]


def _pool(tmp_path, missing=()):
    """Dataset 1: twenty texts and four images; dataset 2: three texts. Images named in
    ``missing`` are never written."""
    records = {f"1:{i}": Record(f"1:{i}", f"doc {i}", None, "text") for i in range(20)}
    for i in range(20, 24):
        path = tmp_path / f"{i}.png"
        if f"1:{i}" not in missing:
            make_image(i).save(path)
        records[f"1:{i}"] = Record(f"1:{i}", f"picture {i}", str(path), "image,text")
    records |= {f"2:{i}": Record(f"2:{i}", f"other {i}", None, "text") for i in range(3)}
    return InMemoryPool(records)


def _query(qid="1:q0", positives=("1:0", "1:1", "1:2"), negatives=(), text="what is it", image=None, **kw):
    modality = "image,text" if image and text else ("image" if image else "text")
    return Query(qid, text, image, modality, positives, negatives, task_id=1, dataset="one", **kw)


def _dataset(tmp_path, queries=None, k=0, fill=True, skip=False, seed=0, mined=None, mimic=None):
    options = ExampleOptions(
        num_negatives=k, fill_random_negatives=fill, skip_bad_inputs=skip, seed=seed, mimic=mimic or MimicOptions()
    )
    queries = queries or [_query(negatives=("1:3", "1:4", "1:5", "1:6", "1:7", "1:8"))]
    instructions = Instructions({("1", "text", "text"): PROMPTS, ("1", "image,text", "text"): PROMPTS})
    return ContrastiveDataset(queries, _pool(tmp_path), instructions, mined, options)


def _draws(ds, index, epoch):
    return ds.positive_of(index, epoch), ds.negatives_of(index, epoch), ds.instruction_of(index, epoch)


def test_draws_are_reproducible_per_index_and_epoch_and_change_across_epochs(tmp_path):
    a, b = _dataset(tmp_path, k=2), _dataset(tmp_path, k=2)
    # another dataset object (another process, another rank) draws the same, in any order
    forward = [_draws(a, 0, e) for e in EPOCHS]
    assert [_draws(b, 0, e) for e in reversed(EPOCHS)] == forward[::-1]
    assert [_draws(a, 0, e) for e in EPOCHS] == forward
    positives, negatives, instructions = zip(*forward, strict=True)
    # ... and each epoch draws anew: every positive, several negative pairs and every prompt come up
    assert set(positives) == {"1:0", "1:1", "1:2"}
    assert len({tuple(n) for n in negatives}) > 5
    assert set(instructions) == set(PROMPTS)
    # the example returned is the one drawn
    example = a[(0, 7)]
    assert (example["positive_id"], example["negative_ids"], example["instruction"]) == forward[7]
    assert example["positive"].text == f"doc {forward[7][0].split(':')[1]}"
    assert [n.text for n in example["negatives"]] == [f"doc {d.split(':')[1]}" for d in forward[7][1]]
    assert a[0] == a[(0, 0)]  # a bare index is epoch 0
    # another seed, other draws
    other = _dataset(tmp_path, k=2, seed=1)
    assert [_draws(other, 0, e) for e in EPOCHS] != forward


def test_the_same_query_at_two_indices_draws_independently(tmp_path):
    q = _query(negatives=("1:3", "1:4", "1:5", "1:6", "1:7", "1:8"))
    ds = _dataset(tmp_path, queries=[q, q], k=2)
    assert [_draws(ds, 0, e) for e in EPOCHS] != [_draws(ds, 1, e) for e in EPOCHS]


def test_streams_are_independent(tmp_path):
    mimic = MimicOptions(caption_dropout=0.5, apply_to="both")
    image_query = _query(text="a picture", image=str(tmp_path / "20.png"), positives=("1:20", "1:21", "1:22"))
    queries = [_query(negatives=("1:3", "1:4", "1:5", "1:6", "1:7", "1:8")), image_query]
    by_k = {k: _dataset(tmp_path, queries=queries, k=k, mimic=mimic) for k in (0, 1, 4)}
    for index in range(2):
        for epoch in EPOCHS:
            # drawing more negatives moves neither the positive nor the instruction
            assert len({ds.positive_of(index, epoch) for ds in by_k.values()}) == 1
            assert len({ds.instruction_of(index, epoch) for ds in by_k.values()}) == 1
            # nor the augmentation of the query and the positive (drawn before the negatives')
            seen = {(ex["query"].text, ex["positive"].text) for ex in (ds[(index, epoch)] for ds in by_k.values())}
            assert len(seen) == 1
    # caption dropout really drew: the image query lost its text in some epochs, not all
    texts = {by_k[0][(1, e)]["query"].text for e in EPOCHS}
    assert texts == {"a picture", None}


def test_hard_negatives_never_include_a_positive_or_an_unknown_did(tmp_path):
    listed = ("1:0", "1:3", "1:99", "1:4", "1:3", "1:1")  # two positives, a did not in the pool, a repeat
    q = _query(negatives=listed)
    ds = _dataset(tmp_path, queries=[q], k=2, fill=False)
    for epoch in EPOCHS:
        negatives = ds.negatives_of(0, epoch)
        assert sorted(negatives) == ["1:3", "1:4"]  # the two usable ones, each once
    # mined negatives replace the listed ones, under the same rules
    mined = {"1:q0": ["1:2", "1:9", "1:10", "1:11"]}
    ds = _dataset(tmp_path, queries=[q], k=2, fill=False, mined=mined)
    drawn = {d for epoch in EPOCHS for d in ds.negatives_of(0, epoch)}
    assert drawn == {"1:9", "1:10", "1:11"}
    assert all(len(set(ds.negatives_of(0, e))) == 2 for e in EPOCHS)


def test_fill_random_negatives_tops_up_from_the_same_dataset_only(tmp_path):
    q = _query(negatives=("1:3",))
    filled = _dataset(tmp_path, queries=[q], k=5)
    drawn = set()
    for epoch in EPOCHS:
        negatives = filled.negatives_of(0, epoch)
        assert len(negatives) == len(set(negatives)) == 5
        assert "1:3" in negatives  # the hard negative first, the rest random
        assert all(dataset_id_of(d) == "1" and d not in q.positives for d in negatives)
        drawn |= set(negatives)
    assert len(drawn) > 10  # random, not a fixed list
    assert _dataset(tmp_path, queries=[q], k=5, fill=False).negatives_of(0, 0) == ["1:3"]
    # a small dataset tops up to what it has: three candidates, one the positive
    small = _query(qid="2:q0", positives=("2:0",))
    negatives = _dataset(tmp_path, queries=[small], k=5).negatives_of(0, 0)
    assert sorted(negatives) == ["2:1", "2:2"]
    assert _dataset(tmp_path, queries=[q], k=0).negatives_of(0, 0) == []


def test_skip_bad_inputs_returns_the_skip_marker_or_raises_naming_the_file(tmp_path):
    gone = tmp_path / "gone.png"
    queries = [
        _query(qid="1:q0", image=str(gone)),  # the query's own image is missing
        _query(qid="1:q1", positives=("1:20",)),  # the positive's image is missing
        _query(qid="1:q2", negatives=("1:21", "1:3"), positives=("1:4",)),  # one negative's image is missing
    ]
    options = {"queries": queries, "k": 2, "fill": False}
    strict, lenient = _dataset(tmp_path, **options), _dataset(tmp_path, skip=True, **options)
    (tmp_path / "20.png").unlink()
    (tmp_path / "21.png").unlink()
    with pytest.raises(BadInputError, match=r"^query 1:q0: image file not found: .*gone\.png$"):
        strict[(0, 0)]
    with pytest.raises(BadInputError, match=r"^candidate 1:20: image file not found: .*20\.png$"):
        strict[(1, 0)]
    with pytest.raises(BadInputError, match=r"^candidate 1:21: image file not found: .*21\.png$"):
        strict[(2, 0)]
    assert lenient[(0, 0)] == {"qid": "1:q0", "skipped": f"query 1:q0: image file not found: {gone}"}
    assert lenient[(1, 0)] == {"qid": "1:q1", "skipped": f"candidate 1:20: image file not found: {tmp_path / '20.png'}"}
    # a bad negative is dropped and reported; the example stays
    example = lenient[(2, 0)]
    assert example["negative_ids"] == ["1:3"] and [n.text for n in example["negatives"]] == ["doc 3"]
    assert example["bad"] == [f"candidate 1:21: image file not found: {tmp_path / '21.png'}"]


def test_positives_must_be_in_the_pool(tmp_path):
    with pytest.raises(BadInputError, match=r"query 1:q0: positive\(s\) \['1:77'\] not in the candidate pool"):
        _dataset(tmp_path, queries=[_query(positives=("1:0", "1:77"))])


def test_length_of_is_the_guessed_length(tmp_path):
    queries = [
        _query(qid="1:q0", text="short"),
        _query(qid="1:q1", text="a much longer query text " * 5),
        _query(qid="1:q2", text="with a picture", image=str(tmp_path / "20.png")),
        _query(qid="1:q3", text=None, image=str(tmp_path / "21.png")),
    ]
    ds = _dataset(tmp_path, queries=queries)
    assert [ds.length_of(i) for i in range(4)] == [guessed_length(q.text, q.image is not None) for q in queries]
    assert ds.length_of(2) > ds.length_of(1) > ds.length_of(0)


def test_on_the_mbeir_sample_instructions_come_from_the_tsv(mbeir_root):
    files = [mbeir_root / f"query/test/mbeir_{name}_test.jsonl" for name in ("toy_t2i", "toy_it2i")]
    queries = [q for path in files for q in load_queries(path, mbeir_root)]
    pool = CandidatePool.load(mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", mbeir_root)
    instructions = Instructions.load(mbeir_root / "instructions/query_instructions.tsv")
    ds = ContrastiveDataset(queries, pool, instructions, None, ExampleOptions(num_negatives=1))
    assert ds.groups() == {"toy_t2i": [0, 1], "toy_it2i": [2]}
    t2i = {ds.instruction_of(0, e) for e in EPOCHS}
    it2i = {ds.instruction_of(2, e) for e in EPOCHS}
    assert t2i == {"Find the image.", "Show the picture.", "Retrieve the photo.", "Get the image."}
    assert it2i == {"Apply the change.", "Edit the image.", "Transform it.", "Modify it."}
    # 1:1's listed negative is 1:11; 1:2 lists none, so its negative is topped up from dataset 1
    assert {d for e in EPOCHS for d in ds.negatives_of(0, e)} == {"1:11"}
    assert {d for e in EPOCHS for d in ds.negatives_of(1, e)} == {"1:10"}
    example = ds[(2, 0)]
    assert example["query"].text == "rotated" and example["query"].image.size == (16, 16)
    assert example["positive_id"] == "3:10" and example["negative_ids"] == ["3:11"]
    assert example["relevant_ids"] == ["3:10"]
