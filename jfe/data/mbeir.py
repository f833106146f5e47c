"""M-BEIR (UniIR) files, read exactly as published.

Layout under a root folder::

    query/{split}/mbeir_{name}_{split}.jsonl                qid, query_txt, query_img_path, query_modality,
                                                            query_src_content, pos_cand_list, neg_cand_list, task_id
    cand_pool/local/mbeir_{name}_{split}_cand_pool.jsonl    did, txt, img_path, modality, src_content
    cand_pool/global/mbeir_union_{split}_cand_pool.jsonl    the union pool
    qrels/{split}/mbeir_{name}_{split}_qrels.txt            qid 0 did relevance task_id
    instructions/query_instructions.tsv

Image paths are relative to one images root (by default the M-BEIR root). ``query_txt`` and
``query_img_path`` are often null; that is normal. UniIR's up-sampled union training file
(``query/union_train/mbeir_union_up_train.jsonl``) repeats qids on purpose: see ``allow_duplicate_ids``.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from jfe.data.jsonl import DataFormatError, line_of_row, load_jsonl, read_jsonl

# The fields jfe reads, with their types. They are fixed here rather than guessed from the first rows,
# so a field that is absent or null for the first million rows (UniIR's VisualNews rows, first in the
# union pools) reads the same as one set everywhere. Ids are strings, task_id an integer. Every other
# field is ignored, query_src_content and src_content included: jfe never reads them, and they are the
# largest columns of the pools.
QUERY_SCHEMA = pa.schema(
    [
        ("qid", pa.string()),
        ("query_txt", pa.string()),
        ("query_img_path", pa.string()),
        ("query_modality", pa.string()),
        ("pos_cand_list", pa.list_(pa.string())),
        ("neg_cand_list", pa.list_(pa.string())),
        ("task_id", pa.int64()),
    ]
)
CAND_SCHEMA = pa.schema(
    [("did", pa.string()), ("txt", pa.string()), ("img_path", pa.string()), ("modality", pa.string())]
)
# What every row must set (lists may be empty); the text and image fields may be null or absent.
QUERY_REQUIRED = ("qid", "query_modality", "pos_cand_list", "neg_cand_list", "task_id")
CAND_REQUIRED = ("did", "modality")

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


MODALITIES = ("text", "image", "image,text")
# Set to 1 to let an image path leave its images root ("../x.png", "/abs/x.png"); refused by default,
# so that a data file cannot make a job read, embed or upload arbitrary files.
OUTSIDE_ROOT_ENV = "JFE_ALLOW_IMAGES_OUTSIDE_ROOT"


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic collector off while millions of small objects are built: each generation-2 pass
    walks all of them again, which doubled the time to read a pool's records. Nothing built here
    forms cycles, so nothing is left for it to find."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def image_resolver(images_root: str | os.PathLike | None) -> Callable[..., str | None]:
    """``resolve(rel, where=None)``: ``rel`` under ``images_root``; a path that leaves the root is an
    error (``where()`` names the file and line) unless :data:`OUTSIDE_ROOT_ENV` allows it. The root
    is prepared once: a pool resolves millions of paths."""
    if images_root is None:
        return lambda rel, where=None: rel or None
    root = os.path.normpath(os.fspath(images_root))
    prefix = root.rstrip(os.sep) + os.sep
    allowed = os.environ.get(OUTSIDE_ROOT_ENV, "") not in ("", "0")

    def inside(joined: str) -> bool:
        if root == os.curdir:  # normpath drops "./": anything not climbing out is inside
            return not os.path.isabs(joined) and joined != os.pardir and not joined.startswith(os.pardir + os.sep)
        return joined == root or joined.startswith(prefix)

    def resolve(rel: str | None, where: Callable[[], str] | None = None) -> str | None:
        if not rel:
            return None
        joined = os.path.normpath(rel if rel.startswith(os.sep) else prefix + rel)  # as os.path.join
        if not allowed and not inside(joined):
            place = f"{where()}: " if where else ""
            raise DataFormatError(
                f"{place}image path {rel!r} leaves the images root {images_root}; set {OUTSIDE_ROOT_ENV}=1 to allow it"
            )
        return joined

    return resolve


def check_modality(value: object, field: str, where: Callable[[], str]) -> None:
    if value not in MODALITIES:
        allowed = ", ".join(repr(m) for m in MODALITIES)
        raise DataFormatError(f"{where()}: {field} {value!r} is not one of {allowed}")


class CandidatePool:
    """A candidate pool (local or global) with did lookup. Backed by Arrow, so rows stay on disk."""

    def __init__(self, table: datasets.Dataset, path: Path, images_root: Path | None):
        self.table = table
        self.path = path
        self.images_root = images_root
        self._resolve = image_resolver(images_root)
        dids = table.data.column("did").to_pylist()  # one Arrow call; row-wise access is slow on millions
        self._row = {did: i for i, did in enumerate(dids)}
        if len(self._row) != len(dids):
            dup = next(d for d, n in Counter(dids).items() if n > 1)
            second = dids.index(dup, dids.index(dup) + 1)
            raise DataFormatError(f"{path}:{line_of_row(path, second)}: duplicate did {dup!r}")
        if "" in self._row:
            raise DataFormatError(f"{path}:{line_of_row(path, self._row[''])}: empty did")
        if not dids:
            raise DataFormatError(f"{path}: the candidate pool is empty")
        self._check_rows(table, dids)

    def _check_rows(self, table: datasets.Dataset, dids: list[str]) -> None:
        """Every row names a known modality and holds a text or an image (column-wise: fast on millions)."""
        data = table.data
        modality = data.column("modality")
        bad = pc.invert(pc.fill_null(pc.is_in(modality, value_set=pa.array(MODALITIES)), False))
        if pc.any(bad).as_py():
            row = pc.index(bad, True).as_py()
            check_modality(modality[row].as_py(), f"did {dids[row]!r}: modality", self._where(row))
        if self.images_root is not None:
            # only a path that is absolute or holds ".." can leave the root: those few are resolved now,
            # so a pool that escapes fails when read, not when a rank reaches that row
            paths = pc.fill_null(data.column("img_path"), "")
            odd = pc.or_(pc.starts_with(paths, os.sep), pc.match_substring(paths, os.pardir))
            for row in pc.indices_nonzero(odd).to_pylist():
                self._resolve(paths[row].as_py(), self._where(row))
        empty = [pc.fill_null(pc.equal(pc.utf8_length(data.column(c)), 0), True) for c in ("txt", "img_path")]
        neither = pc.and_(*empty)
        if pc.any(neither).as_py():
            row = pc.index(neither, True).as_py()
            raise DataFormatError(f"{self._where(row)()}: candidate {dids[row]!r} has neither text nor an image")

    def _where(self, row: int) -> Callable[[], str]:
        return lambda: f"{self.path}:{line_of_row(self.path, row)}"

    @classmethod
    def load(cls, path: str | os.PathLike, images_root: str | os.PathLike | None = None) -> CandidatePool:
        path = Path(path)
        return cls(load_jsonl(path, CAND_SCHEMA, CAND_REQUIRED), path, Path(images_root) if images_root else None)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, did: str) -> bool:
        return did in self._row

    def __getitem__(self, did: str) -> Record:
        try:
            row = self.table[self._row[did]]
        except KeyError:
            raise KeyError(f"did {did!r} is not in the candidate pool {self.path}") from None
        image = self._resolve(row["img_path"], self._where(self._row[did]))
        return Record(did, row["txt"] or None, image, row["modality"])

    def records(self, rows: range | None = None) -> list[Record]:
        """The pool's records in file order, or those of ``rows`` only, read column by column: four
        Arrow conversions rather than one per row (row by row, M-BEIR's 5.6 M-row union pool took
        minutes)."""
        rows = range(len(self)) if rows is None else rows
        data = self.table.data.slice(rows.start, len(rows))
        dids, texts, images, modalities = (data.column(c).to_pylist() for c in ("did", "txt", "img_path", "modality"))
        resolve = self._resolve
        with gc_paused():
            return [
                Record(did, text or None, resolve(image, self._where(row)) if image else None, modality)
                for row, did, text, image, modality in zip(rows, dids, texts, images, modalities, strict=True)
            ]

    def dids_by_dataset(self) -> dict[str, list[str]]:
        """Candidates grouped by the dataset id prefix of their did (``"9:123"`` -> ``"9"``)."""
        groups: dict[str, list[str]] = defaultdict(list)
        for did in self._row:
            groups[dataset_id_of(did)].append(did)
        return dict(groups)


def load_queries(
    path: str | os.PathLike,
    images_root: str | os.PathLike | None = None,
    dataset: str | None = None,
    allow_duplicate_ids: bool = False,
) -> list[Query]:
    """All queries of one M-BEIR query file, in file order. ``dataset`` defaults to the name in the
    file name. A repeated qid is an error unless ``allow_duplicate_ids`` (UniIR's up-sampled training
    file repeats them by design); each repeat is then a query of its own, as UniIR keeps it a row."""
    path = Path(path)
    table = read_jsonl(path, QUERY_SCHEMA, QUERY_REQUIRED)
    # column by column: one Arrow conversion each, much faster than row dicts on a million queries
    fields = ("qid", "query_txt", "query_img_path", "query_modality", "pos_cand_list", "neg_cand_list", "task_id")
    columns = [table.column(key).to_pylist() for key in fields]
    resolve = image_resolver(images_root or None)
    name = dataset or dataset_name_from_path(path)
    queries = []
    seen: set[str] = set()
    for i, (qid, text, image, modality, positives, negatives, task_id) in enumerate(zip(*columns, strict=True)):
        if not qid or (qid in seen and not allow_duplicate_ids):
            raise DataFormatError(f"{path}:{line_of_row(path, i)}: {'duplicate' if qid else 'empty'} qid {qid!r}")
        seen.add(qid)

        def where(i: int = i) -> str:
            return f"{path}:{line_of_row(path, i)}"

        if not text and not image:
            raise DataFormatError(f"{where()}: query {qid} has neither text nor image")
        check_modality(modality, f"query {qid}: query_modality", where)
        if not all(positives):
            raise DataFormatError(
                f"{path}:{line_of_row(path, i)}: pos_cand_list of query {qid} holds a null or empty id"
            )
        queries.append(
            Query(
                id=qid,
                text=text or None,
                image=resolve(image, where),
                modality=modality,
                positives=tuple(positives),
                negatives=tuple(d for d in negatives if d),  # a null negative names nothing to draw
                task_id=task_id,
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
