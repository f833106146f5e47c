import json

import pytest

from jfe.cli import main


def test_demo_runs_offline_and_reports_parity(tmp_path, monkeypatch):
    monkeypatch.setenv("JFE_CACHE", str(tmp_path / "cache"))
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["dimension"] == 64
    assert results["st_parity_max_abs_diff"] <= 1e-5
    assert (tmp_path / "cache" / "tiny-qwen2_vl-seed0" / "config.json").is_file()
    assert (tmp_path / "demo" / "model" / "modules.json").is_file()


def test_unknown_command_fails_with_usage(capsys):
    with pytest.raises(SystemExit) as err:
        main(["frobnicate"])
    assert err.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
