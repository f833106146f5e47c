"""M-BEIR query instructions: one set of prompts per (dataset, query modality, candidate modality).

The TSV is read as UniIR reads it: lines split on tabs (no CSV quoting), the header skipped, columns
by position: query modality, candidate modality, dataset name, dataset id, then the prompts.

Training draws one of the prompts at random. Evaluation follows a policy (:data:`POLICIES`):
``uniir`` draws one per query as UniIR does, but from a seed and the qid, so every command and
every rerun picks the same one (UniIR's own draw, from Python's global ``random`` in DataLoader
workers, cannot be matched draw for draw); ``first`` always takes the first; ``all`` scores each
prompt in turn. Candidates never get an instruction.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

from jfe.data.jsonl import DataFormatError
from jfe.data.mbeir import Query, dataset_id_of

logger = logging.getLogger(__name__)

COLUMNS = ("query_modality", "cand_modality", "dataset_name", "dataset_id")
POLICIES = ("uniir", "first", "all")


class Instructions:
    def __init__(
        self,
        prompts: dict[tuple[str, str, str], list[str]],
        path: Path | None = None,
        names: dict[str, str] | None = None,
    ):
        self.prompts = prompts
        self.path = path
        self.names = names or {}  # dataset id -> dataset name

    @classmethod
    def load(cls, path: str | os.PathLike) -> Instructions:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"instruction file not found: {path}")
        prompts: dict[tuple[str, str, str], list[str]] = {}
        names: dict[str, str] = {}
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or len(lines[0].split("\t")) < 5:
            raise DataFormatError(
                f"{path}:1: expected a tab-separated header of at least 5 columns ({', '.join(COLUMNS)}, prompts)"
            )
        header = tuple(h.strip() for h in lines[0].split("\t")[:4])
        if header != COLUMNS:
            # UniIR reads by position too, so a renamed header still reads; say so, it may be another layout
            logger.warning("%s:1: header %s differs from %s; reading the columns by position", path, header, COLUMNS)
        for lineno, line in enumerate(lines[1:], start=2):
            row = line.rstrip("\r\n").split("\t")
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < 5 or not any(c.strip() for c in row[4:]):
                raise DataFormatError(f"{path}:{lineno}: expected at least one prompt after the 4 key columns")
            query_mod, cand_mod, name, dataset_id = (c.strip() for c in row[:4])
            prompts[(dataset_id, query_mod, cand_mod)] = [c.strip() for c in row[4:] if c.strip()]
            if names.setdefault(dataset_id, name) != name:
                raise DataFormatError(
                    f"{path}:{lineno}: dataset id {dataset_id} is {name!r} here but {names[dataset_id]!r}"
                )
        return cls(prompts, path, names)

    def candidates(self, query: Query, cand_modality: str | None = None) -> list[str]:
        """All prompts that fit this query; the candidate modality defaults to the task's."""
        cand_modality = cand_modality or query.cand_modality
        key = (query.dataset_id, query.modality, cand_modality or "")
        if key not in self.prompts:
            raise KeyError(
                f"no instruction for dataset id {key[0]}, query modality {key[1]!r}, candidate modality "
                f"{key[2]!r} (query {query.id}) in {self.path or 'the instruction table'}"
            )
        return self.prompts[key]

    def for_query(self, query: Query, policy: str = "uniir", seed: int = 0, index: int = 0) -> str:
        """The evaluation prompt of ``query`` under ``policy``; for ``all``, the ``index``-th prompt."""
        prompts = self.candidates(query)
        if policy == "uniir":
            return random.Random(f"{seed}/instruction/{query.id}").choice(prompts)
        if policy == "first":
            return prompts[0]
        if policy == "all":
            return prompts[index % len(prompts)]
        raise ValueError(f"instruction policy {policy!r} is not one of {', '.join(POLICIES)}")

    def count(self, query: Query) -> int:
        """How many prompts ``query`` has (what policy ``all`` iterates over)."""
        return len(self.candidates(query))

    def for_eval(self, query: Query, cand_modality: str | None = None) -> str:
        """The first prompt (policy ``first``)."""
        return self.candidates(query, cand_modality)[0]

    def for_train(self, query: Query, rng: random.Random, cand_modality: str | None = None) -> str:
        return rng.choice(self.candidates(query, cand_modality))


def uniir_cand_modality(query: Query, modality_of: dict[str, str]) -> str | None:
    """The candidate modality UniIR keys the instruction by at evaluation: that of a positive from
    the query's own dataset (OVEN and InfoSeek queries also list positives of the other one).
    jfe takes it from the task id instead; the two agree on M-BEIR (tested)."""
    own = [d for d in query.positives if dataset_id_of(d) == query.dataset_id and d in modality_of]
    return modality_of[own[0]] if own else None
