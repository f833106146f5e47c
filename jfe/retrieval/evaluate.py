"""``jfe eval``: M-BEIR metrics from a run file, or end to end from a model, plus the modality probe.

    jfe eval --run RUN --qrels QRELS [...]                       metrics of an existing run
    jfe eval --model M --mbeir-root DIR --split test --pool local [--ablate image|text] [--out DIR]

Recall@k is UniIR's hit rate (1 if any relevant candidate is in the top k): @1/@5/@10, and
@10/@20/@50 for the fashion datasets; plus MRR@10 and nDCG@10, per task and averaged over tasks.

``--ablate image`` (or ``text``) reruns every image+text query with that modality removed and
reports the change per task: a model that barely moves without the image ignores it (MiMIC's
visual modality collapse); one that barely moves without the text is image-dominated, and the
reverse reading shows MIRe's text dominance.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from jfe.artifacts import EvalReport
from jfe.data.instructions import Instructions
from jfe.data.mbeir import CandidatePool, MBeirLayout, load_queries
from jfe.retrieval.encode import EncodeItem, encode_items, encode_to_shards
from jfe.retrieval.index import build_index
from jfe.retrieval.metrics import evaluate, evaluate_by_task, to_markdown
from jfe.retrieval.search import search, write_trec_run
from jfe.retrieval.shards import default_num_shards, read_embeddings
from jfe.retrieval.trec import read_qrels, read_qrels_tasks, read_run

logger = logging.getLogger(__name__)


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """Changes whenever the weights in ``model_dir`` change, so cached pool embeddings of an older
    model saved at the same path are never reused."""
    import hashlib

    folder = Path(model_dir)
    parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(folder.glob("*.safetensors"))]
    return hashlib.sha1("|".join(parts or [str(folder.resolve())]).encode()).hexdigest()[:12]


def recall_ks(dataset: str) -> tuple[int, ...]:
    """UniIR reports the fashion datasets at @10/@20/@50, the others at @1/@5/@10."""
    return (10, 20, 50) if "fashion" in dataset.lower() else (1, 5, 10)


def ablate(items: list[EncodeItem], modality: str | None) -> list[EncodeItem]:
    """Remove ``modality`` ("image" or "text") from the image+text items; others are unchanged."""
    if modality is None:
        return items
    if modality not in ("image", "text"):
        raise ValueError(f"ablate must be 'image' or 'text', got {modality!r}")
    return [replace(it, **{modality: None}) if it.image and it.text else it for it in items]


def _pool_index(embedder, pool: CandidatePool, work: Path | None, batch_size: int, num_workers: int):
    items = [EncodeItem(r.id, r.text, r.image) for r in pool.records()]
    if work is None:
        vectors, _ = encode_items(embedder, items, batch_size, num_workers, progress=f"pool {pool.path.name}")
        ids = [it.id for it in items]
    else:
        # cached as resumable shards: a rerun (or another probe) reuses the pool embeddings
        num_shards = default_num_shards(len(items))
        encode_to_shards(
            embedder, items, work, num_shards, batch_size=batch_size, num_workers=num_workers, dtype="float32"
        )
        ids, vectors = read_embeddings([work])
    return build_index(vectors, ids, "Flat"), ids


def evaluate_mbeir(
    embedder,
    root: str | os.PathLike,
    split: str = "test",
    pool: str = "local",
    datasets: list[str] | None = None,
    ablate_modality: str | None = None,
    work_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    k: int = 50,
    batch_size: int = 64,
    num_workers: int = 0,
    multimodal_only: bool = False,
) -> dict[str, dict[str, float]]:
    """Per-dataset metrics (plus ``"average"``) of ``embedder`` on one split of an M-BEIR root.

    ``multimodal_only`` scores only the image+text queries (what the modality probe compares)."""
    layout = MBeirLayout(Path(root))
    instructions = Instructions.load(layout.instructions_file)
    names = datasets or layout.datasets(split)
    work = Path(work_dir) if work_dir else None
    shared_index = None
    if pool == "global":
        union = CandidatePool.load(layout.global_pool_file(split), layout.root)
        shared_index = _pool_index(embedder, union, work / "global" if work else None, batch_size, num_workers)
    table: dict[str, dict[str, float]] = {}
    for name in names:
        queries = load_queries(layout.query_file(name, split), layout.root)
        if multimodal_only:
            queries = [q for q in queries if q.text and q.image]
            if not queries:
                continue
        if shared_index is None:
            local = CandidatePool.load(layout.local_pool_file(name, split), layout.root)
            index, ids = _pool_index(embedder, local, work / name if work else None, batch_size, num_workers)
        else:
            index, ids = shared_index
        items = ablate([EncodeItem(q.id, q.text, q.image, instructions.for_eval(q)) for q in queries], ablate_modality)
        vectors, _ = encode_items(embedder, items, batch_size, num_workers, progress=f"queries {name}")
        scores, dids = search(index, ids, vectors, k)
        qids = [q.id for q in queries]
        if runs_dir is not None:
            write_trec_run(Path(runs_dir) / f"{name}.trec", qids, scores, dids)
        run = {qid: dict(zip(row, map(float, s), strict=False)) for qid, row, s in zip(qids, dids, scores, strict=True)}
        qrels = {qid: rels for qid, rels in read_qrels(layout.qrels_file(name, split)).items() if qid in run}
        table[name] = evaluate(run, qrels, ks=recall_ks(name))
    if table:
        table["average"] = _average(list(table.values()))
    return table


def _average(rows: list[dict[str, float]]) -> dict[str, float]:
    """Macro average over tasks of the metrics every task has (fashion tasks use other ks)."""
    common = [m for m in rows[0] if all(m in r for r in rows)]
    return {m: float(np.mean([r[m] for r in rows])) for m in common}


def probe_table(full: dict, ablated: dict, metric: str = "recall@1") -> dict[str, dict[str, float]]:
    """Per task: the metric with both modalities, without one, and the change."""
    out = {}
    for task, row in full.items():
        if task in ablated and metric in row:
            out[task] = {metric: row[metric], f"{metric} ablated": ablated[task][metric]}
            out[task]["change"] = ablated[task][metric] - row[metric]
    return out


def save_chart(table: dict[str, dict[str, float]], path: Path, metric: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise SystemExit("--png needs matplotlib: pip install matplotlib") from err
    tasks = [t for t in table if metric in table[t]]
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(tasks)), 3))
    ax.bar(tasks, [table[t][metric] for t in tasks])
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", help="TREC run file to score")
    parser.add_argument("--qrels", nargs="+", help="qrels file(s) for --run (task ids from their 5th column)")
    parser.add_argument("--model", help="model to evaluate end to end")
    parser.add_argument("--mbeir-root", help="M-BEIR root folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pool", choices=["local", "global"], default="local")
    parser.add_argument("--datasets", nargs="*", help="dataset names (default: all of the split)")
    parser.add_argument("--ablate", choices=["image", "text"], help="modality probe: remove it from image+text queries")
    parser.add_argument("--out", help="folder (end to end) or JSON file (--run) for the results")
    parser.add_argument("--png", action="store_true", help="also save a bar chart of per-task recall")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.run:
        if not args.qrels:
            parser.error("--run needs --qrels")
        qrels, tasks = {}, {}
        for path in args.qrels:
            qrels.update(read_qrels(path))
            tasks.update(read_qrels_tasks(path))
        table = evaluate_by_task(read_run(args.run), qrels, tasks, strict=False)
        print(to_markdown(table))
        if args.out:
            Path(args.out).write_text(json.dumps(table, indent=2))
        return 0

    if not (args.model and args.mbeir_root):
        parser.error("give --run and --qrels, or --model and --mbeir-root")
    from jfe.embedder import Embedder

    out = Path(args.out or "eval")
    out.mkdir(parents=True, exist_ok=True)
    embedder = Embedder.from_pretrained(args.model)
    common = dict(
        split=args.split,
        pool=args.pool,
        datasets=args.datasets,
        work_dir=out / "pool_embeddings" / model_fingerprint(args.model),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    table = evaluate_mbeir(embedder, args.mbeir_root, runs_dir=out / "runs", **common)
    print(to_markdown(table))
    result = EvalReport(metrics=table, model=args.model, split=args.split, pool=args.pool)
    if args.ablate:
        full = evaluate_mbeir(embedder, args.mbeir_root, multimodal_only=True, **common)
        ablated = evaluate_mbeir(embedder, args.mbeir_root, multimodal_only=True, ablate_modality=args.ablate, **common)
        probe = probe_table(full, ablated)
        print(f"\nModality probe: {args.ablate} removed from image+text queries\n" + to_markdown(probe))
        result.probe = {"ablate": args.ablate, "tasks": probe}
    result.write(out)
    (out / "eval.md").write_text(to_markdown(table) + "\n")
    if args.png:
        save_chart(table, out / "recall.png", "recall@1")
    print(f"results in {out}")
    return 0
