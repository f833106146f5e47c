"""``jfe export``: a trained run -> one self-contained folder (merged weights, processor, embedding
chat template, query prompts, sentence-transformers files, model card).

    jfe export --model runs/x/final|runs/x/checkpoint-N|any-supported-checkpoint --out DIR [--eval eval.json]

LoRA is merged, and a QLoRA run is merged onto the full-precision base weights (its 4-bit base is
not what users should download). The folder loads in ``jfe.Embedder`` and in
``sentence_transformers.SentenceTransformer`` with no jfe installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from safetensors.torch import load_file

from jfe.artifacts import EvalReport, RunStart, TrainSummary
from jfe.atomic import atomic_dir
from jfe.card import write_model_card
from jfe.embedder import JFE_CONFIG, Embedder
from jfe.train.config import TrainConfig
from jfe.train.finalize import write_final


def _is_checkpoint(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "trainer_state.json").is_file()


def _export_checkpoint(checkpoint: Path, out: Path) -> None:
    """Merge a Trainer checkpoint of a jfe run, with a summary of the run up to that step."""
    run_file = RunStart.path_in(checkpoint.parent)
    if not run_file.is_file():
        raise FileNotFoundError(f"{checkpoint} is a training checkpoint but {run_file} (the run's options) is missing")
    start = RunStart.read(run_file)
    write_final(TrainConfig.from_dict(start.config), start.base_model, load_file(checkpoint / "model.safetensors"), out)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    TrainSummary(
        config=start.config,
        base_model=start.base_model,
        checkpoint=str(checkpoint),
        global_steps=state.get("global_step"),
        loss_history=[e for e in state.get("log_history", []) if "loss" in e],
    ).write(out)


def export(
    model: str | os.PathLike,
    out: str | os.PathLike,
    eval_file: str | os.PathLike | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Write the export folder for ``model`` (final folder, checkpoint or plain checkpoint) with its card."""
    model, out = Path(model), Path(out)
    if (model / JFE_CONFIG).is_file():
        with atomic_dir(out) as tmp:
            shutil.copytree(model, tmp, dirs_exist_ok=True)
    elif _is_checkpoint(model):
        _export_checkpoint(model, out)
    else:
        Embedder.from_pretrained(model, dtype="float32", device="cpu").save(out)
    if eval_file is not None:
        EvalReport.read(eval_file).write(out, name=EvalReport.EXPORTED)
    write_model_card(out, license=license)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="runs/NAME/final, runs/NAME/checkpoint-N, or a model folder")
    parser.add_argument("--out", required=True, help="export folder")
    parser.add_argument("--eval", help="eval.json from `jfe eval --model ... --out DIR` to put in the model card")
    parser.add_argument("--license", default="apache-2.0", help="license in the card's metadata")
    args = parser.parse_args(argv)
    folder = export(args.model, args.out, args.eval, args.license)
    print(f"exported to {folder} (model card: {folder / 'README.md'})")
    return 0
