"""Resuming ``jfe encode`` reuses a complete shard only when the same model, items and options made
it; under torchrun, deepspeed or srun each rank takes its own shards, and 2 ranks equal 1."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from jfe import Embedder
from jfe.cli import main
from jfe.fingerprint import model_fingerprint
from jfe.retrieval.encode import launcher_rank, rank_shards
from jfe.retrieval.shards import read_embeddings


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    """A saved tiny model, a byte copy of it, and a model of the same width with one weight changed."""
    root = tmp_path_factory.mktemp("reuse")
    first = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(root / "a")
    copy = shutil.copytree(first, root / "a-copy")
    other = Embedder.from_pretrained(first, dtype="float32", device="cpu")
    with torch.no_grad():
        next(p for n, p in other.model.named_parameters() if "layers.1" in n).add_(0.01)
    return first, copy, other.save(root / "b")


def _encode(model, data, out, *extra):
    root = data.parents[2] if data.parent.name == "global" else data.parent  # images are relative to the root
    args = ["encode", "--model", str(model), "--data", str(data), "--out", str(out), "--images-root", str(root)]
    return main([*args, "--num-shards", "2", *extra])


def _pool(mbeir_root):
    return mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"


def test_fingerprint_is_the_content_not_the_path_or_the_card(models):
    first, copy, other = models
    assert model_fingerprint(first) == model_fingerprint(copy)  # another node's copy: new mtimes, same bytes
    assert model_fingerprint(first) != model_fingerprint(other)
    (copy / "README.md").write_text("a different card")
    assert model_fingerprint(first) == model_fingerprint(copy)


def test_another_models_shards_are_refused_then_overwritten(models, mbeir_root, tmp_path):
    first, copy, other = models
    out = tmp_path / "emb"
    assert _encode(first, _pool(mbeir_root), out, "--dtype", "float32") == 0
    ids, before = read_embeddings(out)
    assert _encode(copy, _pool(mbeir_root), out, "--dtype", "float32", "--batch-size", "3") == 0  # reused
    with pytest.raises(ValueError, match=r"shard-00000-of-00002: complete shard made by another model.*--overwrite"):
        _encode(other, _pool(mbeir_root), out, "--dtype", "float32")
    assert np.array_equal(read_embeddings(out)[1], before)  # nothing was touched
    assert _encode(other, _pool(mbeir_root), out, "--dtype", "float32", "--overwrite") == 0
    new_ids, after = read_embeddings(out)
    assert new_ids == ids and not np.allclose(after, before)
    # what a fresh folder gets from the other model
    assert _encode(other, _pool(mbeir_root), tmp_path / "fresh", "--dtype", "float32") == 0
    assert np.array_equal(read_embeddings(tmp_path / "fresh")[1], after)


def test_other_data_or_options_are_refused(models, mbeir_root, tmp_path):
    first, _, _ = models
    out = tmp_path / "emb"
    assert _encode(first, _pool(mbeir_root), out) == 0
    with pytest.raises(ValueError, match=r"encoded with other options \(dtype 'float16' -> 'float32'\)"):
        _encode(first, _pool(mbeir_root), out, "--dtype", "float32")
    with pytest.raises(ValueError, match=r"max_pixels None -> 1024"):
        _encode(first, _pool(mbeir_root), out, "--max-pixels", "1024")
    changed = mbeir_root / "pool.jsonl"
    changed.write_text(_pool(mbeir_root).read_text().replace("a seven", "a seven!"))
    with pytest.raises(ValueError, match=r"complete shard of other items .* the data or its order changed"):
        _encode(first, changed, out)


def test_shards_without_a_fingerprint_are_refused(models, mbeir_root, tmp_path):
    first, _, _ = models
    out = tmp_path / "emb"
    assert _encode(first, _pool(mbeir_root), out) == 0
    meta_path = out / "shard-00001-of-00002" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["fingerprint"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"shard-00001-of-00002: complete shard without a fingerprint"):
        _encode(first, _pool(mbeir_root), out)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0, 1)),
        ({"RANK": "1", "WORLD_SIZE": "3"}, (1, 3)),
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, (2, 4)),
        ({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"}, (0, 2)),  # torchrun in srun
    ],
)
def test_launcher_rank_reads_torchrun_and_slurm(monkeypatch, env, expected):
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launcher_rank() == expected
    world = expected[1]
    assert sorted(s for r in range(world) for s in rank_shards(7, r, world)) == list(range(7))


def test_a_rank_encodes_only_its_shards(models, mbeir_root, tmp_path, monkeypatch):
    first, _, _ = models
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "emb"
    args = ["encode", "--model", str(first), "--data", str(_pool(mbeir_root)), "--images-root", str(mbeir_root)]
    assert main([*args, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["shard-00001-of-00002"]


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one(models, mbeir_root, tmp_path):
    first, _, _ = models
    args = ["-m", "jfe", "encode", "--model", str(first), "--data", str(_pool(mbeir_root)), "--dtype", "float32"]
    args += ["--images-root", str(mbeir_root)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, *args, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    two = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "rank 0 of 2" in two.stdout and "rank 1 of 2" in two.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["shard-00000-of-00002", "shard-00001-of-00002"]
    ids_one, vecs_one = read_embeddings(tmp_path / "one")
    ids_two, vecs_two = read_embeddings(tmp_path / "two")
    assert ids_two == ids_one
    assert np.abs(vecs_two - vecs_one).max() < 1e-6
