"""Where jfe keeps what it builds on first use (the tiny model, the digits benchmark, Arrow copies of
large JSONL files). Imports nothing of jfe, so any module may ask for it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$JFE_CACHE``, else ``$XDG_CACHE_HOME/jfe``, else ``~/.cache/jfe``."""
    if os.environ.get("JFE_CACHE"):
        return Path(os.environ["JFE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jfe"
