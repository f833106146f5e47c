"""ContrastiveDataset: what one training example holds, drawn reproducibly per (index, epoch)."""

from collections import defaultdict
from dataclasses import replace

import pytest

from jfe.data.dataset import ContrastiveDataset, ExampleOptions, group_labels
from jfe.data.instructions import Instructions
from jfe.data.mbeir import CandidatePool, Query, Record, dataset_id_of, load_queries
from jfe.data.mimic import MimicOptions
from jfe.data.pairs import InMemoryPool
from jfe.data.sampler import TaskBatchSampler
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


def test_a_positive_missing_from_the_pool_is_dropped_and_counted(tmp_path, caplog):
    queries = [
        _query(qid="1:q0", positives=("1:0", "1:77", "1:78")),
        _query(qid="1:q1", positives=("1:1",)),
        _query(qid="1:q0", positives=("1:0", "1:77", "1:78")),  # an up-sampled repeat counts again
    ]
    with caplog.at_level("WARNING", logger="jfe.data.dataset"):
        ds = _dataset(tmp_path, queries=queries)
    assert ds.missing_positives == 4
    assert [q.positives for q in ds.queries] == [("1:0",), ("1:1",), ("1:0",)]
    assert {ds.positive_of(0, e) for e in EPOCHS} == {"1:0"}
    assert ds[(0, 3)]["relevant_ids"] == ["1:0"]
    (record,) = [r for r in caplog.records if "not in the candidate pool" in r.getMessage()]  # logged once
    assert record.getMessage().startswith("4 positive(s) of 2 query row(s) are not in the candidate pool")
    assert "1:q0: 1:77, 1:78" in record.getMessage()
    # an error only when a query has none left, naming it
    with pytest.raises(
        BadInputError, match=r"query 1:q2: none of its positive\(s\) \['1:77'\] is in the candidate pool"
    ):
        _dataset(tmp_path, queries=[queries[1], _query(qid="1:q2", positives=("1:77",))])
    with pytest.raises(BadInputError, match=r"query 1:q3: it has no positive"):
        _dataset(tmp_path, queries=[_query(qid="1:q3", positives=())])


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


def _task_query(qid, task_id, dataset):
    return Query(qid, "what", None, "text", (f"{qid}:pos",), task_id=task_id, dataset=dataset)


def test_groups_are_one_dataset_id_and_task_each_named_readably(tmp_path):
    queries = [
        # per-dataset files, one dataset id and task each (M-BEIR's layout): named after the file, as before
        _task_query("1:1", 0, "toy_t2i"),
        _task_query("1:2", 0, "toy_t2i"),
        _task_query("2:1", 3, "toy_i2t"),
        # UniIR's union file: every dataset and task in one file
        _task_query("9:1", 0, "union_up"),
        _task_query("9:2", 3, "union_up"),
        _task_query("9:3", 0, "union_up"),
        _task_query("4:1", 4, "union_up"),
        _task_query("20:1", 0, "union_up"),
        _task_query("77:1", 1, "union_up"),
        # one file with two tasks is two groups
        _task_query("5:1", 6, "oven"),
        _task_query("5:2", 8, "oven"),
        # the pair format: its task
        Query("mine:q0", "x", None, "text", ("mine:1",), dataset="mine"),
    ]
    pool = InMemoryPool({d: Record(d, "doc", None, "text") for q in queries for d in q.positives})
    instructions = Instructions({}, names={"20": "digits_t2i"})
    ds = ContrastiveDataset(queries, pool, instructions)
    assert ds.groups() == {
        "toy_t2i": [0, 1],
        "toy_i2t": [2],
        "MSCOCO/task0": [3, 5],  # UniIR's names for the dataset ids, with the task when there are several
        "MSCOCO/task3": [4],
        "NIGHTS": [6],
        "digits_t2i": [7],  # the instruction table's names first
        "77": [8],  # an id nobody names
        "OVEN/task6": [9],
        "OVEN/task8": [10],
        "mine": [11],
    }
    # without an instruction table, UniIR's names
    assert ContrastiveDataset(queries, pool).groups()["20"] == [7]
    # names that meet fall back to the ids, which cannot
    clash = [_task_query("1:1", 0, "NIGHTS"), _task_query("4:1", 4, "union_up"), _task_query("9:1", 0, "union_up")]
    assert sorted(group_labels(clash).values()) == ["1/task0", "4/task4", "MSCOCO"]


