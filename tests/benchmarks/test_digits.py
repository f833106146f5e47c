"""The digits benchmark: M-BEIR layout and schema, id integrity, image content, task semantics,
writer-disjoint splits, determinism, the build-once cache, the builder registry and an unchanged build."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from jfe.benchmarks.digits import (
    DEFAULT_SHORTCUT,
    DIGITS_TASKS,
    SPLIT_WRITERS,
    TASKS,
    build_digits_mbeir,
    ensure_digits_mbeir,
)
from jfe.benchmarks.digits.context import BUILDERS, builds

# The digest of the benchmark as format 2 built it (seed 0) before it moved from jfe.data.digits to
# jfe.benchmarks.digits. A change to the builder that alters any file or pixel must bump FORMAT_VERSION
# and this digest together, so that caches of the old benchmark are rebuilt.
DIGEST_FORMAT_2_SEED_0 = "c57dfd6389a7863a6869a25ebfbb5c4bb47d59e9e06023c5202caf1c3cbb0d54"

SPLITS = ("train", "val", "test")
QUERY_KEYS = [
    "qid",
    "query_txt",
    "query_img_path",
    "query_modality",
    "query_src_content",
    "pos_cand_list",
    "neg_cand_list",
    "task_id",
]
CAND_KEYS = ["did", "txt", "img_path", "modality", "src_content"]
EXPECTED = {  # dataset -> (task_id, query modality, candidate modality)
    "digits_t2i": (0, "text", "image"),
    "digits_i2t": (3, "image", "text"),
    "digits_i2i": (4, "image", "image"),
    "digits_it2t": (6, "image,text", "text"),
    "digits_it2i": (7, "image,text", "image"),
}
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRANSFORMS = ["rotated", "mirrored", "inverted"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return build_digits_mbeir(tmp_path_factory.mktemp("bench") / "digits", seed=0)


@pytest.fixture(scope="module")
def sk():
    data = load_digits()
    return np.rint(data.images).astype(np.int64), data.target


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def queries(root: Path, name: str, split: str) -> list[dict]:
    return read_jsonl(root / "query" / split / f"mbeir_{name}_{split}.jsonl")


def pool(root: Path, name: str, split: str) -> list[dict]:
    return read_jsonl(root / "cand_pool" / "local" / f"mbeir_{name}_{split}_cand_pool.jsonl")


def src(row: dict) -> dict:
    return json.loads(row["query_src_content"] if "qid" in row else row["src_content"])


def expected_pixels(grid: np.ndarray, transform: str) -> np.ndarray:
    """Independent re-implementation of the documented rendering: transform on 0..16, then x2, white ink."""
    if transform == "rotated":
        grid = grid[::-1, ::-1]
    elif transform == "mirrored":
        grid = grid[:, ::-1]
    elif transform == "inverted":
        grid = 16 - grid
    grey = np.kron(grid * 255 // 16, np.ones((2, 2), dtype=np.int64)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def hand(split: str, writer: int) -> int:
    """Which half of the split's writers ``writer`` is in (0 or 1), counted independently of the builder."""
    writers = sorted(SPLIT_WRITERS[split])
    return int(writers.index(writer) >= len(writers) // 2)


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def benchmark_checksum(root: Path) -> str:
    """SHA-256 over the data files' bytes and the images' decoded pixels, each with its relative path.

    Pixels rather than PNG bytes, so a Pillow that compresses differently does not count as a change;
    README.md and .complete are left out, since they name the builder's module.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.suffix in (".jsonl", ".tsv", ".txt"):
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
        elif path.suffix == ".png":
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
            digest.update(rel.encode() + b"\0" + repr(pixels.shape).encode() + b"\0" + pixels.tobytes() + b"\0")
        else:
            assert path.name in ("README.md", ".complete"), f"unexpected file {rel}"
    return digest.hexdigest()


def test_built_benchmark_is_unchanged(root):
    assert benchmark_checksum(root) == DIGEST_FORMAT_2_SEED_0


def test_every_task_has_exactly_one_builder():
    assert sorted(BUILDERS) == sorted(DIGITS_TASKS) and len(BUILDERS) == len(TASKS)
    with pytest.raises(ValueError, match="already has a builder"):
        builds("digits_t2i")(lambda ctx, task, split: None)
    with pytest.raises(ValueError, match="no digits task"):
        builds("digits_t2t")
    assert BUILDERS["digits_t2i"].__name__ == "t2i"  # the failed registrations changed nothing


def test_every_file_of_the_layout_exists(root):
    assert list(EXPECTED) == DIGITS_TASKS
    for split in SPLITS:
        assert (root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl").is_file()
        for name in DIGITS_TASKS:
            assert (root / "query" / split / f"mbeir_{name}_{split}.jsonl").is_file()
            assert (root / "cand_pool" / "local" / f"mbeir_{name}_{split}_cand_pool.jsonl").is_file()
            assert (root / "qrels" / split / f"mbeir_{name}_{split}_qrels.txt").is_file()
    for rel in ("instructions/query_instructions.tsv", "README.md", ".complete"):
        assert (root / rel).is_file()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_schema_modalities_and_nulls(root):
    for split in SPLITS:
        for name, (task_id, query_mod, cand_mod) in EXPECTED.items():
            for q in queries(root, name, split):
                assert list(q) == QUERY_KEYS
                assert q["task_id"] == task_id and q["query_modality"] == query_mod
                assert (q["query_txt"] is None) == ("text" not in query_mod)
                assert (q["query_img_path"] is None) == ("image" not in query_mod)
                assert isinstance(q["query_src_content"], str) and isinstance(src(q), dict)
                assert q["pos_cand_list"], q["qid"]
            for c in pool(root, name, split):
                assert list(c) == CAND_KEYS
                assert c["modality"] == cand_mod
                assert (c["txt"] is None) == (cand_mod == "image")
                assert (c["img_path"] is None) == (cand_mod == "text")


def test_ids_are_unique_and_carry_their_dataset_id(root):
    qids, dids, dataset_ids = [], [], {}
    for split in SPLITS:
        for name in DIGITS_TASKS:
            rows = queries(root, name, split)
            cands = pool(root, name, split)
            qids += [q["qid"] for q in rows]
            dids += [c["did"] for c in cands]
            prefixes = {i.split(":")[0] for i in [q["qid"] for q in rows] + [c["did"] for c in cands]}
            assert len(prefixes) == 1
            prefix = prefixes.pop()
            assert dataset_ids.setdefault(name, prefix) == prefix  # one dataset id per dataset, every split
            for i in [q["qid"] for q in rows] + [c["did"] for c in cands]:
                a, b = i.split(":")
                assert a.isdigit() and b.isdigit()  # UniIR hashes ids as int:int
    assert len(set(dataset_ids.values())) == len(DIGITS_TASKS)
    assert len(qids) == len(set(qids))
    assert len(dids) == len(set(dids))


def test_positives_exist_and_qrels_match(root):
    for split in SPLITS:
        global_rows = read_jsonl(root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl")
        global_dids = {c["did"] for c in global_rows}
        assert len(global_dids) == len(global_rows)
        union = []
        for name, (task_id, _, _) in EXPECTED.items():
            local = pool(root, name, split)
            union += local
            local_dids = {c["did"] for c in local}
            expected_qrels = set()
            for q in queries(root, name, split):
                pos, neg = set(q["pos_cand_list"]), set(q["neg_cand_list"])
                assert len(pos) == len(q["pos_cand_list"])
                assert pos <= local_dids and pos <= global_dids
                assert neg <= local_dids
                assert not pos & neg, q["qid"]
                expected_qrels |= {(q["qid"], d) for d in pos}
            lines = (root / "qrels" / split / f"mbeir_{name}_{split}_qrels.txt").read_text().splitlines()
            got = set()
            for line in lines:
                qid, zero, did, rel, tid = line.split()
                assert (zero, rel, tid) == ("0", "1", str(task_id))
                assert did in local_dids and did in global_dids
                got.add((qid, did))
            assert len(got) == len(lines)
            assert got == expected_qrels
        assert union == global_rows


def test_images_are_16x16_rgb_and_show_their_source(root, sk):
    images, targets = sk
    seen = set()
    for split in SPLITS:
        for name in DIGITS_TASKS:
            rows = [(q["query_img_path"], src(q), False) for q in queries(root, name, split)]
            rows += [(c["img_path"], src(c), True) for c in pool(root, name, split)]
            for rel, info, is_cand in rows:
                if rel is None:
                    continue
                assert not Path(rel).is_absolute() and rel.startswith(f"images/{split}/")
                assert int(targets[info["sample"]]) == info["digit"]
                transform = info.get("transform", "plain") if is_cand else "plain"
                if (rel, transform) in seen:
                    continue
                seen.add((rel, transform))
                with Image.open(root / rel) as img:
                    assert img.format == "PNG" and img.size == (16, 16) and img.mode == "RGB"
                    pixels = np.asarray(img)
                np.testing.assert_array_equal(pixels, expected_pixels(images[info["sample"]], transform), err_msg=rel)


def test_eval_writers_are_unseen_in_training(root):
    writers = {split: set() for split in SPLITS}
    for split in SPLITS:
        for name in DIGITS_TASKS:
            for row in queries(root, name, split) + pool(root, name, split):
                if "writer" in src(row):
                    writers[split].add(src(row)["writer"])
    assert writers["train"] and writers["val"] and writers["test"]
    assert not writers["train"] & (writers["val"] | writers["test"])
    assert not writers["val"] & writers["test"]


def test_eval_splits_are_cpu_sized(root):
    for split in ("val", "test"):
        for name in DIGITS_TASKS:
            assert 0 < len(queries(root, name, split)) <= 200
            assert 0 < len(pool(root, name, split)) <= 600


def test_t2i_i2t_i2i_semantics(root):
    for split in SPLITS:
        cands = {c["did"]: src(c) for c in pool(root, "digits_t2i", split)}
        by_digit = {d: {did for did, info in cands.items() if info["digit"] == d} for d in range(10)}
        for q in queries(root, "digits_t2i", split):
            d = src(q)["digit"]
            assert NAMES[d] in q["query_txt"].split()
            assert set(q["pos_cand_list"]) == by_digit[d]
            assert all(cands[n]["digit"] != d for n in q["neg_cand_list"])

        texts = {c["did"]: c["txt"] for c in pool(root, "digits_i2t", split)}
        assert sorted(texts.values()) == sorted(f"a handwritten {n}" for n in NAMES)
        for q in queries(root, "digits_i2t", split):
            assert [texts[p] for p in q["pos_cand_list"]] == [f"a handwritten {NAMES[src(q)['digit']]}"]

        cands = {c["did"]: src(c) for c in pool(root, "digits_i2i", split)}
        for q in queries(root, "digits_i2i", split):
            info = src(q)
            other_hands = {did for did, c in cands.items() if hand(split, c["writer"]) != hand(split, info["writer"])}
            same_digit = {did for did in other_hands if cands[did]["digit"] == info["digit"]}
            assert set(q["pos_cand_list"]) == same_digit  # every image of the digit by the other half's writers
            assert set(q["neg_cand_list"]) <= other_hands - same_digit


def test_image_to_image_queries_never_meet_their_own_hand(root):
    for name in ("digits_i2i", "digits_it2i"):
        for split in SPLITS:
            rows = queries(root, name, split)
            query_hands = Counter(hand(split, src(q)["writer"]) for q in rows)
            pool_hands = Counter(hand(split, src(c)["writer"]) for c in pool(root, name, split))
            if split == "train":
                # Both ways over one pool of every train writer: twice the query images to learn from.
                assert set(query_hands) == set(pool_hands) == {0, 1}
                assert {src(q)["writer"] for q in rows} == set(SPLIT_WRITERS["train"])
            else:
                # Eval asks one way: first half's queries, the other half's pool.
                assert set(query_hands) == {0} and set(pool_hands) == {1}
            cands = {c["did"]: src(c) for c in pool(root, name, split)}
            for q in rows:
                listed = [cands[did] for did in q["pos_cand_list"] + q["neg_cand_list"]]
                assert {hand(split, c["writer"]) for c in listed} == {1 - hand(split, src(q)["writer"])}


def test_it2t_is_a_conjunction(root):
    for split in SPLITS:
        cands = {c["did"]: c for c in pool(root, "digits_it2t", split)}
        assert len(cands) == 50
        for q in queries(root, "digits_it2t", split):
            info = src(q)
            colour, name = q["query_txt"], NAMES[info["digit"]]
            assert colour == info["colour"]
            assert [cands[p]["txt"] for p in q["pos_cand_list"]] == [f"a {colour} {name}"]
            negatives = [src(cands[n]) for n in q["neg_cand_list"]]
            assert any(n["digit"] == info["digit"] for n in negatives)  # the image alone is not enough
            assert any(n["colour"] == colour for n in negatives)  # the text alone is not enough
            assert all((n["digit"] == info["digit"]) != (n["colour"] == colour) for n in negatives)


def test_it2i_positives_are_the_digit_so_transformed(root, sk):
    images, _ = sk
    for split in SPLITS:
        cands = {c["did"]: c for c in pool(root, "digits_it2i", split)}
        infos = {did: src(c) for did, c in cands.items()}
        combos = Counter((hand(split, i["writer"]), i["digit"], i["transform"]) for i in infos.values())
        assert {key[1:] for key in combos} == {(d, t) for d in range(10) for t in ["plain", *TRANSFORMS]}
        rows = queries(root, "digits_it2i", split)
        assert {q["query_txt"] for q in rows} == set(TRANSFORMS)
        checked = 0
        for q in rows:
            info = src(q)
            assert q["query_txt"] == info["transform"]
            positives = [infos[p] for p in q["pos_cand_list"]]
            assert {(p["digit"], p["transform"]) for p in positives} == {(info["digit"], info["transform"])}
            assert len(positives) == combos[1 - hand(split, info["writer"]), info["digit"], info["transform"]]
            assert info["writer"] not in {p["writer"] for p in positives}
            for n in q["neg_cand_list"]:
                neg = infos[n]
                assert (neg["digit"] == info["digit"]) != (neg["transform"] == info["transform"])
            if split != "train" or checked < 5:  # pixels of every eval positive, a few train queries
                for did in q["pos_cand_list"]:
                    with Image.open(root / cands[did]["img_path"]) as img:
                        pixels = np.asarray(img)
                    expected = expected_pixels(images[infos[did]["sample"]], q["query_txt"])
                    np.testing.assert_array_equal(pixels, expected)
                checked += 1


def test_instructions_table(root):
    lines = (root / "instructions" / "query_instructions.tsv").read_text(encoding="utf-8").splitlines()
    header = "query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4"
    assert lines[0] == header
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[2] for r in rows] == DIGITS_TASKS
    for query_mod, cand_mod, name, dataset_id, *prompts in rows:
        assert (query_mod, cand_mod) == EXPECTED[name][1:]
        assert dataset_id == queries(root, name, "test")[0]["qid"].split(":")[0]
        assert len(prompts) == 4 and all(p.strip() for p in prompts) and len(set(prompts)) == 4


def test_builds_are_deterministic_and_replace_atomically(root, tmp_path):
    reference = tree_hash(root)
    other = build_digits_mbeir(tmp_path / "other", seed=1)
    assert tree_hash(other) != reference
    # A complete benchmark built with another seed is rebuilt in place, byte for byte like the first.
    assert ensure_digits_mbeir(other, seed=0) == other
    assert tree_hash(other) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


def test_ensure_does_not_rebuild_a_complete_benchmark(root):
    marker, query = root / ".complete", root / "query" / "test" / "mbeir_digits_it2i_test.jsonl"
    before = (marker.stat().st_mtime_ns, query.stat().st_mtime_ns, query.stat().st_ino)
    assert ensure_digits_mbeir(root, seed=0) == root
    assert (marker.stat().st_mtime_ns, query.stat().st_mtime_ns, query.stat().st_ino) == before


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_digits_mbeir(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.fixture(scope="module")
def collapse_root(tmp_path_factory) -> Path:
    return build_digits_mbeir(tmp_path_factory.mktemp("bench") / "collapse", seed=0, shortcut=DEFAULT_SHORTCUT)


def test_collapse_variant_gives_the_digit_away_in_train_only(root, collapse_root):
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "pink", "brown"]
    train = queries(collapse_root, "digits_it2t", "train")
    given_away = np.mean([q["query_txt"] == colours[src(q)["digit"]] for q in train])
    assert abs(given_away - DEFAULT_SHORTCUT) < 0.03
    for split in ("val", "test"):
        rows = queries(collapse_root, "digits_it2t", split)
        # every colour for every image: the colour word says nothing of the digit
        assert 0.05 < np.mean([q["query_txt"] == colours[src(q)["digit"]] for q in rows]) < 0.16
        assert {c["txt"] for c in pool(collapse_root, "digits_it2t", split)} == {
            f"a {c} {n}" for c in colours for n in NAMES
        }
    # every other task, and every split's other files, are the standard benchmark's
    for split in SPLITS:
        for name in DIGITS_TASKS:
            if name != "digits_it2t":
                assert queries(collapse_root, name, split) == queries(root, name, split)
    assert "Collapse-prone variant" in (collapse_root / "README.md").read_text()
    assert json.loads((collapse_root / ".complete").read_text())["shortcut"] == DEFAULT_SHORTCUT
    # the marker tells the two apart: ensure rebuilds the standard benchmark over the variant
    assert ensure_digits_mbeir(collapse_root, seed=0) == collapse_root
    assert "shortcut" not in json.loads((collapse_root / ".complete").read_text())
