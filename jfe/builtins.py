"""The ``builtin:`` names of recipes and commands: the offline tiny model and digits benchmark,
built into the cache (:func:`jfe.cache.cache_dir`) on first use."""

from __future__ import annotations

from pathlib import Path

from jfe import backbones
from jfe.cache import cache_dir


def tiny_model(arch: str = "qwen2_vl", seed: int = 0) -> Path:
    """The tiny random-init checkpoint for ``arch``, built into the cache the first time."""
    from jfe.tiny import TINY_SHAPE, build_tiny_model

    # The folder name carries the shape, so a checkpoint cached with another shape is never picked up.
    shape = "h{hidden}-l{layers}-v{vision_hidden}".format(**TINY_SHAPE)
    path = cache_dir() / f"tiny-{arch}-{shape}-seed{seed}"
    if not (path / "config.json").is_file():
        build_tiny_model(path, arch=arch, seed=seed, **TINY_SHAPE)
    return path


def digits_benchmark(seed: int = 0, collapse_prone: bool = False) -> Path:
    """The digits benchmark in M-BEIR layout, built into the cache the first time;
    ``collapse_prone``: its variant whose train colour words give the digit away."""
    from jfe.benchmarks.digits import DEFAULT_SHORTCUT, ensure_digits_mbeir

    if collapse_prone:
        return ensure_digits_mbeir(cache_dir() / "digits-mbeir-collapse", seed=seed, shortcut=DEFAULT_SHORTCUT)
    return ensure_digits_mbeir(cache_dir() / "digits-mbeir", seed=seed)


# builtin:tiny is the demo's Qwen2-VL; builtin:tiny-<family> is any registered family's
BUILTIN_MODELS = {"tiny": "qwen2_vl", **{f"tiny-{name}": name for name in backbones.names()}}
BUILTIN_DATA = ("digits", "digits-collapse")


def resolve_builtin(value: str, kind: str) -> str:
    """``builtin:tiny`` / ``builtin:digits`` -> the path of the offline tiny model / benchmark,
    built on first use; any other value is returned as it is. ``kind`` is "model" or "data"."""
    if not value.startswith("builtin:"):
        return value
    name = value.split(":", 1)[1]
    if kind == "model" and name in BUILTIN_MODELS:
        return str(tiny_model(BUILTIN_MODELS[name]))
    if kind == "data" and name in BUILTIN_DATA:
        return str(digits_benchmark(collapse_prone=name == "digits-collapse"))
    known = [f"builtin:{n}" for n in (BUILTIN_MODELS if kind == "model" else BUILTIN_DATA)]
    raise ValueError(f"unknown builtin {value!r} for {kind}; known: {', '.join(known)}")
