"""Single vs multi vs both vs single with Matryoshka (MRL) at 1/4 width, on the digits benchmark.

    python -m tools.compare_embeddings [--out DIR] [--json F] [--stage2-steps N] [--quick]

Trains stage 1 once as ``jfe demo`` does (``recipes/tiny-stage1.yaml``), then stage 2
(``recipes/tiny-stage2.yaml``) four times from it with the same seed and schedule: ``embedding``
single, multi, both, and single with ``matryoshka_dims=[width // 4]``. Each arm is scored with
jfe's own evaluator (exact search; a ``both`` model by its single and its multi vectors, the MRL
model at full width and at width // 4), and for each view the five test pools are indexed as
``jfe index`` would (single: FAISS Flat; multi: the token-level ``IVF{auto},Flat`` folder, token
vectors stored float16 for the rerank) and searched the way ``jfe search`` does, every view's
search timed in the same passes. Prints one markdown table; writes JSON (``--json``, default
``OUT/compare.json``). Everything goes under ``--out`` (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jfe.tiny import TINY_SHAPE

WIDTH = TINY_SHAPE["hidden"]  # the tiny model's single-vector width
MULTI_DIM = min(128, WIDTH)  # jfe's default multi_dim, but never wider than the model itself
MRL_DIM = WIDTH // 4
STAGE2_STEPS = 600  # the schedule docs/multivector_digits.md reports (the recipe's own is 1800)
QUICK_STEPS = (5, 4)  # stage 1, stage 2 with --quick: a smoke run whose numbers mean nothing
QUICK_QUERIES = 8  # --quick scores each task's first queries against the candidates they name
DEPTH, NPROBE, K = 100, 8, 10  # multi search: token hits per query vector, IVF lists visited; top k


@dataclass(frozen=True)
class View:
    """One way of scoring an arm's model: its single vectors (cut to ``dim``) or its token vectors."""

    label: str
    multi: bool = False
    dim: int | None = None


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]
    views: tuple[View, ...]


