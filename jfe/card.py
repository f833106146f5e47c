"""The model card (README.md) of an exported folder, written from the run's typed artifacts:
its training summaries along the chain of base models, its embedder config and its evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from jfe.artifacts import EvalReport, TrainSummary
from jfe.backbones import backbone_for
from jfe.embedder import EmbedderConfig
from jfe.retrieval.metrics import to_markdown
from jfe.train.config import TrainConfig


def _stages(folder: Path) -> list[TrainSummary]:
    """The training summaries along the chain of base models, oldest first (stage 1, stage 2)."""
    stages = []
    seen = set()
    current: Path | None = folder
    while current is not None and current not in seen:
        seen.add(current)
        summary = TrainSummary.find(current)
        if summary is None:
            break
        stages.append(summary)
        base = summary.base_model
        current = Path(base) if base and Path(base).is_dir() else None
    return stages[::-1]


def _pooling_dimension(folder: Path) -> int | None:
    path = folder / "1_Pooling" / "config.json"
    return json.loads(path.read_text()).get("embedding_dimension") if path.is_file() else None


def _stage_section(index: int, summary: TrainSummary) -> str:
    c = TrainConfig.from_dict(summary.config)
    name = {"adapt": "post-training adaptation", "instruct": "instruction tuning"}.get(c.stage, c.stage)
    data = (
        f"M-BEIR layout at `{c.mbeir_root}` ({', '.join(c.datasets) or 'all datasets'}, split {c.split}, "
        f"{c.pool} pool), instructions {'on' if c.use_instructions else 'off'}"
        if c.data_format == "mbeir"
        else f"pair files {', '.join(c.pairs_files)}"
    )
    trains = {
        "lora": f"LoRA r={c.lora_r}, alpha={c.lora_alpha}, dropout={c.lora_dropout} on `{c.lora_target}`",
        "full": "the full LLM" + (" and the vision tower" if c.train_vision else ""),
        "none": "nothing (temperature only)",
    }[c.trainable]
    if c.quantization:
        trains += f", {c.quantization} 4-bit base (QLoRA)"
    losses = summary.losses
    loss = f"{losses[0]:.4f} → {losses[-1]:.4f}" if losses else "n/a"
    world = summary.world_size
    batch = c.per_device_batch_size * world
    mrl = ""
    if c.matryoshka_dims:
        weights = c.matryoshka_weights or [1.0] * len(c.matryoshka_dims)
        dims = ", ".join(map(str, c.matryoshka_dims))
        mrl = f"; Matryoshka dimensions {dims} (weights {', '.join(map(str, weights))})"
    if c.fusion == "late":
        mrl += "; late fusion (image and text embedded apart, summed)"
    if c.embedding != "single":
        weight = f", weight {c.multi_weight} beside the single-vector loss" if c.embedding == "both" else ""
        mrl += f"; token vectors ({c.embedding}, {c.multi_dim}-d, MeanMaxSim{weight})"
    return "\n".join(
        [
            f"### Stage {index}: {name}",
            "",
            f"- Started from: `{summary.base_model}`",
            f"- Data: {data}; {c.num_negatives} hard negative(s) per query",
            f"- Trained: {trains}",
            f"- Loss: InfoNCE, temperature {c.temperature}{' (learned)' if c.learn_temperature else ''}, "
            f"global batch {batch} ({c.per_device_batch_size} x {world} rank(s)), "
            f"GradCache chunk {c.gradcache_chunk_size or 'off'}{mrl}",
            f"- Optimiser: AdamW, learning rate {c.learning_rate}, {c.lr_scheduler_type} schedule, "
            f"{summary.global_steps if summary.global_steps is not None else c.max_steps} steps, dtype {c.dtype}",
            f"- MiMIC: caption dropout {c.caption_dropout}, modality mix-in {c.modality_mixin}",
            f"- Hardware: {summary.hardware or 'unknown'}; DeepSpeed config: {c.deepspeed or 'none'}",
            f"- Training loss (first → last logged): {loss}",
            "",
        ]
    )


LATE_FUSION_NOTE = [
    "**Late fusion**: an image+text input is embedded as its image and its text apart (each with the "
    "instruction), and the two embeddings are summed and L2-normalised again. sentence-transformers embeds an "
    "image+text input as one sequence, so for such inputs use jfe (`Embedder.encode`), or embed the two parts "
    "with sentence-transformers and combine them the same way; text-only and image-only inputs embed the same in both.",
    "",
]


def _late_interaction_section(config: EmbedderConfig, prompt: str | None) -> list[str]:
    """Usage of the token vectors: where the MultiVectorEncoder folder is, and how it scores."""
    # one sentence-transformers folder holds one model type: a both model's token view is a subfolder
    where = '"REPO_ID"' if config.embedding == "multi" else 'snapshot_download("REPO_ID") + "/multi_vector"'
    query = f'prompt_name="{prompt}"' if prompt else 'prompt="Retrieve an image of the digit described."'
    return [
        "## Late interaction (token vectors)",
        "",
        f"Every token of an input also gets a {config.multi_dim}-d L2-normalised vector (a linear head on its last "
        "hidden state; the chat template's markers are skipped); a query scores a candidate by MeanMaxSim, the mean "
        "over the query's vectors of the best dot product with the candidate's.",
        "",
        "```python",
        *(["from huggingface_hub import snapshot_download"] if config.embedding == "both" else []),
        "from sentence_transformers import MultiVectorEncoder",
        "",
        f"model = MultiVectorEncoder({where})",
        'docs = model.encode_document([{"image": "three.png"}, "a seven"])',
        f'queries = model.encode_query(["a handwritten seven"], {query})',
        "scores = model.similarity(queries, docs)  # MeanMaxSim",
        "```",
        "",
    ]


def render_model_card(folder: str | os.PathLike, license: str = "apache-2.0") -> str:
    """The README.md text of an exported folder, from its run summaries, configs and eval JSON."""
    folder = Path(folder)
    stages = _stages(folder)
    prompts = EmbedderConfig.load(folder).prompts
    evaluation = EvalReport.find_exported(folder)
    base = stages[0].base_model if stages else EmbedderConfig.load(folder).base_model
    family = backbone_for(folder).card_tag
    config = EmbedderConfig.load(folder)
    data = ModelCardData(
        library_name="sentence-transformers",
        pipeline_tag="feature-extraction",
        license=license,
        tags=[
            "jfe",
            "sentence-transformers",
            "feature-extraction",
            "multimodal-retrieval",
            f"{config.fusion}-fusion",
            family,
        ],
        base_model=base if base and not Path(base).exists() else None,
    )
    example_prompt = next(iter(prompts), None)
    lines = [
        f"# One-tower {config.fusion}-fusion multimodal embedding model",
        "",
        "Image and text go into one sequence of a vision-language model; the final hidden state of the last "
        "token, L2-normalised, is the embedding. Queries carry a task instruction; candidates do not. "
        "Trained with [jfe](https://pypi.org/project/jfe/).",
        "",
        *(LATE_FUSION_NOTE if config.fusion == "late" else []),
        f"- Base model: `{base}`",
        *(
            [f"- Token vectors only: {config.multi_dim}-d; similarity: MeanMaxSim (see Late interaction)"]
            if config.embedding == "multi"
            else [f"- Embedding dimension: {_pooling_dimension(folder)}", "- Pooling: last token; similarity: cosine"]
        ),
        "",
        "## Usage",
        "",
    ]
    if config.embedding != "multi":
        lines += [
            "With sentence-transformers (no jfe needed):",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            'model = SentenceTransformer("REPO_ID")',
            'docs = model.encode([{"text": "a red seven", "image": "seven.png"}, {"image": "three.png"}, "a seven"])',
            (
                f'queries = model.encode(["a handwritten seven"], prompt_name="{example_prompt}")'
                if example_prompt
                else 'queries = model.encode(["a handwritten seven"], '
                'prompt="Retrieve an image of the digit described.")'
            ),
            "scores = model.similarity(queries, docs)",
            "```",
            "",
        ]
    lines += [
        "With jfe:",
        "",
        "```python",
        "from jfe import Embedder",
        "",
        'model = Embedder.from_pretrained("REPO_ID")',
        f'queries = model.{"encode_multi" if config.embedding == "multi" else "encode"}(["a handwritten seven"], '
        'instruction="Retrieve an image of the digit described.")',
        "```",
        "",
    ]
    if config.embedding != "single":
        lines += _late_interaction_section(config, example_prompt)
    if prompts:
        lines += [
            "## Query instructions (sentence-transformers prompts)",
            "",
            "| prompt name | instruction |",
            "|---|---|",
        ]
        lines += [f"| {name} | {text} |" for name, text in prompts.items()]
        lines.append("")
    if stages:
        lines += ["## Training", ""]
        lines += [_stage_section(i + 1, s) for i, s in enumerate(stages)]
    if evaluation:
        scored = "token vectors, MeanMaxSim" if evaluation.vectors == "multi" else "single vectors"
        lines += [f"## Evaluation ({evaluation.split} split, {evaluation.pool} pool, {scored})", ""]
        if evaluation.instructions:
            how = evaluation.instructions
            lines += [
                f"Query instructions: policy `{how.get('policy')}` (seed {how.get('seed')}); UniIR's text format "
                f"{'on' if how.get('uniir_format') else 'off'}. Recall@k is UniIR's hit rate, per (dataset, task).",
                "",
            ]
        lines += [to_markdown(evaluation.metrics), ""]
        if evaluation.probe:
            probe = evaluation.probe
            lines += [
                f"### Modality probe: {probe['ablate']} removed from image+text queries",
                "",
                "A fusion task whose score barely changes without one modality means the model ignores it.",
                "",
                to_markdown(probe["tasks"]),
                "",
            ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    return str(card)


def write_model_card(folder: str | os.PathLike, license: str = "apache-2.0") -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(folder, license))
    return path
