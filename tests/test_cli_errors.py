"""The ``jfe`` command prints a failure as one line naming what and where; ``--debug`` and
``JFE_DEBUG=1`` show the traceback instead."""

import subprocess
import sys

import pytest

from jfe.cli import one_line, run
from jfe.train.checkpoints import mark_complete


def _missing_run(tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1:1 0 1:10 1 0\n")
    return ["eval", "--run", str(tmp_path / "missing.trec"), "--qrels", str(qrels)]


def test_a_failure_is_one_line_naming_the_file(tmp_path, capsys):
    assert run(_missing_run(tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jfe eval: error: ")
    assert "missing.trec" in err and "Traceback" not in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_lets_the_traceback_through(tmp_path, monkeypatch, how):
    args = _missing_run(tmp_path)
    if how == "flag":
        args.append("--debug")
    else:
        monkeypatch.setenv("JFE_DEBUG", "1")
    with pytest.raises(OSError, match=r"missing\.trec"):
        run(args)


def test_one_line_folds_newlines_and_unquotes_key_errors():
    assert one_line(ValueError("first\n  second")) == "first second"
    assert one_line(KeyError("did '9:1' is not in the pool")) == "did '9:1' is not in the pool"
    assert one_line(RuntimeError()) == "RuntimeError"


def test_the_console_command_exits_non_zero_with_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "jfe", "index", "--embeddings", str(tmp_path / "nowhere"), "--out", str(tmp_path / "i")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("jfe index: error: ") and "nowhere" in lines[-1]
    assert not any("Traceback" in line for line in lines)


def test_a_training_folder_as_model_names_the_folder_to_use(tiny_model_dir, mbeir_root, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "runs" / "s1"
    (run_dir / "checkpoint-100").mkdir(parents=True)
    pool = mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    args = ["encode", "--model", str(run_dir), "--data", str(pool), "--out", str(tmp_path / "e")]
    assert run(args) == 1
    err = capsys.readouterr().err
    assert f"{run_dir} is a training output folder with no complete checkpoint (checkpoint-100 was not" in err
    # the newest complete checkpoint is the one to export, not a newer one left half-written
    (run_dir / "checkpoint-20").mkdir()
    mark_complete(run_dir / "checkpoint-20", 20, 1)
    assert run(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{run_dir} is a training output folder without a final model yet" in err
    assert f"jfe export --model {run_dir / 'checkpoint-20'}" in err
    shutil.copytree(tiny_model_dir, run_dir / "final")
    assert run(args) == 1
    assert f"use {run_dir / 'final'} (its merged model)" in capsys.readouterr().err
    assert run(["encode", "--model", str(tmp_path), "--data", str(pool), "--out", str(tmp_path / "e")]) == 1
    assert "is not a model folder: no config.json" in capsys.readouterr().err
