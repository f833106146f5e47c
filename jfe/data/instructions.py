"""M-BEIR query instructions: one set of prompts per (dataset, query modality, candidate modality).

Training draws one of the prompts at random; evaluation always uses the first, as UniIR does.
Candidates never get an instruction.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

from jfe.data.jsonl import DataFormatError
from jfe.data.mbeir import Query

COLUMNS = ("query_modality", "cand_modality", "dataset_name", "dataset_id")


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
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header[:4]) != COLUMNS:
                raise DataFormatError(f"{path}:1: expected a tab-separated header starting with {', '.join(COLUMNS)}")
            for lineno, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) < 5:
                    raise DataFormatError(f"{path}:{lineno}: expected at least one prompt after the 4 key columns")
                query_mod, cand_mod, name, dataset_id = (c.strip() for c in row[:4])
                texts = [c.strip() for c in row[4:] if c.strip()]
                prompts[(dataset_id, query_mod, cand_mod)] = texts
                names[dataset_id] = name
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

    def for_eval(self, query: Query, cand_modality: str | None = None) -> str:
        return self.candidates(query, cand_modality)[0]

    def for_train(self, query: Query, rng: random.Random, cand_modality: str | None = None) -> str:
        return rng.choice(self.candidates(query, cand_modality))