ARMS = (
    Arm("single", (), (View("single"),)),
    Arm("multi", ("embedding=multi", f"multi_dim={MULTI_DIM}"), (View("multi", multi=True),)),
    Arm(
        "both",
        ("embedding=both", f"multi_dim={MULTI_DIM}"),
        (View("both (single)"), View("both (multi)", multi=True)),
    ),
    Arm(
        "mrl",
        (f"matryoshka_dims=[{MRL_DIM}]",),
        (View(f"MRL @{WIDTH}"), View(f"MRL @{MRL_DIM}", dim=MRL_DIM)),
    ),
)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def folder_bytes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def quick_digits(data: Path, out: Path, per_task: int = QUICK_QUERIES) -> Path:
    """A small test split for ``--quick``: each task's first ``per_task`` queries, its pool cut to
    the candidates they name (positives and hard negatives), their qrels; images and instructions
    linked from ``data``. The train split is not there: --quick trains on the whole benchmark."""
    from jfe.data.mbeir import MBeirLayout

    full, small = MBeirLayout(data), MBeirLayout(out / "digits-quick")
    for name in ("images", "instructions"):
        (small.root / name).parent.mkdir(parents=True, exist_ok=True)
        (small.root / name).symlink_to(full.root.resolve() / name, target_is_directory=True)
    for task in full.datasets("test"):
        queries = full.query_file(task, "test").read_text(encoding="utf-8").splitlines()[:per_task]
        records = [json.loads(line) for line in queries]
        qids = {r["qid"] for r in records}
        named = {did for r in records for did in r["pos_cand_list"] + r["neg_cand_list"]}
        pool = full.local_pool_file(task, "test").read_text(encoding="utf-8").splitlines()
        qrels = full.qrels_file(task, "test").read_text(encoding="utf-8").splitlines()
        for path, lines in (
            (small.query_file(task, "test"), queries),
            (small.local_pool_file(task, "test"), [line for line in pool if json.loads(line)["did"] in named]),
            (small.qrels_file(task, "test"), [line for line in qrels if line.split()[0] in qids]),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return small.root


@dataclass
class Searcher:
    """One view's indexes over the test pools, loaded back from their folders, and its queries."""

    calls: list[Any]  # per task: a no-argument function running the whole search of its queries
    queries: int
    index_bytes: dict[str, int]  # file name -> bytes, summed over the tasks' folders
    extra: dict[str, float]


def prepare_search(model: Path, data: Path, out: Path, arm: str, view: View, tasks: list[str]) -> Searcher:
    """Index each test pool of ``tasks`` for ``view`` under ``out/index`` and ready its queries.

    The pools' embeddings come from the evaluator's cache for this model (``jfe.demo.evaluate_digits``
    put them there), so nothing is embedded twice; were the cache elsewhere they would be embedded anew."""
    from jfe.data.instructions import Instructions
    from jfe.data.mbeir import CandidatePool, MBeirLayout, load_queries
    from jfe.demo import digits_style
    from jfe.embedder import Embedder
    from jfe.matryoshka import truncate
    from jfe.retrieval.encode import encode_items
    from jfe.retrieval.evaluate import model_fingerprint
    from jfe.retrieval.exact import embed_pool
    from jfe.retrieval.index import load_index, save_index
    from jfe.retrieval.items import candidate_items, query_items
    from jfe.retrieval.multi_index import build_multi_index, load_multi_index, save_multi_index, search_multi
    from jfe.retrieval.search import search

    embedder = Embedder.from_pretrained(model, dtype="float32", device="cpu")
    layout, style = MBeirLayout(data), digits_style()
    instructions = Instructions.load(layout.instructions_file)
    cache = out / "eval" / f"{arm}-{model_fingerprint(model)}" / "raw"
    calls, sizes, n_queries, agree, tokens, items = [], {}, 0, 0, 0, 0
    for task in tasks:
        pool = CandidatePool.load(layout.local_pool_file(task, "test"), layout.root)
        exact = embed_pool(embedder, candidate_items(pool.records(), style), cache / task, 64, 0, view.dim, view.multi)
        queries = load_queries(layout.query_file(task, "test"), layout.root)
        vectors, _ = encode_items(embedder, query_items(queries, instructions, style), 64, multi=view.multi)
        folder = out / "index" / re.sub(r"\W+", "_", view.label).strip("_") / task
        n_queries += len(queries)
        if view.multi:
            save_multi_index(build_multi_index(exact.tokens), folder)  # what jfe index --multi writes
            index = load_multi_index(folder)
            calls.append(lambda index=index, q=vectors: search_multi(index, q, K, DEPTH, NPROBE))
            # how far the candidate stage moves the top 1 from exact MeanMaxSim (what eval scores)
            _, found = calls[-1]()
            _, best = exact.search(vectors, 1)
            agree += sum(a[:1] == b[:1] for a, b in zip(found, best, strict=True))
            tokens, items = tokens + len(exact.tokens.vectors), items + len(exact.tokens)
        else:
            save_index(exact.index, exact.ids, folder, factory="Flat")  # what jfe index writes
            index, ids, _ = load_index(folder)
            q = truncate(vectors, view.dim)
            calls.append(lambda index=index, ids=ids, q=q: search(index, ids, q, K))
        for name, size in folder_bytes(folder).items():
            sizes[name] = sizes.get(name, 0) + size
    extra = {"top1_as_exact": agree / n_queries, "tokens_per_candidate": tokens / items} if view.multi else {}
    return Searcher(calls, n_queries, sizes, extra)


def time_searches(searchers: dict[str, Searcher], passes: int) -> dict[str, float]:
    """Queries a second of each view's whole search (every task's queries in its pool): best of
    ``passes``, the views alternating within each pass so that they share the machine's state."""
    best = dict.fromkeys(searchers, float("inf"))
    for _ in range(passes):
        for label, s in searchers.items():
            start = time.perf_counter()
            for call in s.calls:
                call()
            best[label] = min(best[label], time.perf_counter() - start)
    return {label: searchers[label].queries / seconds for label, seconds in best.items()}


def run(out: Path, stage2_steps: int, quick: bool) -> dict[str, Any]:
    from jfe.builtins import digits_benchmark, tiny_model
    from jfe.demo import evaluate_digits, train_recipe

    start = time.perf_counter()
    data, seconds = digits_benchmark(), {}
    stage1_steps, stage2_steps = QUICK_STEPS if quick else (None, stage2_steps)
    test = quick_digits(data, out) if quick else data  # what is scored and searched
    t = time.perf_counter()
    stage1 = train_recipe("tiny-stage1.yaml", tiny_model("qwen2_vl"), data, out / "stage1", stage1_steps)
    seconds["stage1"] = time.perf_counter() - t
    views: dict[str, dict[str, Any]] = {}
    searchers: dict[str, Searcher] = {}
    for arm in ARMS:
        t = time.perf_counter()
        model = train_recipe("tiny-stage2.yaml", stage1, data, out / arm.name, stage2_steps, list(arm.overrides))
        seconds[f"stage2 {arm.name}"] = time.perf_counter() - t
        for view in arm.views:
            t = time.perf_counter()
            table = evaluate_digits(model, test, out, arm.name, multi=view.multi, dim=view.dim)
            tasks = [task for task in table if task != "average"]
            hits = {task: table[task]["recall@1"] for task in tasks}
            seconds[f"eval {view.label}"] = time.perf_counter() - t
            t = time.perf_counter()
            searchers[view.label] = prepare_search(model, test, out, arm.name, view, tasks)
            seconds[f"index {view.label}"] = time.perf_counter() - t
            views[view.label] = {"arm": arm.name, "vectors": "multi" if view.multi else "single",
                                 "dim": MULTI_DIM if view.multi else view.dim or WIDTH, "hit@1": hits,
                                 "average_hit@1": table["average"]["recall@1"],
                                 "stage2_seconds": seconds[f"stage2 {arm.name}"]}  # fmt: skip
    t = time.perf_counter()
    for label, qps in time_searches(searchers, 1 if quick else 5).items():
        s = searchers[label]
        views[label].update(qps=qps, queries=s.queries, index_bytes=sum(s.index_bytes.values()),
                            index_files=s.index_bytes, **s.extra)  # fmt: skip
    seconds["search timing"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    schedule = {"stage1_steps": stage1_steps or "recipe (400)", "stage2_steps": stage2_steps,
                "recipes": ["tiny-stage1.yaml", "tiny-stage2.yaml"], "seed": 0, "width": WIDTH,
                "multi_dim": MULTI_DIM, "mrl_dim": MRL_DIM, "search": {"k": K, "depth": DEPTH, "nprobe": NPROBE},
                "quick": f"first {QUICK_QUERIES} test queries of each task" if quick else False}  # fmt: skip
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "schedule": schedule, "views": views,
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    views = result["views"]
    labels = list(views)
    tasks = list(next(iter(views.values()))["hit@1"])

    def row(name: str, cells: list[str]) -> str:
        return "| " + " | ".join([name, *cells]) + " |"

    lines = [row("", labels), "|---" + "|---:" * len(labels) + "|"]
    lines += [row(f"{task} H@1", [f"{views[v]['hit@1'][task]:.3f}" for v in labels]) for task in tasks]
    lines.append(row("average H@1", [f"{views[v]['average_hit@1']:.3f}" for v in labels]))
    lines.append(row("vector width", [str(views[v]["dim"]) for v in labels]))
    lines.append(row("index bytes (5 pools)", [f"{views[v]['index_bytes']:,}" for v in labels]))
    lines.append(row("search QPS", [f"{views[v]['qps']:,.0f}" for v in labels]))
    lines.append(row("stage-2 train s", [f"{views[v]['stage2_seconds']:.0f}" for v in labels]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.compare_embeddings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", help="folder for the runs, indexes and JSON (default: a new temporary folder)")
    parser.add_argument("--json", help="write the results here (default: OUT/compare.json)")
    parser.add_argument("--stage2-steps", type=int, default=STAGE2_STEPS, help="stage-2 max_steps of every arm")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_STEPS} steps, one timing pass")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="jfe-compare-"))
    result = run(out, args.stage2_steps, args.quick)
    print(markdown(result))
    path = Path(args.json) if args.json else out / "compare.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['cpu']}, {result['seconds']['total']:.0f} s; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
