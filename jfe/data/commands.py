"""``jfe data BUILDER ...``: builders of training data, one subcommand each. Each builder is a function
here adding its parser (the logic lives in its own module); a new one is one more entry in ``BUILDERS``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import sys
from collections.abc import Callable


def response_to_passage_parser(sub: argparse._SubParsersAction) -> None:
    from jfe.data import response_to_passage as r2p

    parser = sub.add_parser(
        "response-to-passage",
        help="VQA records -> pairs whose positive is a passage a generator writes (MIRe)",
        description=r2p.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default = r2p.PassageOptions()
    parser.add_argument("--input", required=True, help="JSONL of VQA records (id, image, question, answer)")
    parser.add_argument("--generator", required=True, help="local image-text-to-text checkpoint folder")
    parser.add_argument("--out", required=True, help="pair-format JSONL to write")
    parser.add_argument("--images-root", help="folder the records' image paths are relative to (default: the input's)")
    notes = {
        "id": "a string or an integer",
        "image": "a path",
        "question": "a string",
        "answer": "a string; used when present",
        "answers": "else: a VQAv2-style list, of which the most common answer (a tie: the first listed)",
    }
    for name, note in notes.items():
        value = getattr(default, f"{name}_field")
        parser.add_argument(
            f"--{name}-field", default=value, help=f"the records' {name} field, {note} (default: {value})"
        )
    parser.add_argument(
        "--prompt", default=default.prompt, help="generator prompt with {question} and {answer} (default: MIRe-like)"
    )
    parser.add_argument("--instruction", default=default.instruction, help="query instruction ('' for none)")
    parser.add_argument("--task", help="task of every pair (default: the pair reader's, the output file's name)")
    parser.add_argument(
        "--with-image",
        action=argparse.BooleanOptionalAction,
        default=default.with_image,
        help="show the generator the image as well as the question and answer (as MIRe does; default: on)",
    )
    parser.add_argument("--batch-size", type=int, default=default.batch_size, help="records generated together")
    parser.add_argument(
        "--chunk-size", type=int, default=default.chunk_size, help="records per commit (what a rerun resumes after)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=default.max_new_tokens, help="passage length bound")
    parser.add_argument("--max-pixels", type=int, help="bound each image the generator sees (default: its processor's)")
    parser.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto", help="auto: bfloat16 on CUDA"
    )
    parser.add_argument("--device", help="torch device (default: CUDA when present, else CPU)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own code (off)")
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of failing")
    parser.add_argument("--overwrite", action="store_true", help="start over: drop progress, replace the output")
    parser.set_defaults(run=_response_to_passage)


def _response_to_passage(args: argparse.Namespace) -> int:
    from jfe.data import response_to_passage as r2p

    args.instruction = args.instruction or None
    options = r2p.PassageOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(r2p.PassageOptions)})
    load = functools.partial(
        r2p.Generator.load, args.generator, args.dtype, args.device, args.trust_remote_code, args.max_pixels
    )
    report = r2p.build_response_to_passage(args.input, args.out, load, options, overwrite=args.overwrite)
    resumed = f", resumed after {report.resumed_at} records" if report.resumed_at else ""
    print(f"wrote {report.rows} pairs to {args.out} ({report.skipped} bad records skipped{resumed})")
    return 0


BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = [response_to_passage_parser]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jfe data", description="build training data (pair-format JSONL)")
    sub = parser.add_subparsers(dest="builder", metavar="BUILDER", required=True)
    for add in BUILDERS:
        add(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        # data errors (DataFormatError is a ValueError) name the file, line and record: a traceback adds nothing
        print(f"jfe data {args.builder}: error: {err}", file=sys.stderr)
        return 1
