"""M-BEIR (UniIR) files, read exactly as published.

Layout under a root folder::

    query/{split}/mbeir_{name}_{split}.jsonl                qid, query_txt, query_img_path, query_modality,
                                                            query_src_content, pos_cand_list, neg_cand_list, task_id
    cand_pool/local/mbeir_{name}_{split}_cand_pool.jsonl    did, txt, img_path, modality, src_content
    cand_pool/global/mbeir_union_{split}_cand_pool.jsonl    the union pool
    qrels/{split}/mbeir_{name}_{split}_qrels.txt            qid 0 did relevance task_id
    instructions/query_instructions.tsv

Image paths are relative to one images root (by default the M-BEIR root). ``query_txt`` and
``query_img_path`` are often null; that is normal.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import datasets

from jfe.data.jsonl import DataFormatError, line_of_row, load_jsonl

QUERY_KEYS = ("qid", "query_txt", "query_img_path", "query_modality", "pos_cand_list", "neg_cand_list", "task_id")
CAND_KEYS = ("did", "txt", "img_path", "modality")

# UniIR task ids -> (query modality, candidate modality).
TASK_MODALITIES: dict[int, tuple[str, str]] = {
    0: ("text", "image"),
    1: ("text", "text"),
    2: ("text", "image,text"),
    3: ("image", "text"),
    4: ("image", "image"),
    5: ("image", "image,text"),
    6: ("image,text", "text"),
    7: ("image,text", "image"),
    8: ("image,text", "image,text"),
}


def dataset_id_of(identifier: str) -> str:
    """The dataset part of an M-BEIR id: ``"9:123"`` -> ``"9"`` (qids and dids alike)."""
    return identifier.split(":", 1)[0]


@dataclass(frozen=True)
class Record:
    """A query or candidate before any image is opened. ``image`` is an absolute path or None."""

    id: str
    text: str | None
    image: str | None
    modality: str


@dataclass(frozen=True)
class Query(Record):
    positives: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    task_id: int | None = None
    dataset: str = ""
    instruction: str | None = None  # set by formats that carry their own (pairs); M-BEIR uses the TSV

    @property
    def dataset_id(self) -> str:
        return dataset_id_of(self.id)

    @property
    def cand_modality(self) -> str | None:
        return TASK_MODALITIES.get(self.task_id, (None, None))[1] if self.task_id is not None else None


def _resolve(images_root: Path | None, rel: str | None) -> str | None:
    if not rel:
        return None
    return os.fspath(images_root / rel) if images_root is not None else rel


class CandidatePool:
    """A candidate pool (local or global) with did lookup. Backed by Arrow, so rows stay on disk."""

    def __init__(self, table: datasets.Dataset, path: Path, images_root: Path | None):
        self.table = table
        self.path = path
        self.images_root = images_root
        dids = table["did"]
        self._row = {did: i for i, did in enumerate(dids)}
        if len(self._row) != len(dids):
            dup = next(d for d, n in Counter(dids).items() if n > 1)
            second = dids.index(dup, dids.index(dup) + 1)
            raise DataFormatError(f"{path}:{line_of_row(path, second)}: duplicate did {dup!r}")

    @classmethod
    def load(cls, path: str | os.PathLike, images_root: str | os.PathLike | None = None) -> CandidatePool:
        path = Path(path)
        return cls(load_jsonl(path, CAND_KEYS), path, Path(images_root) if images_root else None)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, did: str) -> bool:
        return did in self._row

    def __getitem__(self, did: str) -> Record:
        try:
            row = self.table[self._row[did]]
        except KeyError:
            raise KeyError(f"did {did!r} is not in the candidate pool {self.path}") from None
        return Record(did, row["txt"] or None, _resolve(self.images_root, row["img_path"]), row["modality"])

    def records(self) -> list[Record]:
        return [self[did] for did in self._row]

    def dids_by_dataset(self) -> dict[str, list[str]]:
        """Candidates grouped by the dataset id prefix of their did (``"9:123"`` -> ``"9"``)."""
        groups: dict[str, list[str]] = defaultdict(list)
        for did in self._row:
            groups[dataset_id_of(did)].append(did)
        return dict(groups)


def load_queries(
    path: str | os.PathLike, images_root: str | os.PathLike | None = None, dataset: str | None = None
) -> list[Query]:
    """All queries of one M-BEIR query file. ``dataset`` defaults to the name in the file name."""
    path = Path(path)
    table = load_jsonl(path, QUERY_KEYS)
    root = Path(images_root) if images_root else None
    name = dataset or dataset_name_from_path(path)
    queries = []
    seen: set[str] = set()
    for i, row in enumerate(table):
        qid = row["qid"]
        if not qid or qid in seen:
            raise DataFormatError(f"{path}:{line_of_row(path, i)}: {'duplicate' if qid else 'empty'} qid {qid!r}")
        seen.add(qid)
        # the loader turns an absent key into null; these must be present (lists possibly empty)
        absent = [key for key in ("pos_cand_list", "neg_cand_list", "query_modality") if row[key] is None]
        if absent:
            raise DataFormatError(f"{path}:{line_of_row(path, i)}: missing key(s) {absent}")
        if not row["query_txt"] and not row["query_img_path"]:
            raise DataFormatError(f"{path}:{line_of_row(path, i)}: query {qid} has neither text nor image")
        queries.append(
            Query(
                id=qid,
                text=row["query_txt"] or None,
                image=_resolve(root, row["query_img_path"]),
                modality=row["query_modality"],
                positives=tuple(row["pos_cand_list"] or ()),
                negatives=tuple(row["neg_cand_list"] or ()),
                task_id=row["task_id"],
                dataset=name,
            )
        )
    return queries


def dataset_name_from_path(path: Path) -> str:
    """``mbeir_digits_t2i_test.jsonl`` -> ``digits_t2i``; other names -> the file stem."""
    stem = path.name.removesuffix(".jsonl")
    if stem.startswith("mbeir_"):
        stem = stem[len("mbeir_") :]
        for split in ("_train", "_val", "_test"):
            if stem.endswith(split):
                return stem[: -len(split)]
    return stem


@dataclass
class MBeirLayout:
    """Paths inside an M-BEIR root folder."""

    root: Path

    def query_file(self, name: str, split: str) -> Path:
        return self.root / "query" / split / f"mbeir_{name}_{split}.jsonl"

    def local_pool_file(self, name: str, split: str) -> Path:
        with_split = self.root / "cand_pool" / "local" / f"mbeir_{name}_{split}_cand_pool.jsonl"
        plain = self.root / "cand_pool" / "local" / f"mbeir_{name}_cand_pool.jsonl"
        return with_split if with_split.is_file() or not plain.is_file() else plain

    def global_pool_file(self, split: str) -> Path:
        return self.root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl"

    def qrels_file(self, name: str, split: str) -> Path:
        return self.root / "qrels" / split / f"mbeir_{name}_{split}_qrels.txt"

    @property
    def instructions_file(self) -> Path:
        return self.root / "instructions" / "query_instructions.tsv"

    def datasets(self, split: str) -> list[str]:
        """Dataset names that have a query file for ``split``, sorted."""
        folder = self.root / "query" / split
        if not folder.is_dir():
            raise FileNotFoundError(f"no query folder for split {split!r}: {folder}")
        return sorted(dataset_name_from_path(p) for p in folder.glob(f"mbeir_*_{split}.jsonl"))
