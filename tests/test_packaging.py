"""``pip install .`` then ``jfe demo`` from an unrelated folder: what an installed wheel must carry.

An editable install (what CI and the README's commands use) reads files from the clone, so it
would hide package data missing from the wheel; this test installs the built wheel instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a copy of the source, so no build/ folder of an earlier build (in the clone) fills the wheel
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__"))
    # no build isolation: setuptools is already here (torch needs it), and nothing is downloaded
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
    )
    (path,) = out.glob("jfe-*.whl")
    return path


def test_the_wheel_carries_the_demo_recipes(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in ("tiny-stage1.yaml", "tiny-stage2.yaml", "tiny-stage2-qlora.yaml"):
        assert f"jfe/recipes/{recipe}" in names
    assert "jfe/benchmarks/digits/builders.py" in names and "jfe/train/finalize.py" in names


@pytest.mark.slow
def test_jfe_demo_runs_from_an_installed_wheel_outside_a_clone(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The new venv sees this environment's dependencies through a path entry. .pth files inside
    # that folder are not run from it, so this environment's editable jfe stays invisible.
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    where = tmp_path / "elsewhere"
    where.mkdir()
    env = {**os.environ, "JFE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    found = subprocess.run(
        [str(python), "-c", "import jfe; print(jfe.__file__)"],
        cwd=where,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(purelib), f"jfe imported from {found}, not from the installed wheel"
    done = subprocess.run(
        [str(venv / "bin" / "jfe"), "demo", "--out", "demo", "--stage1-steps", "2", "--stage2-steps", "2"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((where / "demo" / "results.json").read_text())
    assert set(results["stages"]) == {"untrained", "stage1", "stage2"}
    assert json.loads((where / "demo" / "stage2" / "final" / "jfe_train.json").read_text())["global_steps"] == 2
