import json

import pytest

from jfe.artifacts import DemoResults, EvalReport, RunStart, TrainSummary
from jfe.train.config import TrainConfig


def test_each_artifact_round_trips_under_its_file_name(tmp_path):
    config = TrainConfig(model="m", output_dir="o", warmup_steps=0.1).to_dict()
    summary = TrainSummary(config=config, base_model="base", global_steps=7, loss_history=[{"step": 1, "loss": 2.5}])
    path = summary.write(tmp_path)
    assert path == tmp_path / "jfe_train.json"
    assert TrainSummary.read(tmp_path) == summary and TrainSummary.find(tmp_path) == summary
    assert TrainSummary.find(tmp_path / "nowhere") is None
    assert summary.losses == [2.5]
    report = EvalReport(metrics={"a": {"recall@5": 0.5}}, split="val", probe={"ablate": "image", "tasks": {}})
    report.write(tmp_path, name=EvalReport.EXPORTED)
    assert EvalReport.find_exported(tmp_path) == report and EvalReport.find(tmp_path) is None
    RunStart(config, "base").write(tmp_path)
    assert json.loads((tmp_path / "jfe_train_config.json").read_text()) == {"config": config, "base_model": "base"}
    assert DemoResults.read(DemoResults(stages={}, ablation={}, seconds=3.0).write(tmp_path)).seconds == 3.0


def test_a_file_that_is_not_the_artifact_is_named_in_the_error(tmp_path):
    (tmp_path / "eval.json").write_text('{"split": "test"}')
    with pytest.raises(ValueError, match=r"eval\.json: not a eval\.json file \(missing metrics\)"):
        EvalReport.read(tmp_path)
    (tmp_path / "eval.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"eval\.json: not valid JSON"):
        EvalReport.read(tmp_path / "eval.json")
    with pytest.raises(FileNotFoundError, match=r"jfe_train\.json: not found"):
        TrainSummary.read(tmp_path)


def test_keys_from_a_newer_jfe_are_ignored_and_old_option_names_still_load(tmp_path):
    (tmp_path / "jfe_train.json").write_text(json.dumps({"config": {}, "base_model": "b", "added_later": 1}))
    assert TrainSummary.read(tmp_path).base_model == "b"
    old = {**TrainConfig(model="m", output_dir="o").to_dict(), "warmup_ratio": 0.05}
    del old["warmup_steps"]
    assert TrainConfig.from_dict(old).warmup_steps == 0.05
