"""Which checkpoints are complete: HF's Trainer writes ``checkpoint-N`` in place, file by file and rank
by rank, so a run killed while writing one leaves a folder that looks like any other. jfe marks a
checkpoint complete (``jfe_complete.json``) once every rank has written its part, and resumes only
from a marked one."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from jfe.atomic import atomic_write_text

COMPLETE_FILE = "jfe_complete.json"
TRAINER_STATE = "trainer_state.json"  # HF's name for it
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(folder: str | os.PathLike, step: int, world_size: int) -> None:
    atomic_write_text(Path(folder) / COMPLETE_FILE, json.dumps({"step": step, "world_size": world_size}) + "\n")


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """``output_dir``'s ``checkpoint-N`` folders, oldest step first."""
    found = [
        (int(m.group(1)), p) for p in Path(output_dir).iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def latest_complete(output_dir: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint of ``output_dir`` (None if none), and the incomplete ones newer
    than it (left by a run stopped while writing them).

    A run from before jfe marked checkpoints has no mark at all: its newest checkpoint holding the
    Trainer's state (written last, by the main process) counts as complete."""
    found = checkpoints(output_dir)
    legacy = not any((folder / COMPLETE_FILE).is_file() for folder in found)
    done = TRAINER_STATE if legacy else COMPLETE_FILE
    newer: list[Path] = []
    for folder in reversed(found):
        if (folder / done).is_file():
            return folder, newer[::-1]
        newer.append(folder)
    return None, newer[::-1]
