"""``jfe train --plan``: what a run will cost, before it runs.

It reads the recipe's real data, collates a sample of the batches one rank will see exactly as
training does, and counts their tokens; it builds the model on the meta device (no weights are
read, so a 7B model costs nothing) to count what trains; and it estimates activation memory per
rank from those counts. The estimate is a rule of thumb, stated in :func:`activation_bytes`, good
to about a factor of two: enough to pick a batch size before a long run, not to replace a trial.
Parameters are counted unquantised: under QLoRA the run's own log counts a 4-bit weight's packed
storage (two values a byte), the plan the weight's values.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import torch
from transformers import AutoConfig, AutoModel

from jfe.builtins import resolve_builtin
from jfe.embedder import Embedder, load_processor
from jfe.train.config import TrainConfig
from jfe.train.model import make_trainable, parameter_counts

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class SideCost:
    """Token counts of one side (queries or candidates) of a rank's batch, over the sampled batches."""

    rows: int  # rows per batch (a dummy-image row included)
    real_tokens: float  # mean non-padding tokens per batch
    padded_tokens: float  # mean tokens per batch as the model runs them (padding included)
    max_padded_tokens: int
    visual_tokens: float  # mean image placeholder tokens per batch (part of the tokens above)
    vision_patches: float  # mean vision-tower patches per batch (merge_size^2 per visual token)
    max_vision_patches: int


@dataclass
class Plan:
    model: str
    batches: int  # sampled batches
    trainable_parameters: int
    total_parameters: int
    query: SideCost
    candidates: SideCost
    activation_gib: dict[str, float]  # per rank, for the largest sampled batch of each side

    def report(self) -> str:
        share = 100 * self.trainable_parameters / max(self.total_parameters, 1)
        lines = [
            f"model: {self.model}",
            f"trainable parameters: {self.trainable_parameters:,} of {self.total_parameters:,} ({share:.2f}%)",
            f"per rank and step, mean over {self.batches} sampled batches (largest in brackets):",
        ]
        for name, side in (("queries", self.query), ("candidates", self.candidates)):
            lines.append(
                f"  {name:<10} {side.rows:>4} rows  {side.real_tokens:>9,.0f} tokens ({side.padded_tokens:,.0f} "
                f"padded [{side.max_padded_tokens:,}])  {side.visual_tokens:,.0f} visual tokens  "
                f"{side.vision_patches:,.0f} vision patches [{side.max_vision_patches:,}]"
            )
        memory = ", ".join(f"{k} {v:.2f} GiB" for k, v in self.activation_gib.items())
        lines.append(f"activation memory estimate per rank: {memory}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def activation_bytes(
    config: AutoConfig, tokens: int, patches: int, dtype: str, checkpointing: bool, concurrent_rows: float = 1.0
) -> int:
    """Bytes of activations kept for backward by one forward of ``tokens`` LLM tokens and
    ``patches`` vision patches.

    Per token and layer a decoder keeps about ``7h + 2kv + 4i`` values (h hidden, kv the key/value
    width, i the MLP width: the norms' outputs, q/k/v, the attention output, the MLP's gate, up,
    activation and down inputs; flash/sdpa attention keeps no score matrix), the vision tower
    likewise with its own widths. With gradient checkpointing only each layer's input (h) is kept,
    plus one layer recomputed at a time. ``concurrent_rows`` < 1 scales for GradCache, which holds
    one chunk's activations at a time.
    """
    text = config.get_text_config()
    h, i, layers = text.hidden_size, text.intermediate_size, text.num_hidden_layers
    head_dim = getattr(text, "head_dim", None) or h // text.num_attention_heads
    kv = text.num_key_value_heads * head_dim
    vision = config.vision_config
    # Qwen2-VL names the tower's width embed_dim (its hidden_size is the merger's output)
    vh = getattr(vision, "embed_dim", None) or vision.hidden_size
    vi = getattr(vision, "intermediate_size", None) or int(vh * getattr(vision, "mlp_ratio", 4))
    per_token, per_patch = 7 * h + 2 * kv + 4 * i, 7 * vh + 4 * vi
    if checkpointing:
        kept = tokens * (layers * h + per_token) + patches * (vision.depth * vh + per_patch)
    else:
        kept = tokens * layers * per_token + patches * vision.depth * per_patch
    return int(kept * DTYPE_BYTES[dtype] * concurrent_rows)


