"""Training through faults: the whole DeepSpeed process group killed with SIGKILL between two
checkpoints, a checkpoint left half-written, and the disk filling up while one is written. Resuming
continues the uninterrupted run's loss curve and never starts from an unfinished checkpoint."""

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jfe.train.checkpoints import COMPLETE_FILE, latest_complete
from jfe.train.trainer import run
from tests.train.launch import REPO, deepspeed_command, deepspeed_run, launch_env
from tests.train.test_trainer import _config, _history

STEPS, SAVE = 12, 4


def _overrides(tiny_model_dir, mixed_pairs, *extra):
    return (f"model={tiny_model_dir}", "data_format=pairs", f"pairs_files=[{mixed_pairs}]", "trainable=full",
            "train_vision=false", "per_device_batch_size=4", "learning_rate=1e-3", "seed=0", f"save_steps={SAVE}",
            "save_total_limit=1", *extra)  # fmt: skip


def _half_written(complete: Path, step: int) -> Path:
    """What a kill while writing checkpoint-``step`` leaves: the files of a checkpoint, the largest
    cut short, and no completion mark."""
    partial = complete.parent / f"checkpoint-{step}"
    shutil.copytree(complete, partial)
    (partial / COMPLETE_FILE).unlink()
    largest = max((p for p in partial.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    return partial


@pytest.mark.slow
def test_kill_9_of_two_deepspeed_ranks_then_resume_continues_the_loss_curve(
    tiny_model_dir, mixed_pairs, free_port, tmp_path
):
    overrides = _overrides(tiny_model_dir, mixed_pairs)
    whole, _ = deepspeed_run("tiny-stage1.yaml", "zero2", free_port(), tmp_path / "whole", STEPS, *overrides)

    out, port = tmp_path / "killed", free_port()
    command = deepspeed_command("tiny-stage1.yaml", "zero2", port, out, STEPS, *overrides)
    job = subprocess.Popen(command, cwd=REPO, env=launch_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    mark, deadline = out / f"checkpoint-{2 * SAVE}" / COMPLETE_FILE, time.monotonic() + 400
    while not mark.is_file():
        assert job.poll() is None and time.monotonic() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.01)
    os.killpg(job.pid, signal.SIGKILL)  # the launcher and both ranks, between checkpoints 8 and 12
    job.wait()
    assert not (out / "final").exists()
    # checkpoint-4 went when 8 was complete (save_total_limit=1), never before
    assert latest_complete(out) == (out / f"checkpoint-{2 * SAVE}", [])
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))  # kill -9 leaked no RAM

    partial = _half_written(out / f"checkpoint-{2 * SAVE}", 2 * SAVE + 2)
    resumed, log = deepspeed_run("tiny-stage1.yaml", "zero2", free_port(), out, STEPS, *overrides, "resume=true")
    assert f"{partial} is incomplete (the run stopped while writing it): not resuming from it" in log
    assert len(resumed) == len(whole) == STEPS
    print("whole", np.round(whole, 5).tolist(), "\nresumed", np.round(resumed, 5).tolist())
    np.testing.assert_allclose(resumed, whole, rtol=0, atol=1e-6)


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(
    tiny_model_dir, mixed_pairs, tmp_path, monkeypatch
):
    whole = _history(run(_config(tiny_model_dir, tmp_path / "whole", pairs_files=[str(mixed_pairs)])))
    config = _config(tiny_model_dir, tmp_path / "full", pairs_files=[str(mixed_pairs)])
    real_save = torch.save

    def disk_full_at_step_12(obj, f, *args, **kwargs):
        if "checkpoint-12" in str(f):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_at_step_12)
    with pytest.raises(OSError, match="No space left on device"):
        run(config)
    previous = tmp_path / "full" / "checkpoint-6"
    assert latest_complete(tmp_path / "full") == (previous, [tmp_path / "full" / "checkpoint-12"])
    monkeypatch.setattr(torch, "save", real_save)
    config.resume = True
    resumed = _history(run(config))  # from checkpoint-6: the failed write left it as it was
    np.testing.assert_allclose([resumed[s] for s in range(7, 13)], [whole[s] for s in range(7, 13)], atol=1e-6)
