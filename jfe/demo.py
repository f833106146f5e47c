"""``jfe demo``: the whole pipeline on CPU, offline, in a few minutes.

Builds a tiny random-init Qwen2-VL and the digits benchmark, trains stage 1 (post-training
adaptation) and stage 2 (instruction tuning, LoRA) through the real training entry point with the
tiny recipes, exports the model, encodes the test pools into shards, indexes them with FAISS,
searches, evaluates, and runs the modality probe on the fusion tasks. Prints one table and
writes ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING

from jfe.artifacts import DemoResults

if TYPE_CHECKING:
    from jfe.retrieval.items import TextStyle

FUSION_TASKS = ("digits_it2t", "digits_it2i")


@dataclass(frozen=True)
class Schedule:
    """How long the demo (and each arm of ``jfe reproduce``) trains: steps per stage, and stage-2
    recipe options on top of ``recipes/tiny-stage2.yaml``."""

    name: str
    stage1_steps: int
    stage2_steps: int
    stage2: tuple[str, ...] = ()

    def describe(self) -> dict:
        return asdict(self) | {"stage2": list(self.stage2)}


SCHEDULES: dict[str, Schedule] = {
    # the demo, several times shorter than the recipes: rank-16 LoRA and two hard negatives per
    # query cost less per step than the recipe's 32 and four, and learned no slower in 500 steps
    # (docs/reproduce.md); the fusion tasks sit near chance for the first ~300 stage-2 steps
    "quick": Schedule("quick", 200, 500, ("lora_r=16", "lora_alpha=32", "num_negatives=2")),
    # the tiny recipes as written: the full-accuracy table
    "full": Schedule("full", 400, 1800),
}


def with_steps(schedule: Schedule, stage1_steps: int | None, stage2_steps: int | None) -> Schedule:
    """``schedule`` with the steps a user overrode (then named "custom", so no table passes for it)."""
    if not (stage1_steps or stage2_steps):
        return schedule
    return replace(
        schedule,
        name="custom",
        stage1_steps=stage1_steps or schedule.stage1_steps,
        stage2_steps=stage2_steps or schedule.stage2_steps,
    )


def quiet_logs() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("transformers", "jfe"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _hits(table: dict) -> dict:
    return {
        task: {"hit@1": round(row["recall@1"], 4), "hit@5": round(row["recall@5"], 4)}
        for task, row in table.items()
        if task != "average"
    }


def _print_table(results: DemoResults) -> None:
    stages = results.stages
    tasks = list(next(iter(stages.values())))
    ablation = results.ablation
    header = ["task"]
    for stage in stages:
        header += [f"{stage} H@1", f"{stage} H@5"]
    header += ["no image H@1", "no text H@1"]
    print("| " + " | ".join(header) + " |")
    print("|---" + "|---:" * (len(header) - 1) + "|")
    for task in tasks:
        cells = [task]
        for stage in stages.values():
            cells += [f"{stage[task]['hit@1']:.3f}", f"{stage[task]['hit@5']:.3f}"]
        for key in ("image_removed", "text_removed"):
            row = ablation[key].get(task)
            cells.append(f"{row['hit@1']:.3f}" if row else "")
        print("| " + " | ".join(cells) + " |")


def digits_style() -> TextStyle:
    """How the tiny recipes train, so how the digits are scored: the first prompt's wording, the
    texts as written (no UniIR formatting)."""
    from jfe.retrieval.items import TextStyle

    return TextStyle("first", uniir_format=False)


def evaluate_digits(model_dir: Path, data: Path, out: Path, name: str, **kwargs) -> dict:
    """jfe's evaluator on the digits test split, local pools (``kwargs`` go to ``evaluate_mbeir``);
    pool embeddings are cached under ``out/eval``, keyed by the weights."""
    from jfe.embedder import Embedder
    from jfe.retrieval.evaluate import evaluate_mbeir, model_fingerprint

    embedder = Embedder.from_pretrained(model_dir, dtype="float32", device="cpu")
    work = out / "eval" / f"{name}-{model_fingerprint(model_dir)}"
    return evaluate_mbeir(embedder, data, split="test", pool="local", work_dir=work, style=digits_style(), **kwargs)


def train_recipe(
    recipe: str, start_from: Path, data: Path, output_dir: Path, steps: int | None, overrides: list[str] | None = None
) -> Path:
    """Train one of the packaged tiny recipes from ``start_from`` on ``data`` into ``output_dir``
    (``steps`` overrides its max_steps, ``overrides`` any other option); returns the final model."""
    from jfe.train.config import load_config
    from jfe.train.trainer import run

    options = [f"output_dir={output_dir}", f"model={start_from}", f"mbeir_root={data}"]
    options += ([f"max_steps={steps}"] if steps else []) + list(overrides or [])
    # the tiny recipes ship inside the package (recipes/tiny-*.yaml link to them), so the demo
    # runs from an installed wheel as well as from a clone
    with as_file(files("jfe").joinpath("recipes", recipe)) as path:
        return run(load_config(str(path), options))


def run_demo(out: Path, schedule: Schedule = SCHEDULES["quick"]) -> DemoResults:
    from jfe.builtins import digits_benchmark, tiny_model
    from jfe.export import export

    start = time.perf_counter()
    _banner("1/6 building the tiny Qwen2-VL and the digits benchmark (cached after the first run)")
    base = tiny_model("qwen2_vl")
    data = digits_benchmark()
    print(f"model: {base}\ndata:  {data}")

    def evaluate(model_dir: Path, name: str, **kwargs) -> dict:
        return evaluate_digits(model_dir, data, out, name, **kwargs)

    results = DemoResults(stages={}, ablation={}, schedule=schedule.describe())
    _banner("2/6 evaluating the untrained model")
    results.stages["untrained"] = _hits(evaluate(base, "untrained"))

    _banner(f"3/6 stage 1: post-training adaptation (recipes/tiny-stage1.yaml, {schedule.stage1_steps} steps)")
    stage1 = train_recipe("tiny-stage1.yaml", base, data, out / "stage1", schedule.stage1_steps)
    results.stages["stage1"] = _hits(evaluate(stage1, "stage1"))

    _banner(
        "4/6 stage 2: instruction tuning with hard negatives, LoRA "
        f"(recipes/tiny-stage2.yaml, {schedule.stage2_steps} steps)"
    )
    stage2_options = list(schedule.stage2)
    stage2 = train_recipe("tiny-stage2.yaml", stage1, data, out / "stage2", schedule.stage2_steps, stage2_options)

    _banner("5/6 export, encode the test pools into shards, FAISS index, search, evaluate")
    exported = export(stage2, out / "model")
    results.stages["stage2"] = _hits(evaluate(exported, "stage2", runs_dir=out / "runs"))

    _banner("6/6 modality probe on the fusion tasks")
    for key, modality in (("image_removed", "image"), ("text_removed", "text")):
        table = evaluate(exported, "stage2", datasets=list(FUSION_TASKS), ablate_modality=modality)
        results.ablation[key] = {t: {"hit@1": round(r["recall@1"], 4)} for t, r in table.items() if t != "average"}
    results.seconds = round(time.perf_counter() - start, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="jfe-demo", help="folder for runs, the exported model and results.json")
    parser.add_argument(
        "--full", action="store_true", help="the full-accuracy schedule: the tiny recipes' own steps (much longer)"
    )
    parser.add_argument("--stage1-steps", type=int, help="override the schedule's stage-1 steps")
    parser.add_argument("--stage2-steps", type=int, help="override the schedule's stage-2 steps")
    args = parser.parse_args(argv)
    quiet_logs()
    schedule = with_steps(SCHEDULES["full" if args.full else "quick"], args.stage1_steps, args.stage2_steps)
    out = Path(args.out)
    results = run_demo(out, schedule)
    steps = f"{schedule.stage1_steps} + {schedule.stage2_steps} steps"
    _banner(f"results: {schedule.name} schedule ({steps}; Hit@k = UniIR Recall@k; {results.seconds:.0f} s)")
    _print_table(results)
    path = results.write(out)
    print(f"\nwrote {path}; model in {out / 'model'}")
    return 0
