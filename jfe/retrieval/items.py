"""What ``jfe encode`` / ``search`` / ``eval`` embed: items read from a candidate pool, an M-BEIR query
file or a pair file, with their text prepared as UniIR prepares M-BEIR's (:class:`TextStyle`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from jfe.data.instructions import Instructions
from jfe.data.jsonl import DataFormatError, json_lines
from jfe.data.mbeir import CandidatePool, Query, Record, gc_paused, load_queries
from jfe.data.pairs import load_pairs
from jfe.data.uniir import format_query, format_string


@dataclass(frozen=True)
class EncodeItem:
    id: str
    text: str | None
    image: str | None  # a path; opened in DataLoader workers
    instruction: str | None = None


def _first_record(path: Path) -> dict:
    for _, record in json_lines(path):
        return record if isinstance(record, dict) else {}
    raise DataFormatError(f"{path}: no records")


@dataclass(frozen=True)
class TextStyle:
    """How M-BEIR query and candidate texts are prepared, as UniIR prepares them by default.

    ``instruction_policy``: which prompt a query gets (:data:`jfe.data.instructions.POLICIES`;
    ``all`` needs ``prompt_index``). ``uniir_format``: UniIR's ``format_string`` on candidate texts
    and on the joined prompt and query text (:func:`jfe.data.uniir.format_query`); pair-format data
    is never reformatted."""

    instruction_policy: str = "uniir"
    seed: int = 0
    uniir_format: bool = True
    prompt_index: int = 0


# UniIR's way, the default of every command
UNIIR_STYLE = TextStyle()


def candidate_items(records: Iterable[Record], style: TextStyle = UNIIR_STYLE) -> list[EncodeItem]:
    """Pool records as items, their text formatted as ``style`` says (no instruction)."""
    fmt = style.uniir_format
    return [EncodeItem(r.id, (format_string(r.text) or None) if fmt else r.text, r.image) for r in records]


class PoolItems(Sequence[EncodeItem]):
    """A candidate pool's items, converted from Arrow only for the rows asked for: a slice converts
    its rows column-wise, so a launcher's rank reads just its own shards' rows."""

    def __init__(self, pool: CandidatePool, style: TextStyle = UNIIR_STYLE):
        self.pool, self.style = pool, style

    def __len__(self) -> int:
        return len(self.pool)

    def __iter__(self) -> Iterator[EncodeItem]:
        return iter(self[:])  # one column-wise read, not one per row

    def __getitem__(self, index):
        if isinstance(index, slice):
            rows = range(len(self))[index]
            if rows.step != 1:
                return [self[i] for i in rows]
            with gc_paused():
                return candidate_items(self.pool.records(rows), self.style)
        row = range(len(self))[index]  # IndexError past the end, as a list
        return self[row : row + 1][0]


def query_items(
    queries: Iterable[Query], instructions: Instructions | None, style: TextStyle = UNIIR_STYLE
) -> list[EncodeItem]:
    """M-BEIR queries as items: the prompt ``style`` picks (none without ``instructions``) and the text,
    joined as UniIR joins them when ``style.uniir_format`` is on."""
    items = []
    for q in queries:
        prompt = None
        if instructions is not None:
            prompt = instructions.for_query(q, style.instruction_policy, style.seed, style.prompt_index)
        instruction, text = format_query(prompt, q.text) if style.uniir_format else (prompt, q.text)
        items.append(EncodeItem(q.id, text, q.image, instruction))
    return items


def read_items(
    path: str | os.PathLike,
    images_root: str | os.PathLike | None = None,
    instruction_file: str | None = None,
    style: TextStyle = UNIIR_STYLE,
) -> Sequence[EncodeItem]:
    """Items of an M-BEIR candidate pool (``did``; :class:`PoolItems`, read as sliced), M-BEIR query
    file (``qid``, with an instruction of the TSV chosen by ``style``) or pair-format file (the
    queries, with their own instructions)."""
    path = Path(path)
    first = _first_record(path)
    if "did" in first:
        return PoolItems(CandidatePool.load(path, images_root), style)
    if "qid" in first:
        table = Instructions.load(instruction_file) if instruction_file else None
        return query_items(load_queries(path, images_root), table, style)
    if "query" in first:
        queries, _ = load_pairs(path, images_root)
        return [EncodeItem(q.id, q.text, q.image, q.instruction) for q in queries]
    raise DataFormatError(f"{path}:1: not an M-BEIR pool (did), M-BEIR query file (qid) or pair file (query)")


def add_text_style_arguments(parser: argparse.ArgumentParser, policies: Sequence[str] = ("uniir", "first")) -> None:
    """The command-line options of :class:`TextStyle` (shared by encode, search and eval)."""
    parser.add_argument(
        "--instruction-policy",
        choices=list(policies),
        default="uniir",
        help="uniir: a prompt drawn per query from --seed and the qid (UniIR draws one at random); first: prompt 1",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the uniir instruction draw")
    parser.add_argument(
        "--uniir-format",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="UniIR's format_string on M-BEIR texts (capitalised, final period); --no-uniir-format keeps them raw",
    )


def text_style(args: argparse.Namespace) -> TextStyle:
    return TextStyle(args.instruction_policy, args.seed, args.uniir_format)
