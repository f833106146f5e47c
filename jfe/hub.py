"""Model cards written from the training run, and ``jfe push`` to the Hugging Face Hub.

    jfe push --model DIR --repo-id ORG/NAME [--private] [--revision R] [--create-pr] [--dry-run]

The token comes from the usual places (``HF_TOKEN``, ``huggingface-cli login``) and is never
printed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

REQUIRED_FILES = ("config.json", "modules.json", "sentence_bert_config.json", "jfe_config.json", "README.md")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _stages(folder: Path) -> list[dict[str, Any]]:
    """The training summaries along the chain of base models, oldest first (stage 1, stage 2)."""
    stages = []
    seen = set()
    current: Path | None = folder
    while current is not None and current not in seen:
        seen.add(current)
        summary = _read(current / "jfe_train.json")
        if summary is None:
            break
        stages.append(summary)
        base = summary.get("base_model")
        current = Path(base) if base and Path(base).is_dir() else None
    return stages[::-1]


def _root_base(stages: list[dict[str, Any]], folder: Path) -> str | None:
    if stages:
        return stages[0].get("base_model")
    config = _read(folder / "jfe_config.json") or {}
    return config.get("base_model")


def _table(rows: dict[str, dict[str, float]]) -> str:
    from jfe.retrieval.metrics import to_markdown

    return to_markdown(rows)


def _stage_section(index: int, summary: dict[str, Any]) -> str:
    c = summary["config"]
    name = {"adapt": "post-training adaptation", "instruct": "instruction tuning"}.get(c["stage"], c["stage"])
    data = (
        f"M-BEIR layout at `{c['mbeir_root']}` ({', '.join(c['datasets']) or 'all datasets'}, split {c['split']}, "
        f"{c['pool']} pool), instructions {'on' if c['use_instructions'] else 'off'}"
        if c["data_format"] == "mbeir"
        else f"pair files {', '.join(c['pairs_files'])}"
    )
    trains = {
        "lora": f"LoRA r={c['lora_r']}, alpha={c['lora_alpha']}, dropout={c['lora_dropout']} on `{c['lora_target']}`",
        "full": "the full LLM" + (" and the vision tower" if c["train_vision"] else ""),
        "none": "nothing (temperature only)",
    }[c["trainable"]]
    if c.get("quantization"):
        trains += f", {c['quantization']} 4-bit base (QLoRA)"
    losses = [e["loss"] for e in summary.get("loss_history", [])]
    loss = f"{losses[0]:.4f} → {losses[-1]:.4f}" if losses else "n/a"
    world = summary.get("world_size", 1)
    batch = c["per_device_batch_size"] * world
    return "\n".join(
        [
            f"### Stage {index}: {name}",
            "",
            f"- Started from: `{summary.get('base_model')}`",
            f"- Data: {data}; {c['num_negatives']} hard negative(s) per query",
            f"- Trained: {trains}",
            f"- Loss: InfoNCE, temperature {c['temperature']}{' (learned)' if c['learn_temperature'] else ''}, "
            f"global batch {batch} ({c['per_device_batch_size']} x {world} rank(s)), "
            f"GradCache chunk {c['gradcache_chunk_size'] or 'off'}",
            f"- Optimiser: AdamW, learning rate {c['learning_rate']}, {c['lr_scheduler_type']} schedule, "
            f"{summary.get('global_steps', c['max_steps'])} steps, dtype {c['dtype']}",
            f"- MiMIC: caption dropout {c['caption_dropout']}, modality mix-in {c['modality_mixin']}",
            f"- Hardware: {summary.get('hardware', 'unknown')}; DeepSpeed config: {c['deepspeed'] or 'none'}",
            f"- Training loss (first → last logged): {loss}",
            "",
        ]
    )


def render_model_card(folder: str | os.PathLike, license: str = "apache-2.0") -> str:
    """The README.md text of an exported folder, from its run summaries, configs and eval JSON."""
    folder = Path(folder)
    stages = _stages(folder)
    jfe_config = _read(folder / "jfe_config.json") or {}
    prompts = jfe_config.get("prompts", {})
    evaluation = _read(folder / "jfe_eval.json")
    base = _root_base(stages, folder)
    data = ModelCardData(
        library_name="sentence-transformers",
        pipeline_tag="feature-extraction",
        license=license,
        tags=["jfe", "sentence-transformers", "feature-extraction", "multimodal-retrieval", "early-fusion", "qwen2-vl"],
        base_model=base if base and not Path(base).exists() else None,
    )
    example_prompt = next(iter(prompts), None)
    lines = [
        "# One-tower early-fusion multimodal embedding model",
        "",
        "Image and text go into one sequence of a vision-language model; the final hidden state of the last "
        "token, L2-normalised, is the embedding. Queries carry a task instruction; candidates do not. "
        "Trained with [jfe](https://pypi.org/project/jfe/).",
        "",
        f"- Base model: `{base}`",
        f"- Embedding dimension: {(_read(folder / '1_Pooling' / 'config.json') or {}).get('embedding_dimension')}",
        "- Pooling: last token; similarity: cosine",
        "",
        "## Usage",
        "",
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
            else 'queries = model.encode(["a handwritten seven"], prompt="Retrieve an image of the digit described.")'
        ),
        "scores = model.similarity(queries, docs)",
        "```",
        "",
        "With jfe:",
        "",
        "```python",
        "from jfe import Embedder",
        "",
        'model = Embedder.from_pretrained("REPO_ID")',
        'queries = model.encode(["a handwritten seven"], instruction="Retrieve an image of the digit described.")',
        "```",
        "",
    ]
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
        lines += [f"## Evaluation ({evaluation.get('split', '?')} split, {evaluation.get('pool', '?')} pool)", ""]
        lines += [_table(evaluation["metrics"]), ""]
        if evaluation.get("probe"):
            probe = evaluation["probe"]
            lines += [
                f"### Modality probe: {probe['ablate']} removed from image+text queries",
                "",
                "A fusion task whose score barely changes without one modality means the model ignores it.",
                "",
                _table(probe["tasks"]),
                "",
            ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    return str(card)


def write_model_card(folder: str | os.PathLike, license: str = "apache-2.0") -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(folder, license))
    return path


def push(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    api: HfApi | None = None,
) -> dict[str, Any]:
    """Create the repo (if needed) and upload ``folder``; with ``dry_run`` only describe it."""
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not an exported jfe model (missing {', '.join(missing)}); run jfe export")
    if "/" not in repo_id:
        raise ValueError(f"repo id {repo_id!r} must look like ORG/NAME")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    plan = {
        "repo_id": repo_id,
        "private": private,
        "revision": revision,
        "create_pr": create_pr,
        "files": files,
        "bytes": sum((folder / f).stat().st_size for f in files),
    }
    if dry_run:
        return plan
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise RuntimeError("HF_HUB_OFFLINE=1 is set: unset it to upload (or use --dry-run)")
    api = api or HfApi()
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
        commit_message="Upload jfe embedding model",
    )
    plan["commit"] = str(getattr(commit, "commit_url", commit))
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe push", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="an exported folder (jfe export)")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", help="branch to upload to (created if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--dry-run", action="store_true", help="print what would be uploaded; contact nobody")
    args = parser.parse_args(argv)
    plan = push(args.model, args.repo_id, args.private, args.revision, args.create_pr, args.dry_run)
    verb = "would upload" if args.dry_run else "uploaded"
    print(
        f"{verb} {len(plan['files'])} files ({plan['bytes'] / 1e6:.1f} MB) to {args.repo_id}"
        f"{' (private)' if args.private else ''}{f' @ {args.revision}' if args.revision else ''}"
        f"{' as a pull request' if args.create_pr else ''}"
    )
    for name in plan["files"]:
        print(f"  {name}")
    if "commit" in plan:
        print(plan["commit"])
    return 0