def test_a_union_file_groups_as_its_per_dataset_files_do(mbeir_root):
    names = ("toy_t2i", "toy_i2t", "toy_it2i")
    files = [mbeir_root / f"query/test/mbeir_{name}_test.jsonl" for name in names]
    union = mbeir_root / "query/union_test/mbeir_union_up_test.jsonl"
    union.parent.mkdir(parents=True)
    union.write_text("".join(f.read_text() for f in files))
    pool = CandidatePool.load(mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", mbeir_root)
    instructions = Instructions.load(mbeir_root / "instructions/query_instructions.tsv")
    per_file = ContrastiveDataset([q for f in files for q in load_queries(f, mbeir_root)], pool, instructions)
    one_file = ContrastiveDataset(load_queries(union, mbeir_root), pool, instructions)
    assert per_file.groups() == one_file.groups() == {"toy_t2i": [0, 1], "toy_i2t": [2], "toy_it2i": [3]}


@pytest.mark.slow
def test_digits_groups_and_plans_are_those_of_the_file_names(tmp_path):
    """The tiny demo trains on exactly the batches it did when groups were the query files' names,
    and a union file of the same queries gives the same groups."""
    from jfe.train.config import load_config
    from jfe.train.trainer import build_dataset

    config = replace(load_config("recipes/tiny-stage2.yaml"), output_dir="unused")
    ds = build_dataset(config)
    by_file = defaultdict(list)
    for i, q in enumerate(ds.queries):
        by_file[q.dataset].append(i)
    assert ds.groups() == dict(by_file) and set(by_file) == set(config.task_weights)
    for weights in (config.task_weights, None):
        plans = [
            TaskBatchSampler(groups, 32, seed=0, weights=weights, positive_of=ds.positive_of).plan(epoch)
            for groups in (ds.groups(), dict(by_file))
            for epoch in (0, 1)
        ]
        assert plans[:2] == plans[2:]
    union = tmp_path / "mbeir_union_up_train.jsonl"
    root = ds.instructions.path.parents[1]
    union.write_text("".join(p.read_text() for p in sorted((root / "query/train").glob("*.jsonl"))))
    from_union = build_dataset(replace(config, query_file=str(union)))
    labels = {name: {ds.queries[i].id for i in indices} for name, indices in ds.groups().items()}
    assert {name: {from_union.queries[i].id for i in idx} for name, idx in from_union.groups().items()} == labels


def test_uniir_format_prepares_texts_as_uniir_embeds_them(mbeir_root):
    from jfe.data.dataset import ContrastiveDataset, ExampleOptions
    from jfe.data.instructions import Instructions
    from jfe.data.mbeir import CandidatePool, MBeirLayout, load_queries
    from jfe.data.uniir import format_string

    layout = MBeirLayout(mbeir_root)
    queries = load_queries(layout.query_file("toy_it2i", "test"), mbeir_root)
    pool = CandidatePool.load(layout.local_pool_file("toy_it2i", "test"), mbeir_root)
    table = Instructions.load(layout.instructions_file)
    plain = ContrastiveDataset(queries, pool, table, options=ExampleOptions(seed=1))[(0, 0)]
    uniir = ContrastiveDataset(queries, pool, table, options=ExampleOptions(seed=1, uniir_format=True))[(0, 0)]
    assert plain["query"].text == "rotated" and uniir["query"].text == "rotated."
    assert uniir["instruction"] == format_string(plain["instruction"])  # the same draw, formatted
    texts = ContrastiveDataset(
        load_queries(layout.query_file("toy_i2t", "test"), mbeir_root),
        CandidatePool.load(layout.local_pool_file("toy_i2t", "test"), mbeir_root),
        table,
        options=ExampleOptions(uniir_format=True),
    )[(0, 0)]
    assert texts["positive"].text == "A seven."
