"""``jfe export``: a trained run -> one self-contained folder (merged weights, processor, embedding
chat template, query prompts, sentence-transformers files, model card).

    jfe export --model runs/x/final|runs/x/checkpoint-N|any-qwen2-vl-folder --out DIR [--eval eval.json]

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

import torch
from safetensors.torch import load_file

from jfe.atomic import atomic_dir
from jfe.embedder import JFE_CONFIG, Embedder
from jfe.train.config import TrainConfig

RUN_CONFIG = "jfe_train_config.json"  # written into output_dir when training starts
TRAIN_SUMMARY = "jfe_train.json"  # written into output_dir/final when training ends
EVAL_FILE = "jfe_eval.json"


def training_prompts(config: TrainConfig) -> dict[str, str]:
    """Named query instructions for sentence-transformers: one per M-BEIR dataset trained on (its
    first prompt, the one evaluation uses)."""
    if config.data_format != "mbeir" or not config.use_instructions:
        return {}
    from jfe.data.instructions import Instructions
    from jfe.data.mbeir import MBeirLayout
    from jfe.train.trainer import resolve_builtin

    layout = MBeirLayout(Path(resolve_builtin(config.mbeir_root, "data")))
    if not layout.instructions_file.is_file():
        return {}
    table = Instructions.load(layout.instructions_file)
    wanted = set(config.datasets) if config.datasets else None
    prompts = {}
    for (dataset_id, _q, _c), texts in table.prompts.items():
        name = table.names.get(dataset_id, dataset_id)
        if wanted is None or name in wanted:
            prompts[name] = texts[0]
    return prompts


def merged_embedder(config: TrainConfig, base_path: str, state_dict: dict[str, torch.Tensor]) -> Embedder:
    """A fresh full-precision copy of the base with the trained weights loaded and LoRA merged."""
    from jfe.train.model import load_embedder

    fresh = TrainConfig(**{**config.to_dict(), "quantization": "", "gradient_checkpointing": False})
    base = load_embedder(fresh, base_path)
    prefix = "embedder."
    wanted = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    keep = (lambda k: "lora_" in k) if config.trainable == "lora" else (lambda k: k.startswith("model."))
    wanted = {k: v.float() for k, v in wanted.items() if keep(k)}
    result = base.load_state_dict(wanted, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"trained weights do not fit the model: {result.unexpected_keys[:5]}")
    if config.trainable == "lora":
        base.model = base.model.merge_and_unload()
    base.config.base_model = base_path
    base.config.prompts = training_prompts(config)
    return Embedder(base.model, base.processor, base.config)


def write_final(config: TrainConfig, base_path: str, state_dict: dict[str, torch.Tensor], out: Path) -> Path:
    embedder = merged_embedder(config, base_path, state_dict)
    embedder.save(out)
    log_t = state_dict.get("temperature.log_value")
    if log_t is not None:
        (out / "jfe_temperature.json").write_text(json.dumps({"temperature": float(log_t.float().exp()[0])}))
    return out


def _atomic_copy(src: Path, out: Path) -> Path:
    with atomic_dir(out) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return out


def export(
    model: str | os.PathLike,
    out: str | os.PathLike,
    eval_file: str | os.PathLike | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Write the export folder for ``model`` (final folder, checkpoint or plain checkpoint) with its card."""
    from jfe.hub import write_model_card

    model, out = Path(model), Path(out)
    run_config = model.parent / RUN_CONFIG
    if (model / JFE_CONFIG).is_file():
        _atomic_copy(model, out)
    elif (model / "model.safetensors").is_file() and (model / "trainer_state.json").is_file():
        if not run_config.is_file():
            raise FileNotFoundError(f"{model} is a training checkpoint but {run_config} (the run's options) is missing")
        data = json.loads(run_config.read_text())
        config = TrainConfig(**data["config"])
        write_final(config, data["base_model"], load_file(model / "model.safetensors"), out)
        summary = {"config": data["config"], "base_model": data["base_model"], "checkpoint": str(model)}
        state = json.loads((model / "trainer_state.json").read_text())
        summary["global_steps"] = state.get("global_step")
        summary["loss_history"] = [e for e in state.get("log_history", []) if "loss" in e]
        (out / TRAIN_SUMMARY).write_text(json.dumps(summary, indent=2))
    else:
        Embedder.from_pretrained(model, dtype="float32", device="cpu").save(out)
    if eval_file is not None:
        shutil.copyfile(eval_file, out / EVAL_FILE)
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
