"""``jfe eval --report``: a valid, self-contained page whose ranks are the runs' own."""

import base64
import io
import json
import re
from html.parser import HTMLParser

import pytest
from PIL import Image

from jfe.data.mbeir import Query, Record
from jfe.retrieval.report import THUMBNAIL_PIXELS, TaskRun, positive_rank, render_report

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """Checks that tags nest and close, and collects what the tests look at."""

    def __init__(self, text: str):
        super().__init__()
        self.stack: list[str] = []
        self.sources: list[str] = []
        self.rows: list[dict] = []  # one per query row: qid and its cells' texts and classes
        self.sections: list[str] = []
        self._cell: dict | None = None
        self._heading = False
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed tags: {self.stack}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if name in attrs:
                self.sources.append(attrs[name])
        if tag == "h2":
            self._heading = True
        if tag == "tr" and "data-qid" in attrs:
            self.rows.append({"qid": attrs["data-qid"], "cells": []})
        if tag == "td" and self.rows and self.stack[-1] == "tr" and self._in_query_row():
            self._cell = {"class": attrs.get("class", ""), "text": "", "images": 0}
            self.rows[-1]["cells"].append(self._cell)
        if tag == "img" and self._cell is not None:
            self._cell["images"] += 1
        if tag not in VOID:
            self.stack.append(tag)

    def _in_query_row(self) -> bool:
        return self.rows and self.rows[-1].get("open", True)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag == "td":
            self._cell = None
        if tag == "tr" and self.rows:
            self.rows[-1]["open"] = False
        if tag == "h2":
            self._heading = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._heading:
            self.sections.append(data)


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (200, 100) if i == 0 else (16, 16), (60 * i, 0, 0)).save(path)
        paths.append(str(path))
    return paths


def _runs(images):
    pool = {f"d{i}": Record(f"d{i}", None if i % 2 else f"caption <{i}>", images[i % 4], "image") for i in range(8)}
    queries = [Query(f"q{i}", "rotated & <b>", images[i % 4], "image,text", positives=(f"d{i}",)) for i in range(12)]
    ranked = [[f"d{(i + j) % 8}" for j in range(8)] for i in range(12)]  # q_i's positive d_(i%8) is first
    ranked[3] = ["d1", "d2", "d3", "d4", "d5", "d6"]  # d3 at rank 3
    ranked[5] = ["d0", "d1"]  # positive d5 not retrieved
    scores = [[1.0 - 0.1 * j for j in range(len(r))] for r in ranked]
    full = TaskRun(queries, ["Apply it."] * 12, ranked, scores, pool)
    moved = [r[1:] + r[:1] for r in ranked]  # without the image every positive falls one place
    probe = TaskRun(queries, ["Apply it."] * 12, moved, scores, pool)
    text_queries = [Query(f"t{i}", "a seven", None, "text", positives=("d0",)) for i in range(3)]
    text_run = TaskRun(text_queries, [None] * 3, [["d1", "d0"]] * 3, [[0.9, 0.8]] * 3, pool)
    return {"fused": full, "text only": text_run}, {"fused": probe}


def test_page_is_valid_self_contained_and_escaped(images):
    runs, probe = _runs(images)
    text = render_report(runs, without_image=probe, title="model <x>", sample=5, seed=1)
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    assert page.sources and all(s.startswith("data:image/png;base64,") for s in page.sources)
    assert not re.search(r"https?://|<script|<link", text)
    assert "<b>" not in text and "&lt;b&gt;" in text and "model &lt;x&gt;" in text
    # every inlined image is a real PNG, no longer than the thumbnail bound
    for source in set(page.sources):
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            assert max(image.size) <= THUMBNAIL_PIXELS
    assert page.sections == ["fused", "text only"]


def test_rows_are_a_seeded_sample_with_top5_hits_and_both_ranks(images):
    runs, probe = _runs(images)
    page = Page(render_report(runs, without_image=probe, sample=5, seed=1))
    fused = [r for r in page.rows if r["qid"].startswith("q")]
    assert len(fused) == 5 and len({r["qid"] for r in fused}) == 5
    assert [r["qid"] for r in Page(render_report(runs, without_image=probe, sample=5, seed=1)).rows] == [
        r["qid"] for r in page.rows
    ]
    assert [r["qid"] for r in Page(render_report(runs, without_image=probe, sample=5, seed=2)).rows] != [
        r["qid"] for r in page.rows
    ]
    for row in fused:
        i = int(row["qid"][1:])
        query, cells = runs["fused"].queries[i], row["cells"]
        rank, ablated = positive_rank(query, runs["fused"].ranked[i]), positive_rank(query, probe["fused"].ranked[i])
        assert cells[1]["text"] == (str(rank) if rank else "> 8")
        assert cells[2]["text"] == (str(ablated) if ablated else "> 8")
        shown = runs["fused"].ranked[i][:5]
        top = cells[3:]
        assert len(top) == len(shown)
        assert [c["class"] == "hit" for c in top] == [did in query.positives for did in shown]
        assert all(c["images"] == 1 for c in top)
    # a task without image+text queries has no probe column; all 3 of its queries are shown
    text_rows = [r for r in page.rows if r["qid"].startswith("t")]
    assert len(text_rows) == 3 and all(len(r["cells"]) == 2 + 2 for r in text_rows)
    assert all(r["cells"][1]["text"] == "2" for r in text_rows)


def test_eval_report_from_the_cli_matches_the_runs(tiny_model_dir, mbeir_root, tmp_path):
    from jfe import Embedder
    from jfe.cli import main
    from jfe.retrieval.evaluate import evaluate_mbeir
    from jfe.retrieval.items import TextStyle

    model = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(tmp_path / "m")
    out, report = tmp_path / "eval", tmp_path / "report.html"
    args = ["eval", "--model", str(model), "--mbeir-root", str(mbeir_root), "--out", str(out)]
    args += ["--instruction-policy", "first", "--report", str(report)]
    assert main(args) == 0
    page = Page(report.read_text())
    assert page.sections == ["toy_i2t", "toy_it2i", "toy_t2i"]
    ranks = {}
    for name in page.sections:
        for line in (out / "runs" / f"{name}.trec").read_text().splitlines():
            qid, _, did, *_ = line.split()
            ranks.setdefault(qid, []).append(did)
    queries = {}
    for name in page.sections:
        for line in (mbeir_root / f"query/test/mbeir_{name}_test.jsonl").read_text().splitlines():
            row = json.loads(line)
            queries[row["qid"]] = row
    assert sorted(r["qid"] for r in page.rows) == sorted(queries)
    # the image-removed rank is the ablated run's, written here by the evaluator itself
    embedder = Embedder.from_pretrained(model, dtype="float32", device="cpu")
    ablated_dir = tmp_path / "ablated"
    evaluate_mbeir(
        embedder,
        mbeir_root,
        datasets=["toy_it2i"],
        ablate_modality="image",
        runs_dir=ablated_dir,
        style=TextStyle("first", uniir_format=True),
    )
    no_image = [line.split()[2] for line in (ablated_dir / "toy_it2i.trec").read_text().splitlines()]
    for row in page.rows:
        query, cells = queries[row["qid"]], row["cells"]
        assert cells[1]["text"] == str(ranks[row["qid"]].index(query["pos_cand_list"][0]) + 1)
        if query["query_modality"] == "image,text":
            assert cells[2]["text"] == str(no_image.index(query["pos_cand_list"][0]) + 1)
