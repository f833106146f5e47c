"""Every row of docs/bad_inputs.md, run through the ``jfe`` command: the input fails with one line
that says what and where (the table's text is what is checked), or, for the inputs jfe accepts
by design, it succeeds and says what it did."""

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from jfe import Embedder
from jfe.cli import run
from jfe.train.checkpoints import mark_complete

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"


def doc_rows() -> dict[str, str]:
    """case id -> the message fragment the table promises (its last column, in backticks)."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `([a-z0-9-]+)` \|.*\| `(.+)` \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def cand(did, txt=None, img=None, modality=None):
    return {"did": did, "txt": txt, "img_path": img, "modality": modality or ("image" if img else "text")}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model(tiny_model_dir, tmp_path_factory):
    return Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(
        tmp_path_factory.mktemp("bad") / "model"
    )


class Case:
    """Writes a bad input under ``root`` and returns the jfe command line that meets it."""

    def __init__(self, root: Path, model: Path):
        self.root, self.model = root, model
        (root / "images").mkdir()
        Image.new("RGB", (16, 16), (200, 30, 30)).save(root / "images" / "ok.png")

    def encode(self, pool: Path, *extra: str) -> list[str]:
        out = self.root / f"emb-{pool.stem}"
        return ["encode", "--model", str(self.model), "--data", str(pool), "--images-root", str(self.root),
                "--out", str(out), "--num-workers", "0", *extra]  # fmt: skip

    def pool(self, name: str, rows=None, raw: bytes | None = None) -> Path:
        path = self.root / name
        if raw is not None:
            path.write_bytes(raw)
            return path
        return write_jsonl(path, rows)

    def image_pool(self, name: str, data: bytes) -> list[str]:
        (self.root / "images" / name).write_bytes(data)
        return self.encode(self.pool(f"{Path(name).stem}.jsonl", [cand("1:1", img=f"images/{name}")]))

    def shards(self, name: str, rows) -> Path:
        assert run(self.encode(self.pool(f"{name}.jsonl", rows), "--dtype", "float32")) == 0
        return self.root / f"emb-{name}"


def build(case: str, c: Case) -> list[str]:
    ok = json.dumps(cand("1:1", "a seven")).encode() + b"\n"
    if case == "malformed-jsonl":
        return c.encode(c.pool("bad.jsonl", raw=ok + b'{"did": "1:2", "txt": \n'))
    if case == "non-utf8":
        return c.encode(c.pool("latin1.jsonl", raw=ok + b'{"did": "1:2", "txt": "caf\xe9", "modality": "text"}\n'))
    if case == "missing-image":
        return c.encode(c.pool("missing.jsonl", [cand("1:1", img="images/nowhere.png")]))
    if case == "corrupt-image":
        return c.image_pool("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 40)
    if case == "empty-image":
        return c.image_pool("empty.png", b"")
    if case == "empty-text":
        return c.encode(c.pool("empty_text.jsonl", [cand("1:1", "a seven"), cand("1:2", "")]))
    if case == "wrong-modality":
        return c.encode(c.pool("picture.jsonl", [cand("1:1", "a seven", modality="picture")]))
    if case == "duplicate-did":
        return c.encode(c.pool("dup.jsonl", [cand("1:1", "a seven"), cand("1:1", "a one")]))
    if case == "empty-pool":
        return c.encode(c.pool("nothing.jsonl", raw=b""))
    if case == "outside-root":
        return c.encode(c.pool("escape.jsonl", [cand("1:1", img="../../etc/passwd")]))
    if case == "huge-image":
        Image.new("RGB", (7100, 7100), (255, 255, 255)).save(c.root / "images" / "huge.png")  # 50.4 megapixels
        return c.encode(c.pool("huge.jsonl", [cand("1:1", img="images/huge.png")]))
    if case == "long-text":
        return c.encode(c.pool("long.jsonl", [cand("1:1", "seven " * 2000), cand("1:2", "one")]))
    if case == "unknown-qrels":
        (c.root / "run.trec").write_text("1:1 Q0 1:10 1 0.9 jfe\n")
        (c.root / "qrels.txt").write_text("7:1 0 7:10 1 0\n")
        return ["eval", "--run", str(c.root / "run.trec"), "--qrels", str(c.root / "qrels.txt")]
    if case == "dims-mismatch":
        first = c.shards("first", [cand("1:1", "a seven")])
        assert run([*c.encode(c.pool("second.jsonl", [cand("1:2", "a one")])), "--dim", "16"]) == 0
        return ["index", "--embeddings", str(first), str(c.root / "emb-second"), "--out", str(c.root / "index")]
    if case == "truncated-shard":
        shards = c.shards("cut", [cand("1:1", "a seven"), cand("1:2", "a one")])
        tensor = shards / "shard-00000-of-00001" / "embeddings.safetensors"
        tensor.write_bytes(tensor.read_bytes()[:-10])
        return ["index", "--embeddings", str(shards), "--out", str(c.root / "index")]
    if case == "stale-shard":
        c.shards("stale", [cand("1:1", "a seven")])
        other = Embedder.from_pretrained(c.model, dtype="float32", device="cpu")
        with torch.no_grad():
            next(iter(other.model.parameters())).add_(0.01)
        c.model = other.save(c.root / "other-model")
        return c.encode(c.root / "stale.jsonl", "--dtype", "float32")  # into the first model's shards
    if case == "training-folder":
        (c.root / "runs" / "s1" / "checkpoint-10").mkdir(parents=True)
        mark_complete(c.root / "runs" / "s1" / "checkpoint-10", 10, 1)
        return ["encode", "--model", str(c.root / "runs" / "s1"), "--data", str(c.pool("t.jsonl", [cand("1:1", "a")])),
                "--out", str(c.root / "e")]  # fmt: skip
    if case == "not-a-model":
        return ["encode", "--model", str(c.root / "images"), "--data", str(c.pool("n.jsonl", [cand("1:1", "a")])),
                "--out", str(c.root / "e")]  # fmt: skip
    raise KeyError(case)


ACCEPTED = {"huge-image", "long-text"}  # jfe embeds these by design, and says what it did


@pytest.mark.parametrize("case", sorted(doc_rows()))
def test_bad_input_is_named_as_the_table_says(case, model, tmp_path, capsys, caplog):
    expected = doc_rows()[case]
    argv = build(case, Case(tmp_path, model))
    capsys.readouterr()
    code = run(argv)
    out, err = capsys.readouterr()
    if case in ACCEPTED:
        assert code == 0
        assert expected in caplog.text + out + err
        return
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("jfe ")]
    assert len(lines) == 1 and "Traceback" not in err
    assert expected in lines[0], lines[0]


def test_the_table_covers_every_case():
    assert set(doc_rows()) == {
        "malformed-jsonl", "non-utf8", "missing-image", "corrupt-image", "empty-image", "empty-text",
        "wrong-modality", "duplicate-did", "empty-pool", "outside-root", "huge-image", "long-text",
        "unknown-qrels", "dims-mismatch", "truncated-shard", "stale-shard", "training-folder", "not-a-model",
    }  # fmt: skip


def test_huge_image_is_bounded_by_the_image_budget(model):
    processor = Embedder.from_pretrained(model, dtype="float32", device="cpu").processor.image_processor
    big = Image.new("RGB", (7100, 7100), (255, 255, 255))
    _, height, width = (int(x) for x in processor(images=[big], return_tensors="np")["image_grid_thw"][0])
    assert height * width * processor.patch_size**2 <= processor.size["longest_edge"]
