"""tools/compare_embeddings --quick: every arm trains (with its own embedding option), every view
is scored on every digits task, indexed and timed, and the printed table is the JSON."""

import contextlib
import io
import json

import pytest

from jfe.artifacts import TrainSummary
from jfe.train.config import TrainConfig
from tools import compare_embeddings as ce

TASKS = ["digits_t2i", "digits_i2t", "digits_i2i", "digits_it2t", "digits_it2i"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert ce.main(["--quick", "--out", str(tmp / "out"), "--json", str(tmp / "result.json")]) == 0
    return tmp / "out", json.loads((tmp / "result.json").read_text()), printed.getvalue()


@pytest.mark.slow
def test_every_arm_trained_its_embedding_from_one_stage1(compared):
    out, result, _ = compared
    assert result["schedule"]["stage2_steps"] == ce.QUICK_STEPS[1]
    expected = {"single": ("single", []), "multi": ("multi", []), "both": ("both", []), "mrl": ("single", [16])}
    for arm in ce.ARMS:
        summary = TrainSummary.read(out / arm.name / "final")
        config = TrainConfig.from_dict(summary.config)
        assert (config.embedding, config.matryoshka_dims) == expected[arm.name]
        if config.embedding != "single":
            assert config.multi_dim == ce.MULTI_DIM == 64  # 128 by default, but the tiny model is 64 wide
        assert summary.global_steps == ce.QUICK_STEPS[1]
        assert summary.base_model == str(out / "stage1" / "final")


@pytest.mark.slow
def test_every_view_has_every_task_bytes_and_qps(compared):
    _, result, _ = compared
    views = result["views"]
    assert list(views) == [v.label for arm in ce.ARMS for v in arm.views]
    for label, view in views.items():
        assert list(view["hit@1"]) == TASKS, label
        assert all(0.0 <= h <= 1.0 for h in view["hit@1"].values()), label
        assert 0.0 <= view["average_hit@1"] <= 1.0
        assert view["index_bytes"] > 0 and view["qps"] > 0, label
        assert view["queries"] == len(TASKS) * ce.QUICK_QUERIES
    multi = views["multi"]
    assert {"index.faiss", "vectors.safetensors", "token_items.npy"} <= set(multi["index_files"])
    assert 0.0 <= multi["top1_as_exact"] <= 1.0 and multi["tokens_per_candidate"] > 1
    # a quarter of the width: the Flat index's vectors take a quarter of the bytes
    full, cut = views["MRL @64"]["index_files"]["index.faiss"], views["MRL @16"]["index_files"]["index.faiss"]
    assert cut < full / 3


@pytest.mark.slow
def test_printed_table_is_the_json(compared):
    _, result, printed = compared
    assert ce.markdown(result) in printed
    rows = {}
    for line in (line for line in printed.splitlines() if line.startswith("|")):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    labels = list(result["views"])
    assert rows[""] == labels
    for task in TASKS:
        assert rows[f"{task} H@1"] == [f"{result['views'][v]['hit@1'][task]:.3f}" for v in labels]
