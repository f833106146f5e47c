"""``jfe push``: upload an exported folder (see ``jfe export``) to the Hugging Face Hub.

    jfe push --model DIR --repo-id ORG/NAME [--private] [--revision R] [--create-pr] [--dry-run]

The token comes from the usual places (``HF_TOKEN``, ``huggingface-cli login``) and is never
printed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from jfe.artifacts import EMBEDDER_CONFIG

REQUIRED_FILES = ("config.json", "modules.json", "sentence_bert_config.json", EMBEDDER_CONFIG, "README.md")


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
