"""Atomic file writes: readers never see a half-written file, and a crash leaves the old file (or none)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The temp file lives in the same directory so that ``os.replace`` is a same-filesystem rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temp file for writing that atomically becomes ``path`` when the block exits cleanly."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        encoding = "utf-8" if mode == "w" else None
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            # fsync before the rename, or a power loss could leave a renamed but empty file
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder in ``parent`` made by ``mkdir``, so it gets the usual mode (0777 less the
    umask), not mkdtemp's 0700, which would otherwise become the published folder's mode."""
    for _ in range(100):
        candidate = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"could not make a temporary folder in {parent}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path``, on error it
    is removed. Readers see the old folder or the new one, whole.

    An older folder at ``path`` is renamed aside first, the new one renamed in, and only then is the
    old one deleted: a crash at any point leaves one complete folder (at ``path`` or aside), never
    neither. If renaming the new folder in fails, the old one is put back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_dir(path.parent, f".{path.name}.")
    aside: Path | None = None
    try:
        yield tmp
        if path.exists():
            aside = path.parent / f".{path.name}.old.{secrets.token_hex(4)}"
            os.replace(path, aside)
        try:
            os.replace(tmp, path)
        except BaseException:
            if aside is not None:
                os.replace(aside, path)
                aside = None
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if aside is not None and aside.exists():
            shutil.rmtree(aside)
