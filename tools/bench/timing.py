"""Timing and memory helpers shared by the measures."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Sequence
from time import perf_counter


def throughput(fn: Callable[[], object], n_items: int, repeats: int = 1) -> float:
    """Items per second of ``fn`` (which handles ``n_items``): one untimed warm-up call, then the
    best of ``repeats`` timed calls."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = perf_counter()
        fn()
        best = min(best, perf_counter() - start)
    return n_items / best


def alternating_best(fns: Sequence[Callable[[], object]], rounds: int = 3) -> list[float]:
    """Each function's best wall time over ``rounds`` rounds that call them in turn (so drift on a
    shared machine hits all alike), each call after an ``os.sync()`` (so none pays for another's
    pending writeback)."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            os.sync()
            start = perf_counter()
            fn()
            best[k] = min(best[k], perf_counter() - start)
    return best


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
