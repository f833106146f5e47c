"""``jfe encode`` through faults, as a separate process: killed with SIGKILL in the middle of a shard,
and writing into a disk that fills up (RLIMIT_FSIZE, so every write past the limit fails with EFBIG)."""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jfe.retrieval.shards import is_complete, read_embeddings, shard_dir

SHARDS, PER_SHARD = 4, 600


@pytest.fixture(scope="module")
def job(tiny_model_dir, tmp_path_factory):
    """A text pool, the encode command line for it (without --out) and an uninterrupted run's output."""
    root = tmp_path_factory.mktemp("faults")
    with open(root / "pool.jsonl", "w") as pool:
        for i in range(SHARDS * PER_SHARD):
            row = {"did": f"1:{i}", "txt": f"item {i} " * (1 + i % 9), "img_path": None, "modality": "text"}
            pool.write(json.dumps(row) + "\n")
    argv = [sys.executable, "-m", "jfe", "encode", "--model", str(tiny_model_dir), "--data", str(root / "pool.jsonl"),
            "--num-shards", str(SHARDS), "--dtype", "float32", "--batch-size", "2"]  # fmt: skip
    whole = root / "whole"
    subprocess.run([*argv, "--out", str(whole)], check=True, capture_output=True, env=_env())
    return argv, whole


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _kill_in_shard(argv: list[str], shard: int) -> None:
    """Start ``argv`` and SIGKILL it once its progress bar shows shard ``shard`` (1-based) part done."""
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=_env())
    seen, deadline = b"", time.monotonic() + 300
    pattern = re.compile(rf"shard {shard}/{SHARDS}:\s+([1-9]|[1-9]\d)%".encode())
    while not pattern.search(seen[-4000:]):
        chunk = os.read(proc.stderr.fileno(), 4096)
        assert chunk and time.monotonic() < deadline, seen[-3000:].decode(errors="replace")
        seen += chunk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_shard_then_the_rerun_equals_an_uninterrupted_run(job, tmp_path):
    argv, whole = job
    out = tmp_path / "emb"
    _kill_in_shard([*argv, "--out", str(out)], shard=2)
    first, second = shard_dir(out, 0, SHARDS), shard_dir(out, 1, SHARDS)
    assert is_complete(first) and not is_complete(second)
    assert not any(is_complete(shard_dir(out, i, SHARDS)) for i in range(1, SHARDS))
    kept = (first / "embeddings.safetensors").stat().st_mtime_ns
    # what a kill during a file write leaves (mkstemp's name beside the file): the rerun clears it
    second.mkdir(exist_ok=True)
    (second / ".embeddings.safetensors.k9x.tmp").write_bytes(b"\0" * 100)

    done = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shard-00000-of-00004 is complete: skipped" in done.stderr
    assert (first / "embeddings.safetensors").stat().st_mtime_ns == kept
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    ids, vectors = read_embeddings(out)
    whole_ids, whole_vectors = read_embeddings(whole)
    assert ids == whole_ids
    np.testing.assert_allclose(vectors, whole_vectors, rtol=0, atol=1e-6)


def _file_size_limit(limit: int):
    def apply() -> None:
        # ignored, SIGXFSZ no longer kills the writer: the write fails with EFBIG as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_full_disk_during_a_shard_write_is_an_error_and_the_old_shards_stay(job, tmp_path):
    argv, whole = job
    out = shutil.copytree(whole, tmp_path / "emb")
    before = read_embeddings(out)
    size = (shard_dir(out, 0, SHARDS) / "embeddings.safetensors").stat().st_size
    failed = subprocess.run([*argv, "--out", str(out), "--overwrite"], capture_output=True, text=True, env=_env(),
                            preexec_fn=_file_size_limit(size // 2))  # fmt: skip
    assert failed.returncode == 1
    lines = [line for line in failed.stderr.splitlines() if line.startswith("jfe encode: error:")]
    assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    assert "shard-00000-of-00004: writing the shard failed" in lines[0]
    assert "the shard that was there is unchanged" in lines[0]
    after = read_embeddings(out)  # every shard complete, checksums and all, and as before
    assert after[0] == before[0] and np.array_equal(after[1], before[1])
    assert [p for p in out.rglob("*") if p.name.startswith(".")] == []