def _side_cost(chunks_per_batch: list[list[dict]], image_token_id: int) -> SideCost:
    padded = [sum(c["attention_mask"].numel() for c in chunks) for chunks in chunks_per_batch]
    patches = [sum(len(c["pixel_values"]) if "pixel_values" in c else 0 for c in ch) for ch in chunks_per_batch]
    n = len(chunks_per_batch)
    return SideCost(
        rows=max(sum(len(c["attention_mask"]) for c in chunks) for chunks in chunks_per_batch),
        real_tokens=sum(int(c["attention_mask"].sum()) for ch in chunks_per_batch for c in ch) / n,
        padded_tokens=sum(padded) / n,
        max_padded_tokens=max(padded),
        visual_tokens=sum(int((c["input_ids"] == image_token_id).sum()) for ch in chunks_per_batch for c in ch) / n,
        vision_patches=sum(patches) / n,
        max_vision_patches=max(patches),
    )


def meta_embedder(model_path: str, config: TrainConfig) -> Embedder:
    """The run's embedder with its processor and pixel budget, its model on the meta device."""
    processor, embedder_config = load_processor(model_path, config.min_pixels or None, config.max_pixels or None)
    embedder_config.embedding, embedder_config.multi_dim = config.embedding, config.multi_dim
    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.from_pretrained(model_path))
        return Embedder(model, processor, embedder_config)


def plan(config: TrainConfig, batches: int = 8) -> Plan:
    """Sample ``batches`` of one rank's batches (spread over the first epoch) and cost them."""
    from jfe.data.sampler import TaskBatchSampler
    from jfe.train.trainer import build_collator, build_dataset

    config.validate()
    model_path = resolve_builtin(config.model, "model")
    embedder = meta_embedder(model_path, config)
    make_trainable(embedder, config)
    trainable, total = parameter_counts(embedder)
    dataset = build_dataset(config)
    sampler = TaskBatchSampler(
        dataset.groups(),
        config.per_device_batch_size,
        seed=config.seed,
        weights=config.task_weights or None,
        positive_of=dataset.positive_of,
        length_of=dataset.length_of if config.group_by_length else None,
    )
    steps = list(sampler)
    chosen = sorted(random.Random(config.seed).sample(range(len(steps)), min(batches, len(steps))))
    collator = build_collator(config, embedder.processor)
    collated = [collator([dataset[i] for i in steps[s]]) for s in chosen]
    image_token = embedder.model.config.image_token_id
    query = _side_cost([b["query"] for b in collated], image_token)
    candidates = _side_cost([b["candidates"] for b in collated], image_token)
    model_config = AutoConfig.from_pretrained(model_path)
    memory = {}
    for name, side in (("queries", query), ("candidates", candidates)):
        share = min(1.0, config.gradcache_chunk_size / side.rows) if config.gradcache_chunk_size else 1.0
        memory[name] = activation_bytes(
            model_config,
            side.max_padded_tokens,
            side.max_vision_patches,
            config.dtype,
            config.gradient_checkpointing,
            share,
        )
    # without GradCache both sides' graphs are alive when the loss runs backward
    memory["peak"] = max(memory.values()) if config.gradcache_chunk_size else sum(memory.values())
    return Plan(
        model=model_path,
        batches=len(chosen),
        trainable_parameters=trainable,
        total_parameters=total,
        query=query,
        candidates=candidates,
        activation_gib={k: v / GIB for k, v in memory.items()},
    )
