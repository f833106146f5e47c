"""The command-line flags of every command that loads a model to embed (encode, search, eval)."""

from __future__ import annotations

import argparse
from typing import Any

from jfe.embedder import CHAT_TEMPLATES


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--min-pixels`` / ``--max-pixels`` (the image-token budget) and ``--chat-template``."""
    parser.add_argument("--min-pixels", type=int, help="smallest image size in pixels (default: the model's)")
    parser.add_argument(
        "--max-pixels",
        type=int,
        help="largest image size in pixels: bounds its visual tokens (default: the model's)",
    )
    parser.add_argument(
        "--chat-template",
        choices=CHAT_TEMPLATES,
        help="jfe: jfe's embedding prompt; checkpoint: the one the checkpoint ships (GME, Qwen3-VL-Embedding), "
        "with the assistant turn opened (default: what the model was saved with, else jfe)",
    )


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``Embedder.from_pretrained`` keyword arguments from those flags."""
    return {"min_pixels": args.min_pixels, "max_pixels": args.max_pixels, "chat_template": args.chat_template}
