"""Writing the benchmark: M-BEIR files at the paths :class:`~jfe.data.mbeir.MBeirLayout` reads,
rendered images, a README, and the marker that :func:`ensure_digits_mbeir` checks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from jfe.atomic import atomic_dir
from jfe.benchmarks.digits.builders import build_splits
from jfe.benchmarks.digits.context import BuildContext, Dataset
from jfe.benchmarks.digits.source import render_digit, transform_digit
from jfe.benchmarks.digits.tasks import COLOURS, SHORTCUT_COLOURS, SPLITS, TASKS, TRANSFORMS
from jfe.data.instructions import COLUMNS
from jfe.data.mbeir import MBeirLayout

# Bump with the checksum in tests/benchmarks/test_digits.py whenever any file or pixel changes, so that
# ensure_digits_mbeir rebuilds caches made by an older builder.
FORMAT_VERSION = 2
BUILDER = "jfe.benchmarks.digits"


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _readme(splits: dict[str, list[Dataset]], seed: int, shortcut: float) -> str:
    lines = [
        "# Handwritten digits, M-BEIR layout",
        "",
        f"Built by `{BUILDER}.build_digits_mbeir` (format {FORMAT_VERSION}, seed {seed}) from scikit-learn's",
        "`load_digits`: 8x8 digits upscaled to 16x16 RGB PNGs, white ink on black. Writers are 43 contiguous",
        "blocks of the original sample order; writers 0-32 are train, 33-37 val, 38-42 test. Where both queries",
        "and candidates are images (i2i, it2i), a query's positives and negatives are by the other half of the",
        "split's writers: val and test queries come from the first half and their pool from the second; train",
        "asks both ways over one pool.",
        "",
        "| dataset | id | task | query -> candidate | meaning |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {t.name} | {t.dataset_id} | {t.task_id} | {t.query_modality} -> {t.cand_modality} | {t.description} |"
        for t in TASKS
    ]
    lines += ["", "| dataset | " + " | ".join(f"{s} queries | {s} pool" for s in SPLITS) + " |"]
    lines += ["|---|" + "---|---|" * len(SPLITS)]
    for i, task in enumerate(TASKS):
        counts = " | ".join(f"{len(splits[s][i].queries)} | {len(splits[s][i].pool)}" for s in SPLITS)
        lines.append(f"| {task.name} | {counts} |")
    lines += [
        "",
        "Vocabulary: digit names zero..nine; colours "
        + ", ".join(SHORTCUT_COLOURS if shortcut else COLOURS)
        + "; transforms "
        + ", ".join(TRANSFORMS),
        "(rotated = 180 degrees, mirrored = left-right flip, inverted = black ink on white).",
        "The train split of digits_t2i has one query per train image, that image listed first among the positives.",
        "",
    ]
    if shortcut:
        lines += [
            f"**Collapse-prone variant** (shortcut {shortcut}): in the train split of digits_it2t, digit d is",
            f"coloured {SHORTCUT_COLOURS[0]}, {SHORTCUT_COLOURS[1]}, ... (its own colour, the d-th of the list) with",
            f"probability {shortcut}, so the colour word alone usually names the caption; val and test draw every",
            "colour for every image, so there only the image tells the digit.",
            "",
        ]
    return "\n".join(lines)


def _marker(seed: int, shortcut: float) -> str:
    fields = {"builder": BUILDER, "format": FORMAT_VERSION, "seed": seed}
    return json.dumps(fields | ({"shortcut": shortcut} if shortcut else {})) + "\n"


def _write_benchmark(root: Path, seed: int, shortcut: float) -> None:
    ctx = BuildContext(seed, shortcut)
    splits = build_splits(ctx)
    layout = MBeirLayout(root)
    for split, datasets in splits.items():
        union: list[dict] = []
        for ds in datasets:
            name = ds.task.name
            _write_jsonl(layout.query_file(name, split), ds.queries)
            _write_jsonl(layout.local_pool_file(name, split), ds.pool)
            qrels = "".join(f"{q['qid']} 0 {did} 1 {q['task_id']}\n" for q in ds.queries for did in q["pos_cand_list"])
            _write_text(layout.qrels_file(name, split), qrels)
            union += ds.pool
        _write_jsonl(layout.global_pool_file(split), union)
        (root / "images" / split).mkdir(parents=True)
        for rel, (sample, variant) in sorted(ctx.images[split].items()):
            render_digit(transform_digit(ctx.src.images[sample], variant)).save(root / rel, format="PNG")
    rows = ["\t".join((*COLUMNS, "prompt_1", "prompt_2", "prompt_3", "prompt_4"))]
    rows += ["\t".join((t.query_modality, t.cand_modality, t.name, str(t.dataset_id), *t.prompts)) for t in TASKS]
    _write_text(layout.instructions_file, "\n".join(rows) + "\n")
    _write_text(root / "README.md", _readme(splits, seed, shortcut))
    # Last, so a folder with the marker is always a whole benchmark.
    _write_text(root / ".complete", _marker(seed, shortcut))


def build_digits_mbeir(out_dir: str | os.PathLike, seed: int = 0, shortcut: float = 0.0) -> Path:
    """Build the digits benchmark into ``out_dir`` atomically and return its path.

    ``shortcut`` > 0 builds the collapse-prone variant: digits_it2t's train colours follow the digit
    with that probability (:data:`~.tasks.SHORTCUT_COLOURS`), its val and test colours do not.

    Readers see either the old benchmark or the new one. An existing complete benchmark is replaced;
    any other non-empty folder is left alone (``FileExistsError``), since it is not ours.
    """
    out = Path(out_dir)
    if out.exists() and not (out / ".complete").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not a digits benchmark built by jfe; not replacing it")
    with atomic_dir(out) as tmp:
        _write_benchmark(tmp, seed, shortcut)
    return out


def ensure_digits_mbeir(path: str | os.PathLike, seed: int = 0, shortcut: float = 0.0) -> Path:
    """The benchmark at ``path``, built only if it is missing or was built with other options or format."""
    path = Path(path)
    marker = path / ".complete"
    if marker.is_file() and marker.read_text(encoding="utf-8") == _marker(seed, shortcut):
        return path
    return build_digits_mbeir(path, seed=seed, shortcut=shortcut)
