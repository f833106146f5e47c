"""The ``jfe`` command: thin drivers over the library, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

# Each entry: (name, help, module path). Modules are imported only for the subcommand that runs,
# so `jfe --help` stays fast and a GPU-only dependency never breaks an unrelated command.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "run the built-in CPU demo end to end", "jfe.demo:main"),
    ("reproduce", "the seeds' claims on the digits benchmark: fusion, stages, MiMIC, collapse", "jfe.reproduce:main"),
    ("train", "train stage 1 or 2 from a YAML recipe", "jfe.train.__main__:main"),
    ("encode", "embed a pool or query file into resumable shards", "jfe.retrieval.encode:main"),
    ("index", "build a FAISS index from embedding shards", "jfe.retrieval.commands:index_main"),
    ("search", "embed queries, search an index, write a TREC run", "jfe.retrieval.commands:search_main"),
    ("eval", "M-BEIR metrics from a run, or end to end, with the modality probe", "jfe.retrieval.evaluate:main"),
    ("mine", "hard negatives from a search run", "jfe.retrieval.commands:mine_main"),
    ("export", "merge a run into a self-contained model folder with its model card", "jfe.export:main"),
    ("push", "upload an exported folder to the Hugging Face Hub", "jfe.hub:main"),
    ("data", "build training data (MIRe's response-to-passage)", "jfe.data.commands:main"),
]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="jfe", description="one-tower early-fusion multimodal embeddings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, _ in COMMANDS:
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    modules = {n: m for n, _, m in COMMANDS}
    if name not in modules:
        parser.error(f"unknown command {name!r}; choose one of {', '.join(modules)}")
    import importlib

    module, function = modules[name].split(":")
    command: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
    return command(rest) or 0


def one_line(err: BaseException) -> str:
    """The error as one line: its message (or its type when it has none), newlines folded."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, KeyError) and len(err.args) == 1:  # str(KeyError) quotes its message
        text = " ".join(str(err.args[0]).split())
    return text


def run(argv: Sequence[str] | None = None) -> int:
    """The ``jfe`` console command: :func:`main`, with any failure printed as one line,
    ``jfe <command>: error: <what, where>``, and exit status 1. ``--debug`` anywhere on the command
    line (or ``JFE_DEBUG=1``) lets the exception and its traceback through instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("JFE_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:
        if debug:
            raise
        command = argv[0] if argv else ""
        print(f"jfe {command}: error: {one_line(err)} (--debug shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
