"""``jfe push``: upload an exported folder (see ``jfe export``) to the Hugging Face Hub.

    jfe push --model DIR --repo-id ORG/NAME [--private] [--revision R] [--create-pr] [--dry-run]

The token comes from the usual places (``HF_TOKEN``, ``huggingface-cli login``) and is never
printed.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from jfe.artifacts import EMBEDDER_CONFIG

REQUIRED_FILES = ("config.json", "modules.json", "sentence_bert_config.json", EMBEDDER_CONFIG, "README.md")

# Everything `jfe export` writes, and nothing else: the weights, the configs transformers,
# sentence-transformers and jfe read, the tokenizer and processor files, the card, and the
# sentence-transformers module folders. Whatever else lies in the folder (a token, an .env, a
# checkpoint, notes) stays home unless --include names it.
UPLOADED_FILES = (
    "README.md",
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "jfe_*.json",
    "[0-9]_*/config.json",
    "multi_vector_head/*.json",
    "multi_vector_head/*.safetensors",
    "multi_vector/*",
    "multi_vector/[0-9]_*/config.json",
    "multi_vector/multi_vector_head/*.json",
    "multi_vector/multi_vector_head/*.safetensors",
)


def upload_list(folder: Path, include: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(files to upload, files left out) under ``folder``: those :data:`UPLOADED_FILES` or
    ``include`` match by their path relative to ``folder``; hidden files are never uploaded."""
    chosen, left = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        hidden = any(part.startswith(".") for part in rel.split("/"))
        patterns = (*UPLOADED_FILES, *include)
        # fnmatch's * crosses "/": match the folder depth as well, so "*.safetensors" stays top level
        fits = any(fnmatch.fnmatchcase(rel, p) and rel.count("/") == p.count("/") for p in patterns)
        (chosen if fits and not hidden else left).append(rel)
    return chosen, left


def push(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    api: HfApi | None = None,
    include: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Create the repo (if needed) and upload what ``jfe export`` wrote to ``folder`` (and what
    ``include`` adds); with ``dry_run`` only describe it. The plan lists what was left out."""
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not an exported jfe model (missing {', '.join(missing)}); run jfe export")
    if "/" not in repo_id:
        raise ValueError(f"repo id {repo_id!r} must look like ORG/NAME")
    files, left_out = upload_list(folder, tuple(include))
    plan = {
        "repo_id": repo_id,
        "private": private,
        "revision": revision,
        "create_pr": create_pr,
        "files": files,
        "left_out": left_out,
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
        allow_patterns=files,  # exact paths: only the files listed in the plan
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
    parser.add_argument(
        "--include",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="also upload files matching these patterns (relative paths, e.g. 'checkpoint-500/*'); "
        "by default only what jfe export writes is uploaded",
    )
    args = parser.parse_args(argv)
    plan = push(
        args.model, args.repo_id, args.private, args.revision, args.create_pr, args.dry_run, include=tuple(args.include)
    )
    verb = "would upload" if args.dry_run else "uploaded"
    print(
        f"{verb} {len(plan['files'])} files ({plan['bytes'] / 1e6:.1f} MB) to {args.repo_id}"
        f"{' (private)' if args.private else ''}{f' @ {args.revision}' if args.revision else ''}"
        f"{' as a pull request' if args.create_pr else ''}"
    )
    for name in plan["files"]:
        print(f"  {name}")
    if plan["left_out"]:
        print(f"left out ({len(plan['left_out'])}, not written by jfe export; --include adds them):")
        for name in plan["left_out"]:
            print(f"  {name}")
    if "commit" in plan:
        print(plan["commit"])
    return 0
