"""Every training option, as a typed and documented dataclass field.

A recipe (plain YAML) sets fields by name; ``key=value`` arguments on the command line win over
the recipe. ``jfe train --help-config`` prints this table.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def option(default: Any, help: str) -> Any:
    """A field with its ``--help-config`` text (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # --- what to train, where to write it
    model: str = option("", "starting checkpoint folder (or builtin:tiny for the offline tiny Qwen2-VL)")
    output_dir: str = option("", "where checkpoints and the final model go")
    stage: str = option("adapt", "adapt (stage 1, post-training adaptation) or instruct (stage 2, instruction tuning)")

    # --- data
    data_format: str = option("mbeir", "mbeir (UniIR layout) or pairs (jfe pair JSONL)")
    mbeir_root: str = option("", "M-BEIR root folder, or builtin:digits for the offline digits benchmark")
    datasets: list = option([], "M-BEIR dataset names to train on (empty: every dataset of the split)")
    query_file: str = option(
        "",
        "one M-BEIR query JSONL, relative to mbeir_root, used instead of the per-dataset files, e.g. UniIR's "
        "query/union_train/mbeir_union_up_train.jsonl (its qids repeat by design: each row is an example); "
        "needs pool: global",
    )
    split: str = option("train", "M-BEIR split to train on")
    pool: str = option("global", "candidate pool: global (union) or local (each dataset's own)")
    pairs_files: list = option([], "pair-format JSONL files (data_format: pairs)")
    images_root: str = option("", "folder image paths are relative to (default: the M-BEIR root / the file's folder)")
    use_instructions: bool = option(True, "prepend the task instruction to queries (M-BEIR instructions TSV)")
    uniir_format: bool = option(
        True, "M-BEIR texts as UniIR embeds them (format_string: capitalised, final period); pair data never"
    )
    task_weights: dict = option(
        {},
        "sampling weight per task group (empty: proportional to size); a group is one dataset id and task: "
        "a per-dataset file's name (digits_t2i), or from query_file the dataset's name, with /task<N> when "
        "it has several tasks (MSCOCO/task0)",
    )
    group_by_length: bool = option(False, "batch queries of similar length together (less padding), in random windows")
    num_negatives: int = option(0, "hard negatives per query, from neg_cand_list or negatives_file")
    negatives_file: str = option("", "mined negatives JSONL (jfe mine) used instead of neg_cand_list")
    fill_random_negatives: bool = option(True, "top up missing hard negatives with random same-dataset candidates")
    skip_bad_inputs: bool = option(False, "skip and count examples with missing/corrupt images instead of failing")
    max_text_tokens: int = option(512, "text is cut to this many tokens before the prompt is added")
    min_pixels: int = option(0, "smallest image size in pixels (0: the checkpoint's); saved with the model")
    max_pixels: int = option(
        0,
        "largest image size in pixels (0: the checkpoint's): bounds visual tokens; saved with the model",
    )
    caption_dropout: float = option(0.0, "MiMIC: probability of dropping the text of an image+text input")
    modality_mixin: float = option(0.0, "MiMIC: probability of replacing an image+text input by a one-modality view")
    mimic_apply_to: str = option("both", "MiMIC options apply to: query, candidate or both")

    # --- loss
    temperature: float = option(0.05, "InfoNCE temperature (initial value when learnable)")
    learn_temperature: bool = option(False, "learn the temperature, clamped to [temperature_min, 1]")
    temperature_min: float = option(0.01, "lower bound of a learnable temperature")
    gather_across_ranks: bool = option(True, "use every rank's candidates as negatives (all-gather with gradient)")
    symmetric_loss: bool = option(
        False, "also the reverse InfoNCE, each positive picking its query among the batch's queries (averaged)"
    )
    matryoshka_dims: list[int] = option(
        [],
        "Matryoshka (MRL): also train the embedding's first D components for each D listed (below the width); "
        "the full width always trains, with weight 1",
    )
    matryoshka_weights: list[float] = option([], "MRL: the loss weight of each matryoshka_dims entry (default 1)")
    fusion: str = option(
        "early",
        "early: image and text in one sequence (jfe's model); late: the same VLM embeds an image+text input's "
        "image and text apart, their normalised embeddings summed and renormalised (UniIR's score fusion)",
    )
    embedding: str = option(
        "single",
        "single (one vector per input), multi (token vectors of a linear head, MeanMaxSim: late interaction) "
        "or both (the two heads, one forward, losses summed: single + multi_weight x multi)",
    )
    multi_dim: int = option(128, "components of each token vector (embedding: multi or both)")
    multi_weight: float = option(1.0, "embedding both: the multi-vector loss's weight (the single one's is 1)")
    gradcache_chunk_size: int = option(0, "GradCache: embed in chunks of this size (0: off)")
    length_chunks: int = option(
        8,
        "embed each side of a batch in this many passes of rows of similar token length, so short rows "
        "are not padded to the longest (same loss and gradients; 1: one pass; GradCache sorts its own chunks)",
    )

    # --- what trains
    trainable: str = option("lora", "lora (adapters on lora_target), full (the whole LLM) or none")
    train_vision: bool = option(False, "also train the vision tower (full mode)")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    lora_target: str = option(
        "language",
        "modules that get LoRA adapters: language (the LLM's attention and MLP projections), "
        "language+vision (also the vision tower's blocks and merger, never its patch embedding; the "
        "family's list in jfe/backbones) or a regex full-matching module names",
    )
    quantization: str = option("", "nf4 for QLoRA (bitsandbytes 4-bit base weights); empty for none")
    gradient_checkpointing: bool = option(False, "recompute activations in backward to save memory")
    dtype: str = option("float32", "weights dtype: float32, bfloat16 or float16")

    # --- optimisation (handed to transformers.TrainingArguments)
    per_device_batch_size: int = option(8, "queries per rank per step (global batch = this x ranks)")
    learning_rate: float = option(1e-4, "peak learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_steps: float = option(0.0, "learning-rate warm-up: a number of steps, or below 1 a fraction of all steps")
    lr_scheduler_type: str = option("linear", "transformers scheduler name")
    max_steps: int = option(-1, "total optimiser steps (-1: use num_epochs)")
    num_epochs: float = option(1.0, "epochs when max_steps is -1")
    logging_steps: int = option(10, "log the loss every N steps")
    save_steps: int = option(500, "write a resumable checkpoint every N steps")
    save_total_limit: int = option(2, "keep at most N checkpoints")
    seed: int = option(0, "seeds model init, sampling and augmentation")
    dataloader_num_workers: int = option(0, "DataLoader worker processes (image decoding)")
    deepspeed: str = option("", "DeepSpeed JSON config (set by --deepspeed)")
    resume: bool = option(False, "continue from the newest checkpoint in output_dir")
    report_to: str = option("none", "transformers report_to (none, tensorboard, wandb, ...)")

    def validate(self) -> None:
        if not self.model:
            raise ValueError("model is not set: give model=PATH on the command line or in the recipe")
        if not self.output_dir:
            raise ValueError("output_dir is not set: give output_dir=PATH on the command line or in the recipe")
        choices = {
            "stage": ("adapt", "instruct"),
            "data_format": ("mbeir", "pairs"),
            "pool": ("global", "local"),
            "trainable": ("lora", "full", "none"),
            "quantization": ("", "nf4"),
            "mimic_apply_to": ("query", "candidate", "both"),
            "dtype": ("float32", "bfloat16", "float16"),
            "embedding": ("single", "multi", "both"),
            "fusion": ("early", "late"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {allowed}")
        if self.data_format == "mbeir" and not self.mbeir_root:
            raise ValueError("data_format mbeir needs mbeir_root")
        if self.data_format == "pairs" and not self.pairs_files:
            raise ValueError("data_format pairs needs pairs_files")
        if self.query_file:
            if self.data_format != "mbeir":
                raise ValueError(f"query_file={self.query_file!r} is an M-BEIR query file: set data_format=mbeir")
            if self.datasets:
                raise ValueError(f"give query_file={self.query_file!r} or datasets={self.datasets}, not both")
            if self.pool != "global":
                # local pools are found by dataset name, and one query file holds several datasets
                raise ValueError(f"query_file={self.query_file!r} needs pool=global (the union pool of the split)")
        if self.matryoshka_dims and self.embedding == "multi":
            raise ValueError("matryoshka_dims are prefixes of the single vector: set embedding=single or both")
        if self.fusion == "late" and self.embedding != "single":
            raise ValueError("fusion=late combines single vectors: set embedding=single")
        if self.multi_dim < 1:
            raise ValueError(f"multi_dim={self.multi_dim} must be at least 1")
        if self.length_chunks < 1:
            raise ValueError(f"length_chunks={self.length_chunks} must be at least 1 (1: one pass per side)")
        if self.quantization and self.trainable != "lora":
            raise ValueError("quantization (QLoRA) trains adapters only: set trainable=lora")
        if self.gradcache_chunk_size and self.deepspeed and deepspeed_stage(self.deepspeed) == 3:
            raise ValueError(
                f"GradCache (gradcache_chunk_size={self.gradcache_chunk_size}) cannot run under ZeRO-3 "
                f"({self.deepspeed}): partitioned parameters cannot take the whole batch's gradient at once. "
                "Use deepspeed_configs/zero2.json, or gradcache_chunk_size=0."
            )
        if self.quantization and self.deepspeed and deepspeed_stage(self.deepspeed) == 3:
            raise ValueError(
                f"QLoRA ({self.quantization}) cannot run under ZeRO-3 ({self.deepspeed}): 4-bit weights cannot "
                "be partitioned across ranks. Use deepspeed_configs/zero2.json, or drop quantization."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Options as ``to_dict`` wrote them, by this or an earlier jfe."""
        values = dict(values)
        if "warmup_ratio" in values:  # the name before 0.2: transformers 5 reads a fraction from warmup_steps
            values.setdefault("warmup_steps", values.pop("warmup_ratio"))
        return cls(**values)


def deepspeed_stage(path: str) -> int:
    config = json.loads(Path(path).read_text())
    return int(config.get("zero_optimization", {}).get("stage", 0))


def _coerce(name: str, raw: Any, kind: type) -> Any:
    if kind is bool and isinstance(raw, str):
        raw = yaml.safe_load(raw)
    if kind in (list, dict) and isinstance(raw, str):
        raw = yaml.safe_load(raw) if raw else kind()
    try:
        value = kind(raw) if raw is not None else kind()
    except (TypeError, ValueError) as err:
        raise ValueError(f"option {name}: cannot read {raw!r} as {kind.__name__}") from err
    if kind is bool and not isinstance(raw, bool):
        raise ValueError(f"option {name}: expected true or false, got {raw!r}")
    return value


def load_config(path: str | None, overrides: list[str] | None = None) -> TrainConfig:
    """Recipe YAML, then ``key=value`` overrides; unknown keys are errors that name the key."""
    values: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a recipe is a YAML mapping of option: value")
        values.update(loaded)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        values[key.strip()] = raw
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" in {path}" if path else ""
        raise ValueError(f"unknown option(s){where}: {', '.join(unknown)} (see jfe train --help-config)")
    kwargs = {}
    for key, raw in values.items():
        kind = hints[key]
        kind = typing.get_origin(kind) or kind
        kwargs[key] = _coerce(key, raw, kind)
    return TrainConfig(**kwargs)


def describe() -> str:
    """The option table for ``--help-config``."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(
            f"  {f.name:<24} {typing.get_type_hints(TrainConfig)[f.name].__name__:<6} "
            f"(default {default!r})\n      {f.metadata['help']}"
        )
    return "\n".join(lines)
