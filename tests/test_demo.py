import json

import pytest

from jfe.cli import main


def test_demo_runs_every_stage_offline_and_writes_results(tmp_path, monkeypatch):
    """The README's first command, with few training steps: the plumbing, not the accuracy."""
    monkeypatch.setenv("JFE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--stage1-steps", "8", "--stage2-steps", "8"]) == 0
    results = json.loads((out / "results.json").read_text())
    tasks = {"digits_t2i", "digits_i2t", "digits_i2i", "digits_it2t", "digits_it2i"}
    assert set(results["stages"]) == {"untrained", "stage1", "stage2"}
    for stage in results["stages"].values():
        assert set(stage) == tasks
        assert all(0 <= row["hit@1"] <= row["hit@5"] <= 1 for row in stage.values())
    assert set(results["ablation"]) == {"image_removed", "text_removed"}
    for ablated in results["ablation"].values():
        assert set(ablated) == {"digits_it2t", "digits_it2i"}
    assert results["seconds"] > 0
    # the exported model and the search runs are left for the user
    assert (out / "model" / "README.md").is_file() and (out / "model" / "modules.json").is_file()
    assert (out / "runs" / "digits_it2i.trec").is_file()
    assert (tmp_path / "cache" / "digits-mbeir" / ".complete").is_file()


def test_unknown_command_fails_with_usage(capsys):
    with pytest.raises(SystemExit) as err:
        main(["frobnicate"])
    assert err.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
