"""``jfe reproduce``: the seeds' claims, checked on the digits benchmark in one command.

Every arm trains the built-in tiny Qwen2-VL with the same schedule and seed, and is scored on the
test split with the modality probe:

- ``early``: early fusion, stage 1 then stage 2 (the demo);
- ``late``: late fusion (the image and the text of an image+text input embedded apart and
  combined, ``fusion: late``), stage 1 then stage 2; stage 1 has no image+text inputs, so it is
  the same run as ``early``'s and is shared;
- ``stage2-only``: early fusion, stage 2 alone from the untrained model for as many steps as both
  stages together, everything trained (LLM and vision tower in full, stage 1's learning rate):
  LoRA on random weights would have little to adapt;
- ``mimic``: ``early`` plus MiMIC's random caption dropout and single-modality mix-in;
- ``collapse-early`` / ``collapse-mimic``: ``early`` and ``mimic`` on the collapse-prone variant
  (``builtin:digits-collapse``: digits_it2t's train colour word gives the digit away), which only
  the image can answer at test time.

Stage 1 runs once per seed and every arm but ``stage2-only`` starts from it. Prints one table
(Hit@1 per task, and the fusion tasks' Hit@1 with the image or the text removed; the mean over
seeds), writes ``OUT/results.json``, ``OUT/results.png`` and an HTML report per arm and seed.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from jfe.artifacts import Artifact
from jfe.demo import FUSION_TASKS, SCHEDULES, Schedule, evaluate_digits, quiet_logs, train_recipe, with_steps

MIMIC = ("caption_dropout=0.2", "modality_mixin=0.2")


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    collapse_prone: bool = False  # trained and scored on builtin:digits-collapse
    from_stage1: bool = True  # False: stage 2 alone from the untrained model, for both stages' steps
    overrides: tuple[str, ...] = ()  # stage-2 recipe options


ARMS: tuple[Arm, ...] = (
    Arm("early", "early fusion, two stages (the demo)"),
    Arm("late", "late fusion, two stages", overrides=("fusion=late",)),
    Arm(
        "stage2-only",
        "early fusion, stage 2 only from the untrained model, all weights trained",
        from_stage1=False,
        overrides=("trainable=full", "train_vision=true", "learning_rate=1.0e-3"),
    ),
    Arm("mimic", "early fusion + caption dropout 0.2 + modality mix-in 0.2, two stages", overrides=MIMIC),
    Arm("collapse-early", "early fusion, two stages, collapse-prone it2t", collapse_prone=True),
    Arm("collapse-mimic", "early fusion + MiMIC's options, collapse-prone it2t", collapse_prone=True, overrides=MIMIC),
)


@dataclass
class ReproduceResults(Artifact):
    """Per arm and seed: Hit@1 per task and the probe's Hit@1 on the fusion tasks; the mean over seeds."""

    FILE: ClassVar[str] = "results.json"
    schedule: dict
    seeds: list[int]
    arms: dict[str, dict] = field(default_factory=dict)  # arm -> {"description", "runs": {seed: row}, "mean": row}
    seconds: float = 0.0


def _row(table: dict, no_image: dict, no_text: dict) -> dict[str, float]:
    row = {task: round(r["recall@1"], 4) for task, r in table.items() if task != "average"}
    for key, probe in (("no image", no_image), ("no text", no_text)):
        row.update({f"{task} {key}": round(probe[task]["recall@1"], 4) for task in FUSION_TASKS if task in probe})
    return row


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(sum(r[key] for r in rows) / len(rows), 4) for key in rows[0]}


def run_arm(arm: Arm, seed: int, schedule: Schedule, start: Path, out: Path) -> dict[str, float]:
    """Train ``arm``'s stage 2 from ``start`` and score it; its HTML report goes to ``out/report.html``."""
    from jfe.builtins import digits_benchmark
    from jfe.retrieval.report import write_report

    data = digits_benchmark(collapse_prone=arm.collapse_prone)
    steps = schedule.stage2_steps + (0 if arm.from_stage1 else schedule.stage1_steps)
    options = [f"seed={seed}", *schedule.stage2, *arm.overrides]
    model = train_recipe("tiny-stage2.yaml", start, data, out / "stage2", steps, options)
    runs, no_image_runs = {}, {}
    table = evaluate_digits(model, data, out, arm.name, details=runs)
    probe = dict(datasets=list(FUSION_TASKS), multimodal_only=True)
    no_image = evaluate_digits(model, data, out, arm.name, ablate_modality="image", details=no_image_runs, **probe)
    no_text = evaluate_digits(model, data, out, arm.name, ablate_modality="text", **probe)
    title = f"jfe reproduce: {arm.name} ({arm.description}), seed {seed}, {schedule.name} schedule"
    write_report(out / "report.html", runs, without_image=no_image_runs, title=title, seed=seed)
    return _row(table, no_image, no_text)


