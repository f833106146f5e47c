"""Each headline figure's goal, and the table the run prints."""

from __future__ import annotations

GOALS = {
    "encode_vs_st": (">=", 1.0),
    "encode_vs_bare": (">=", 0.9),
    "padding_efficiency": (">=", 0.95),
    "train_vs_bare": (">=", 0.9),
    "gradcache_memory": ("<=", 1.25),
    "qlora_memory": ("<=", 0.35),
    "ann_speedup": (">=", 20.0),
    "ann_recall": (">=", 0.95),
    "index_overhead": ("<=", 1.1),
    "multi_overhead": ("<=", 1.1),
    "multi_recall": (">=", 0.95),
    "ondisk_memory": ("<=", 1.5),
    "pool_read_speedup": (">=", 10.0),
}


def met(key: str, value: float) -> bool:
    """Whether ``value`` is on the goal's side of it (the goal itself counts as met)."""
    op, goal = GOALS[key]
    return value >= goal if op == ">=" else value <= goal


def table(results: dict) -> str:
    """The markdown table of every goal: key, value, goal, met."""
    lines = ["| key | value | goal | met |", "|---|---:|---|---|"]
    for key, (op, goal) in GOALS.items():
        value = results[key]
        lines.append(f"| {key} | {value:.3f} | {op} {goal} | {'yes' if met(key, value) else 'NO'} |")
    return "\n".join(lines)
