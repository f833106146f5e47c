"""The last step of training: a trained state -> one self-contained model folder.

LoRA is merged, and a QLoRA run is merged onto the full-precision base weights (its 4-bit base is
not what users should download). Training calls this for ``output_dir/final``; ``jfe export``
calls it for any checkpoint of a run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from jfe.artifacts import LearnedTemperature
from jfe.builtins import resolve_builtin
from jfe.embedder import Embedder
from jfe.train.config import TrainConfig
from jfe.train.model import load_embedder


def training_prompts(config: TrainConfig) -> dict[str, str]:
    """Named query instructions for sentence-transformers: one per M-BEIR dataset trained on (its
    first prompt)."""
    if config.data_format != "mbeir" or not config.use_instructions:
        return {}
    from jfe.data.instructions import Instructions
    from jfe.data.mbeir import MBeirLayout

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
    """A fresh full-precision copy of the base on the CPU with the trained weights loaded and LoRA merged."""
    fresh = TrainConfig(**{**config.to_dict(), "quantization": "", "gradient_checkpointing": False})
    base = load_embedder(fresh, base_path, device="cpu")
    prefix = "embedder."
    wanted = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    trained = (lambda k: "lora_" in k) if config.trainable == "lora" else (lambda k: k.startswith("model."))
    wanted = {k: v.float() for k, v in wanted.items() if trained(k) or k.startswith("multi_head.")}
    result = base.load_state_dict(wanted, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"trained weights do not fit the model: {result.unexpected_keys[:5]}")
    if config.trainable == "lora":
        base.model = base.model.merge_and_unload()
    base.config.base_model = base_path
    base.config.prompts = training_prompts(config)
    base.config.matryoshka_dims = sorted(config.matryoshka_dims, reverse=True)
    return Embedder(base.model, base.processor, base.config, base.multi_head)


def write_final(config: TrainConfig, base_path: str, state_dict: dict[str, torch.Tensor], out: Path) -> Path:
    """Save the merged model to ``out`` (atomically), with the learned temperature if there is one."""
    merged_embedder(config, base_path, state_dict).save(out)
    log_t = state_dict.get("temperature.log_value")
    if log_t is not None:
        LearnedTemperature(float(log_t.float().exp()[0])).write(out)
    return out
