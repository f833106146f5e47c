"""``jfe reproduce`` with a few steps: every arm trains what it says, the shared stage 1 is shared,
and the table, results.json, the chart and the reports agree with the models left behind."""

import contextlib
import io
import json

import pytest
from PIL import Image

from jfe.artifacts import TrainSummary
from jfe.cli import main
from jfe.demo import SCHEDULES, evaluate_digits
from jfe.reproduce import ARMS, ReproduceResults

STAGE1_STEPS, STAGE2_STEPS = 3, 2
TASKS = ["digits_i2i", "digits_i2t", "digits_it2i", "digits_it2t", "digits_t2i"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reproduce")
    out = tmp / "out"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("JFE_CACHE", str(tmp / "cache"))
        args = ["reproduce", "--out", str(out), "--seeds", "0"]
        assert main([*args, "--stage1-steps", str(STAGE1_STEPS), "--stage2-steps", str(STAGE2_STEPS)]) == 0
    return out, tmp / "cache", printed.getvalue()


@pytest.mark.slow
def test_every_arm_trained_as_it_says(reproduced):
    out, cache, _ = reproduced
    seed = out / "seed0"
    stage1 = TrainSummary.read(seed / "stage1" / "final")
    assert stage1.global_steps == STAGE1_STEPS
    for arm in ARMS:
        summary = TrainSummary.read(seed / arm.name / "stage2" / "final")
        config = summary.config
        if arm.from_stage1:
            assert summary.global_steps == STAGE2_STEPS
            assert summary.base_model == str(seed / "stage1" / "final")
        else:  # both stages' steps, from the untrained model, everything trained
            assert summary.global_steps == STAGE1_STEPS + STAGE2_STEPS
            assert summary.base_model == str(next(cache.glob("tiny-qwen2_vl-*")))
            assert (config["trainable"], config["train_vision"]) == ("full", True)
        assert config["fusion"] == ("late" if arm.name == "late" else "early")
        assert (config["caption_dropout"], config["modality_mixin"]) == ((0.2, 0.2) if "mimic" in arm.name else (0, 0))
        assert config["mbeir_root"].endswith("digits-mbeir-collapse") == arm.collapse_prone
        assert config["seed"] == 0
    # the late arm's saved model embeds late: its config says so and the evaluator honours it
    saved = json.loads((seed / "late" / "stage2" / "final" / "jfe_config.json").read_text())
    assert saved["fusion"] == "late"


@pytest.mark.slow
def test_table_json_chart_and_reports_agree(reproduced):
    out, _, printed = reproduced
    results = ReproduceResults.read(out)
    assert results.schedule["name"] == "custom" and results.seeds == [0]
    assert list(results.arms) == [a.name for a in ARMS]
    columns = TASKS + [f"{t} {k}" for t in ("digits_it2t", "digits_it2i") for k in ("no image", "no text")]
    for name, entry in results.arms.items():
        assert sorted(entry["mean"]) == sorted(columns)
        assert entry["mean"] == {k: v for k, v in entry["runs"]["0"].items() if k != "seconds"}
        row = next(line for line in printed.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert cells == [f"{entry['mean'][c]:.3f}" for c in entry["mean"]]
        report = (out / "seed0" / name / "report.html").read_text()
        assert report.count("<h2 ") == len(TASKS) and "without the image" in report
    with Image.open(out / "results.png") as chart:
        assert chart.size[0] > 800 and chart.format == "PNG"


@pytest.mark.slow
def test_results_are_what_the_left_models_score(reproduced, monkeypatch):
    from jfe.builtins import digits_benchmark

    out, cache, _ = reproduced
    monkeypatch.setenv("JFE_CACHE", str(cache))
    results = ReproduceResults.read(out)
    for name in ("late", "collapse-early"):
        arm = next(a for a in ARMS if a.name == name)
        data = digits_benchmark(collapse_prone=arm.collapse_prone)
        table = evaluate_digits(out / "seed0" / name / "stage2" / "final", data, out / "check", name)
        for task in TASKS:
            assert results.arms[name]["runs"]["0"][task] == round(table[task]["recall@1"], 4)


def test_schedules_name_their_steps():
    quick, full = SCHEDULES["quick"], SCHEDULES["full"]
    assert quick.stage1_steps + quick.stage2_steps < full.stage1_steps + full.stage2_steps
    assert full.describe()["name"] == "full"
