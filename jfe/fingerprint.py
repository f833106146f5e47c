"""Fingerprints that say whether saved vectors still belong to a model, its inputs and options.

A model's fingerprint comes from its content, so a copy on another node matches and a retrained
model saved at the same path does not: every file that shapes its vectors is hashed, and each
weight tensor contributes its name, dtype, shape and the first and last 4 KiB of its bytes (a
merged LoRA or a fine-tune changes every tensor it touches end to end; reading a few KiB per
tensor keeps a 15 GB checkpoint's fingerprint at a fraction of a second). Files that do not shape
vectors (the model card, a training run's summary) are left out.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path

SAMPLE_BYTES = 4096
# what a folder may hold that never changes an embedding
IGNORED_FILES = {"README.md", "jfe_train.json", "jfe_train_config.json", "jfe_eval.json", "eval.json"}
# larger non-weight files (a tokenizer's vocabulary is ~11 MB) are hashed whole up to this size
MAX_WHOLE_FILE = 64 * 2**20


def _safetensors_digest(path: Path, digest) -> None:
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        try:
            header = json.loads(handle.read(length))
        except ValueError as err:
            raise ValueError(f"{path}: unreadable safetensors header: {err}") from None
        base = 8 + length
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            start, end = info["data_offsets"]
            digest.update(f"{name}|{info['dtype']}|{info['shape']}|".encode())
            handle.seek(base + start)
            digest.update(handle.read(min(SAMPLE_BYTES, end - start)))
            if end - start > SAMPLE_BYTES:
                tail = max(start + SAMPLE_BYTES, end - SAMPLE_BYTES)
                handle.seek(base + tail)
                digest.update(handle.read(end - tail))


def _files(folder: Path) -> Iterable[Path]:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        hidden_or_checkpoint = any(p.startswith((".", "checkpoint-")) for p in rel.parts)
        if path.is_file() and rel.name not in IGNORED_FILES and not hidden_or_checkpoint:
            yield path


def model_fingerprint(model: str | os.PathLike) -> str:
    """A short content hash of the model folder ``model`` (a hub id or other non-folder: of its name)."""
    folder = Path(model)
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(str(model).encode())
        return digest.hexdigest()[:16]
    for path in _files(folder):
        digest.update(f"\0{path.relative_to(folder).as_posix()}\0".encode())
        if path.suffix == ".safetensors":
            _safetensors_digest(path, digest)
        elif path.stat().st_size <= MAX_WHOLE_FILE:
            digest.update(path.read_bytes())
        else:
            digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:16]


def items_fingerprint(rows: Iterable[tuple[str, str | None, str | None, str | None]]) -> str:
    """A hash of (id, text, image path, instruction) rows in order: what a shard embeds."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()[:16]
