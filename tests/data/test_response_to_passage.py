import json

import pytest

from jfe.cli import main as jfe_main
from jfe.data.pairs import load_pairs
from jfe.data.response_to_passage import (
    BadRecordError,
    Generator,
    PassageOptions,
    build_response_to_passage,
    most_common_answer,
)
from jfe.tiny import build_tiny_generator
from tests.conftest import make_image

FAST = {"batch_size": 2, "chunk_size": 3, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    return build_tiny_generator(tmp_path_factory.mktemp("models") / "tiny-generator")


@pytest.fixture(scope="module")
def generator(generator_dir):
    return Generator.load(generator_dir, dtype="float32", device="cpu")


class Spy:
    """A generator that records the prompts it was asked for (the builder uses settings and generate)."""

    def __init__(self, inner):
        self.inner, self.settings, self.prompts, self.images = inner, inner.settings, [], []

    def generate(self, prompts, images, max_new_tokens):
        self.prompts += prompts
        self.images.append(images)
        return self.inner.generate(prompts, images, max_new_tokens)


def _vqa(folder, n=7, extra=()):
    """n VQA records (one VQAv2-style, one with an integer id) with images, then ``extra`` records."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        make_image(i, (16, 8 + 4 * i)).save(folder / "imgs" / f"{i}.png")
        rows.append({"id": f"q{i}", "image": f"imgs/{i}.png", "question": f"what is shown {i}", "answer": "a dog"})
    if n > 1:
        rows[1] = {
            "id": 1,
            "image": "imgs/1.png",
            "question": "which colour",
            "answers": ["red", "blue", "blue", "red"],
        }
    path = folder / "vqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *extra]))
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_line_is_a_pair_the_reader_loads(tmp_path, generator):
    source = _vqa(tmp_path / "vqa")
    out = tmp_path / "out" / "pairs.jsonl"
    report = build_response_to_passage(source, out, generator, PassageOptions(**FAST))
    rows = _lines(out)
    assert report.rows == len(rows) == 7 and report.skipped == 0 and report.resumed_at == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["pairs.jsonl"]  # no partial or progress left
    records = _lines(source)
    for row, record in zip(rows, records, strict=True):
        assert list(row) == ["query", "pos", "instruction", "id", "question", "answer"]
        assert row["query"] == {"text": record["question"], "image": f"../vqa/{record['image']}"}
        assert len(row["pos"]) == 1 and list(row["pos"][0]) == ["text"] and row["pos"][0]["text"].strip()
        assert row["instruction"] == "Retrieve a passage that answers the question about the image."
        assert (row["id"], row["question"]) == (record["id"], record["question"])
    assert rows[1]["id"] == 1 and rows[1]["answer"] == "red"  # 2 each: the first listed
    queries, pool = load_pairs(out)
    assert len(queries) == 7
    for query, row, record in zip(queries, rows, records, strict=True):
        assert query.text == record["question"] and query.modality == "image,text"
        assert query.image == str(out.parent / "../vqa" / record["image"])
        assert query.instruction == row["instruction"]
        assert pool[query.positives[0]].text == row["pos"][0]["text"]


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, generator):
    source = _vqa(tmp_path)
    whole = tmp_path / "whole.jsonl"
    build_response_to_passage(source, whole, generator, PassageOptions(**FAST))

    def kill(chunk, done):
        if chunk == 1:
            raise KeyboardInterrupt  # after two committed chunks (6 of 7 records)

    out = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        build_response_to_passage(source, out, generator, PassageOptions(**FAST), on_chunk=kill)
    partial = tmp_path / "resumed.jsonl.partial"
    assert not out.exists() and len(partial.read_text().splitlines()) == 6
    with open(partial, "a") as handle:  # a chunk half-appended when the process died
        handle.write('{"query": {"text": "half')
    with pytest.raises(ValueError, match=r"other settings \(max_new_tokens\)"):
        build_response_to_passage(source, out, generator, PassageOptions(**{**FAST, "max_new_tokens": 7}))
    spy = Spy(generator)
    report = build_response_to_passage(source, out, spy, PassageOptions(**FAST))
    assert report.resumed_at == 6 and report.rows == 7
    assert spy.prompts == [PassageOptions().prompt.format(question="what is shown 6", answer="a dog")]
    assert [[image.size for image in images] for images in spy.images] == [[(32, 16)]]  # the generator saw it
    assert out.read_bytes() == whole.read_bytes()
    assert not partial.exists() and not (tmp_path / "resumed.jsonl.progress.json").exists()
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_response_to_passage(source, out, generator, PassageOptions(**FAST))


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"id": "b", "image": "imgs/0.png", "answer": "x"}, "'question' is missing"),
        ({"id": "b", "image": "imgs/0.png", "question": "q", "answer": 3}, "'answer' should be a non-empty string"),
        ({"id": "b", "image": "imgs/0.png", "question": "q", "answers": []}, "'answers' should be a non-empty list"),
        ({"id": "b", "image": "imgs/none.png", "question": "q", "answer": "x"}, "image file not found"),
        ({"id": "b", "image": "corrupt.png", "question": "q", "answer": "x"}, "not a readable image"),
    ],
)
def test_a_bad_record_fails_naming_file_line_and_id(tmp_path, generator, record, problem):
    source = _vqa(tmp_path, n=2, extra=[record])
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    with pytest.raises(BadRecordError, match=rf'vqa\.jsonl:3 \(id "b"\): .*{problem}'):
        build_response_to_passage(source, tmp_path / "out.jsonl", generator, PassageOptions(**FAST))
    assert not (tmp_path / "out.jsonl").exists()


def test_skip_bad_leaves_bad_records_out_and_counts_them(tmp_path, generator):
    bad = [{"id": None, "image": "imgs/0.png"}, ["not", "an", "object"], {"id": "x", "image": "imgs/9.png"}, {}]
    source = _vqa(tmp_path, n=3, extra=bad)
    out, spy = tmp_path / "out.jsonl", Spy(generator)
    report = build_response_to_passage(source, out, spy, PassageOptions(**FAST, skip_bad=True, with_image=False))
    assert (report.rows, report.skipped) == (3, 4)
    assert len(spy.prompts) == 3 and spy.images == [None, None]  # --no-with-image: text only
    assert [row["id"] for row in _lines(out)] == ["q0", 1, "q2"]
    with pytest.raises(BadRecordError, match=r"vqa\.jsonl:4: 'id' should be a string or an integer, got null"):
        build_response_to_passage(source, out, generator, PassageOptions(**FAST), overwrite=True)
    source.write_text(source.read_text().splitlines(keepends=True)[-1])
    with pytest.raises(BadRecordError, match=r"vqa\.jsonl:1: 'id' is missing"):
        build_response_to_passage(source, out, generator, PassageOptions(**FAST), overwrite=True)


def test_options_are_checked_before_any_work(tmp_path, generator):
    source = _vqa(tmp_path, n=1)
    for prompt, message in [("Say {answer}.", r"needs both placeholders"), ("{question} {x} {answer}", "braces")]:
        with pytest.raises(ValueError, match=message):
            build_response_to_passage(source, tmp_path / "o.jsonl", generator, PassageOptions(prompt=prompt))
    assert most_common_answer([{"answer": "net"}, "bat", {"answer": "bat"}]) == "bat"


def test_cli_with_field_names_and_no_image_for_the_generator(tmp_path, generator_dir, capsys):
    (tmp_path / "pics").mkdir()
    make_image(5).save(tmp_path / "pics" / "a.png")
    source = tmp_path / "okvqa.jsonl"
    source.write_text(json.dumps({"question_id": 7, "img": "a.png", "q": "what is it", "answers": ["cat"]}) + "\n")
    out = tmp_path / "pairs.jsonl"
    argv = ["data", "response-to-passage", "--input", str(source), "--generator", str(generator_dir)]
    argv += ["--out", str(out), "--images-root", str(tmp_path / "pics"), "--id-field", "question_id"]
    argv += ["--image-field", "img", "--question-field", "q", "--no-with-image", "--instruction", "", "--task", "vqa"]
    argv += ["--max-new-tokens", "4", "--dtype", "float32", "--device", "cpu"]
    assert jfe_main(argv) == 0
    assert "wrote 1 pairs" in capsys.readouterr().out
    (row,) = _lines(out)
    assert list(row) == ["query", "pos", "task", "id", "question", "answer"]
    assert row["query"] == {"text": "what is it", "image": "pics/a.png"} and row["answer"] == "cat"
    assert jfe_main(argv) == 1  # a finished build is refused, with a message, not a traceback
    assert "exists (a finished build)" in capsys.readouterr().err
    argv[argv.index("--input") + 1] = str(tmp_path / "missing.jsonl")
    assert jfe_main([*argv, "--overwrite"]) == 1
    assert "missing.jsonl" in capsys.readouterr().err


def test_jfe_train_trains_on_the_output(tmp_path, generator, generator_dir):
    from jfe.train.config import TrainConfig
    from jfe.train.trainer import build_dataset, run

    out = tmp_path / "pairs.jsonl"
    build_response_to_passage(_vqa(tmp_path, n=8), out, generator, PassageOptions(**FAST))
    config = TrainConfig(
        model=str(generator_dir),
        output_dir=str(tmp_path / "run"),
        data_format="pairs",
        pairs_files=[str(out)],
        per_device_batch_size=4,
        max_steps=2,
        logging_steps=1,
        save_steps=100,
        trainable="full",
    )
    dataset = build_dataset(config)
    assert len(dataset) == 8
    example = dataset[(0, 0)]
    assert example["query"].image is not None and example["query"].text == "what is shown 0"
    assert example["instruction"] == "Retrieve a passage that answers the question about the image."
    summary = json.loads((run(config) / "jfe_train.json").read_text())
    assert summary["global_steps"] == 2
