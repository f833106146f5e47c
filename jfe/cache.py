"""Where jfe builds the tiny model and the demo data on first use."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$JFE_CACHE``, else ``$XDG_CACHE_HOME/jfe``, else ``~/.cache/jfe``."""
    if os.environ.get("JFE_CACHE"):
        return Path(os.environ["JFE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jfe"


def tiny_model(arch: str = "qwen2_vl", seed: int = 0) -> Path:
    """The tiny random-init checkpoint for ``arch``, built into the cache the first time."""
    from jfe.tiny import build_tiny_model

    path = cache_dir() / f"tiny-{arch}-seed{seed}"
    if not (path / "config.json").is_file():
        build_tiny_model(path, arch=arch, seed=seed)
    return path
