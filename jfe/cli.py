"""The ``jfe`` command: thin drivers over the library, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# Each entry: (name, help, module path). Modules are imported only for the subcommand that runs,
# so `jfe --help` stays fast and a GPU-only dependency never breaks an unrelated command.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "run the built-in CPU demo end to end", "jfe.demo"),
    ("train", "train stage 1 or 2 from a YAML recipe", "jfe.train.__main__"),
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

    command: Callable[[list[str]], int] = importlib.import_module(modules[name]).main
    return command(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
