"""``jfe eval --report report.html``: one self-contained page that shows what the model retrieves.

Per task, a seeded sample of queries with their top candidates (hits marked) and, for image+text
queries, the rank of the first positive with and without the query's image, side by side: the
modality probe's numbers, query by query. Images are inlined as small data-URL thumbnails, so the
page needs no server and loads nothing from outside; every text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from jfe.atomic import atomic_write_text
from jfe.data.mbeir import Query, Record

THUMBNAIL_PIXELS = 64  # the longest side of an inlined image; small images are shown scaled up, pixelated


class CandidateLookup(Protocol):
    def __contains__(self, did: object) -> bool: ...
    def __getitem__(self, did: str) -> Record: ...


@dataclass
class TaskRun:
    """One task's ranked candidates: what :func:`jfe.retrieval.evaluate.evaluate_mbeir` searched."""

    queries: list[Query]
    instructions: list[str | None]
    ranked: list[list[str]]  # per query, candidate ids best first
    scores: list[list[float]]
    pool: CandidateLookup  # the candidates searched: did -> Record (a CandidatePool or a dict)


def positive_rank(query: Query, ranked: Sequence[str]) -> int | None:
    """1-based rank of the query's first positive among ``ranked``; None when none was retrieved."""
    positives = set(query.positives)
    return next((i + 1 for i, did in enumerate(ranked) if did in positives), None)


def is_fusion(query: Query) -> bool:
    return bool(query.text and query.image)


def _thumbnail(path: str, cache: dict[str, str]) -> str:
    if path not in cache:
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
        cache[path] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return cache[path]


def _content(record: Record, thumbs: dict[str, str]) -> str:
    parts = []
    if record.image:
        parts.append(f'<img src="{_thumbnail(record.image, thumbs)}" alt="{html.escape(Path(record.image).name)}">')
    if record.text:
        parts.append(f"<span>{html.escape(record.text)}</span>")
    return "".join(parts) or "<em>empty</em>"


def _rank_text(rank: int | None, depth: int) -> str:
    return str(rank) if rank is not None else f"&gt; {depth}"


def _hit_rate(run: TaskRun, only_fusion: bool = False) -> tuple[float, int]:
    rows = [(q, r) for q, r in zip(run.queries, run.ranked, strict=True) if is_fusion(q) or not only_fusion]
    hits = sum(positive_rank(q, r[:1]) is not None for q, r in rows)
    return (hits / len(rows) if rows else 0.0), len(rows)


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; font-size: 13px; }
img { width: 48px; height: 48px; image-rendering: pixelated; display: block; margin: 0 auto 2px; }
td.hit { background: #d8f5d0; border: 2px solid #2a8a1f; }
td.miss { background: #fff; }
.score { color: #666; font-size: 11px; display: block; }
.moved { color: #b00020; font-weight: bold; }
"""


def render_report(
    runs: Mapping[str, TaskRun],
    without_image: Mapping[str, TaskRun] | None = None,
    title: str = "jfe retrieval report",
    sample: int = 8,
    seed: int = 0,
    top: int = 5,
) -> str:
    """The page as a string. ``runs``: task name -> its run; ``without_image``: task name -> the
    run of the same queries with their image removed (the probe)."""
    without_image = without_image or {}
    thumbs: dict[str, str] = {}
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<table><tr><th>task</th><th>queries</th><th>Hit@1</th><th>image+text queries</th>"
        "<th>Hit@1 without the image</th></tr>",
    ]
    for name, run in runs.items():
        hit, n = _hit_rate(run)
        probe = without_image.get(name)
        fused = sum(map(is_fusion, run.queries))
        ablated = f"{_hit_rate(probe, only_fusion=True)[0]:.3f}" if probe and fused else ""
        out.append(
            f"<tr><td>{html.escape(name)}</td><td>{n}</td><td>{hit:.3f}</td><td>{fused}</td><td>{ablated}</td></tr>"
        )
    out.append("</table>")
    rng = random.Random(seed)
    for name, run in runs.items():
        probe = without_image.get(name)
        probe_rank = {}
        if probe is not None:
            probe_rank = {q.id: positive_rank(q, r) for q, r in zip(probe.queries, probe.ranked, strict=True)}
        chosen = sorted(rng.sample(range(len(run.queries)), min(sample, len(run.queries))))
        depth = max((len(r) for r in run.ranked), default=0)
        shows_probe = any(is_fusion(run.queries[i]) for i in chosen) and probe is not None
        out.append(f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>')
        header = "<tr><th>query</th><th>rank of positive</th>"
        header += "<th>without the image</th>" if shows_probe else ""
        header += "".join(f"<th>top {i + 1}</th>" for i in range(top)) + "</tr>"
        out.append(f'<table class="task">{header}')
        for i in chosen:
            query, ranked, scores = run.queries[i], run.ranked[i], run.scores[i]
            instruction = run.instructions[i]
            cell = _content(query, thumbs)
            if instruction:
                cell += f'<span class="score">{html.escape(instruction)}</span>'
            rank = positive_rank(query, ranked)
            row = [f'<tr data-qid="{html.escape(query.id)}"><td>{cell}</td><td>{_rank_text(rank, depth)}</td>']
            if shows_probe:
                if is_fusion(query) and query.id in probe_rank:
                    ablated = probe_rank[query.id]
                    moved = ablated != rank
                    text = _rank_text(ablated, depth)
                    row.append(f'<td class="{"moved" if moved else ""}">{text}</td>')
                else:
                    row.append("<td></td>")
            positives = set(query.positives)
            for did, score in list(zip(ranked, scores, strict=True))[:top]:
                kind = "hit" if did in positives else "miss"
                body = _content(run.pool[did], thumbs) if did in run.pool else html.escape(did)
                row.append(f'<td class="{kind}">{body}<span class="score">{score:.3f}</span></td>')
            out.append("".join(row) + "</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(path: str | Path, runs: Mapping[str, TaskRun], **kwargs) -> Path:
    """:func:`render_report` written atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_report(runs, **kwargs))
    return path
