"""The extra tables ``jfe eval`` prints: the modality probe, Matryoshka widths, and a chart."""

from __future__ import annotations

from pathlib import Path


def probe_table(full: dict, ablated: dict, metric: str = "recall@1") -> dict[str, dict[str, float]]:
    """Per task: the metric with both modalities, without one, and the change."""
    out = {}
    for task, row in full.items():
        if task in ablated and metric in row:
            out[task] = {metric: row[metric], f"{metric} ablated": ablated[task][metric]}
            out[task]["change"] = ablated[task][metric] - row[metric]
    return out


def dims_table(full: dict, by_dim: dict[str, dict], metric: str = "recall@1") -> dict[str, dict[str, float]]:
    """One row per task: ``metric`` at the full width and at each Matryoshka dimension."""
    return {
        task: {"full": row[metric], **{f"dim {d}": table[task][metric] for d, table in by_dim.items()}}
        for task, row in full.items()
        if metric in row
    }


def save_chart(table: dict[str, dict[str, float]], path: Path, metric: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise SystemExit("--png needs matplotlib: pip install matplotlib") from err
    tasks = [t for t in table if metric in table[t]]
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(tasks)), 3))
    ax.bar(tasks, [table[t][metric] for t in tasks])
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