def run_reproduce(out: Path, seeds: list[int], schedule: Schedule, arms: tuple[Arm, ...] = ARMS) -> ReproduceResults:
    from jfe.builtins import digits_benchmark, tiny_model

    began = time.perf_counter()
    base = tiny_model("qwen2_vl")
    results = ReproduceResults(schedule=schedule.describe(), seeds=seeds)
    for arm in arms:
        results.arms[arm.name] = {"description": arm.description, "runs": {}}
    for seed in seeds:
        folder = out / f"seed{seed}"
        stage1 = None
        if any(arm.from_stage1 for arm in arms):
            print(f"\n=== seed {seed}: stage 1 ({schedule.stage1_steps} steps), shared by the arms that start from it")
            stage1 = train_recipe(
                "tiny-stage1.yaml", base, digits_benchmark(), folder / "stage1", schedule.stage1_steps, [f"seed={seed}"]
            )
        for arm in arms:
            print(f"\n=== seed {seed}: {arm.name} ({arm.description})", flush=True)
            tick = time.perf_counter()
            row = run_arm(arm, seed, schedule, stage1 if arm.from_stage1 else base, folder / arm.name)
            results.arms[arm.name]["runs"][str(seed)] = row | {"seconds": round(time.perf_counter() - tick, 1)}
    for entry in results.arms.values():
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in entry["runs"].values()]
        entry["mean"] = _mean(rows)
    results.seconds = round(time.perf_counter() - began, 1)
    return results


def table_markdown(results: ReproduceResults) -> str:
    """One row per arm: mean Hit@1 over the seeds per task, then the probe's columns."""
    first = next(iter(results.arms.values()))["mean"]
    columns = list(first)
    header = ["arm", *(c.replace("digits_", "") for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(columns) + "|"]
    for name, entry in results.arms.items():
        runs = entry["runs"].values()
        cells = []
        for column in columns:
            values = [row[column] for row in runs]
            cell = f"{entry['mean'][column]:.3f}"
            if len(values) > 1:
                cell += f" ({'/'.join(f'{v:.2f}' for v in values)})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_chart(results: ReproduceResults, path: Path) -> Path:
    """Hit@1 per task per arm (left), and the fusion tasks with and without each modality (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results.arms)
    means = [results.arms[n]["mean"] for n in names]
    tasks = [k for k in means[0] if " " not in k]
    probes = [f"{t}{suffix}" for t in FUSION_TASKS for suffix in ("", " no image", " no text")]
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8), gridspec_kw={"width_ratios": [len(tasks), len(probes)]})
    for ax, keys, title in ((axes[0], tasks, "Hit@1 per task"), (axes[1], probes, "fusion tasks: probe")):
        x = np.arange(len(keys))
        width = 0.8 / len(names)
        for i, (name, mean) in enumerate(zip(names, means, strict=True)):
            ax.bar(x + i * width - 0.4 + width / 2, [mean.get(k, 0.0) for k in keys], width, label=name)
        ax.set_xticks(x, [k.replace("digits_", "") for k in keys], rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.set_ylabel("Hit@1 (mean over seeds)")
    axes[1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"jfe reproduce: {results.schedule['name']} schedule, seeds {results.seeds}")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe reproduce", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="jfe-reproduce", help="folder for every arm's runs, results.json and the PNG")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--schedule", choices=list(SCHEDULES), default="quick", help="the demo's (quick) or full")
    parser.add_argument("--arms", nargs="+", choices=[a.name for a in ARMS], help="a subset of the arms (default: all)")
    parser.add_argument("--stage1-steps", type=int, help="override the schedule's stage-1 steps")
    parser.add_argument("--stage2-steps", type=int, help="override the schedule's stage-2 steps")
    args = parser.parse_args(argv)
    quiet_logs()
    arms = tuple(a for a in ARMS if not args.arms or a.name in args.arms)
    schedule = with_steps(SCHEDULES[args.schedule], args.stage1_steps, args.stage2_steps)
    out = Path(args.out)
    results = run_reproduce(out, args.seeds, schedule, arms)
    print(f"\n=== results ({results.schedule['name']} schedule; Hit@1 = UniIR Recall@1; {results.seconds:.0f} s)")
    print(table_markdown(results))
    path = results.write(out)
    chart = save_chart(results, out / "results.png")
    print(f"\nwrote {path}, {chart} and a report.html per arm under {out}/seed*/")
    return 0
