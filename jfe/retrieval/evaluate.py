"""``jfe eval``: M-BEIR metrics from a run file, or end to end from a model, plus the modality probe.

    jfe eval --run RUN [...] --qrels QRELS [...] [--instruction-file TSV]   metrics of existing runs
    jfe eval --model M --mbeir-root DIR --split test --pool local [--ablate image|text] [--out DIR]

Both build one table the way UniIR does (:mod:`jfe.retrieval.scoring`): a row per (dataset, task),
Recall@k as UniIR's hit rate (1 if any relevant candidate is in the top k) at @1/@5/@10, and
@10/@20/@50 for Fashion200K and FashionIQ; MRR@10 and nDCG@10; the macro average over pairs; and the
papers' headline (mean of R@5, R@10 for the fashion pairs). End to end writes its runs in UniIR's
7 columns under ``OUT/runs``; ``jfe eval --run`` on them, with the root's qrels and instruction file,
prints the same table.

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

from jfe.artifacts import EvalReport
from jfe.data.instructions import Instructions
from jfe.data.mbeir import CandidatePool, MBeirLayout, load_queries
from jfe.fingerprint import model_fingerprint
from jfe.model_args import add_model_arguments, model_kwargs
from jfe.retrieval.encode import EncodeItem, add_vectors_argument, encode_items, wants_multi
from jfe.retrieval.exact import embed_pool
from jfe.retrieval.items import (
    UNIIR_STYLE,
    TextStyle,
    add_text_style_arguments,
    candidate_items,
    query_items,
    text_style,
)
from jfe.retrieval.metrics import to_markdown
from jfe.retrieval.report import TaskRun, write_report
from jfe.retrieval.scoring import over_prompts, read_dataset_names, score_mbeir, with_headline
from jfe.retrieval.search import write_trec_run
from jfe.retrieval.tables import dims_table, probe_table, save_chart
from jfe.retrieval.trec import read_qrels, read_qrels_tasks, read_runs

logger = logging.getLogger(__name__)


def ablate(items: list[EncodeItem], modality: str | None) -> list[EncodeItem]:
    """Remove ``modality`` ("image" or "text") from the image+text items; others are unchanged."""
    if modality is None:
        return items
    if modality not in ("image", "text"):
        raise ValueError(f"ablate must be 'image' or 'text', got {modality!r}")
    return [replace(it, **{modality: None}) if it.image and it.text else it for it in items]


def _pool_index(embedder, pool: CandidatePool, work: Path | None, batch_size, num_workers, style, dim, multi):
    items = candidate_items(pool.records(), style)
    return embed_pool(embedder, items, work, batch_size, num_workers, dim, multi, progress=f"pool {pool.path.name}")


def run_id(name: str, pool: str, split: str, k: int) -> str:
    """UniIR's run id: ``mbeir_{dataset}_{union|single}_pool_{split}_k{k}``."""
    return f"mbeir_{name}_{'union' if pool == 'global' else 'single'}_pool_{split}_k{k}"


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
    run_format: str = "trec",
    style: TextStyle = UNIIR_STYLE,
    dim: int | None = None,
    multi: bool = False,
    details: dict[str, TaskRun] | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`jfe.retrieval.scoring.score_mbeir`'s table (per (dataset, task) pair, plus ``"average"``) of
    ``embedder`` on one split of an M-BEIR root: what ``jfe eval --run`` prints for the runs it writes
    (``runs_dir/{name}.trec``, in ``run_format`` columns) with the root's qrels and instruction file.

    Datasets are named by the root's instruction TSV, else by their query file when one file holds the
    dataset id. ``multimodal_only`` scores only the image+text queries (what the modality probe compares).
    ``style`` picks each query's prompt and whether texts get UniIR's ``format_string`` (by default as
    UniIR: a prompt drawn per query, texts formatted). ``dim`` scores the embeddings' first ``dim``
    components, renormalised (Matryoshka); ``multi`` the token vectors, by exact MeanMaxSim.
    ``details``, when given, receives each dataset's queries and ranked candidates (for
    :mod:`jfe.retrieval.report`)."""
    layout = MBeirLayout(Path(root))
    instructions = Instructions.load(layout.instructions_file)
    names = datasets or layout.datasets(split)
    # candidates embed differently with and without UniIR's formatting, so each has its own cache
    work = Path(work_dir) / ("uniir-format" if style.uniir_format else "raw") if work_dir else None
    shared_index = union = None
    if pool == "global":
        union = CandidatePool.load(layout.global_pool_file(split), layout.root)
        shared_index = _pool_index(
            embedder, union, work / "global" if work else None, batch_size, num_workers, style, dim, multi
        )
    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    tasks: dict[str, int] = {}
    files_of: dict[str, set[str]] = {}  # dataset id -> query files holding it
    source: dict[str, str] = {}  # qid -> its query file
    for name in names:
        query_file = layout.query_file(name, split)
        queries = load_queries(query_file, layout.root)
        if multimodal_only:
            queries = [q for q in queries if q.text and q.image]
            if not queries:
                continue
        if shared_index is None:
            candidates = CandidatePool.load(layout.local_pool_file(name, split), layout.root)
            index = _pool_index(
                embedder, candidates, work / name if work else None, batch_size, num_workers, style, dim, multi
            )
        else:
            index, candidates = shared_index, union
        items = ablate(query_items(queries, instructions, style), ablate_modality)
        vectors, _ = encode_items(embedder, items, batch_size, num_workers, progress=f"queries {name}", multi=multi)
        scores, dids = index.search(vectors, k)
        qids = [q.id for q in queries]
        if details is not None:
            ranked_scores = [[float(x) for x in row[: len(ranked)]] for row, ranked in zip(scores, dids, strict=True)]
            instructions_used = [it.instruction for it in items]
            details[name] = TaskRun(queries, instructions_used, [list(r) for r in dids], ranked_scores, candidates)
        if runs_dir is not None:
            task_ids = [q.task_id for q in queries] if run_format == "uniir" else None
            write_trec_run(
                Path(runs_dir) / f"{name}.trec", qids, scores, dids, run_id(name, pool, split, k), task_ids, run_format
            )
        for q, row, s in zip(queries, dids, scores, strict=True):
            if q.id in source:
                # one table scores all files together, so a qid in two files would score twice under one key
                raise ValueError(f"{query_file}: qid {q.id!r} is also in {source[q.id]}")
            source[q.id] = str(query_file)
            run[q.id] = dict(zip(row, map(float, s), strict=False))
            files_of.setdefault(q.dataset_id, set()).add(name)
        qrels_file = layout.qrels_file(name, split)
        wanted = set(qids)
        qrels.update((q, rels) for q, rels in read_qrels(qrels_file).items() if q in wanted)
        tasks.update((q, task) for q, task in read_qrels_tasks(qrels_file).items() if q in wanted)
    if not run:
        return {}
    # the TSV names what jfe eval --run --instruction-file names; a file name only fills a gap it cannot blur
    dataset_names = {i: next(iter(files)) for i, files in files_of.items() if len(files) == 1}
    dataset_names.update(read_dataset_names(layout.instructions_file))
    return score_mbeir(run, qrels, tasks, dataset_names, strict=True)


def query_coverage(run: dict, qrels: dict, run_files: list[str], qrels_files: list[str]) -> str:
    """One line on how the run's queries meet the qrels'; an error when they share none (the wrong
    qrels file, or ids of another format), a warning when some qrels queries have no ranking."""
    shared = run.keys() & qrels.keys()
    if not shared:
        example = f" (run ids like {next(iter(run))!r}, qrels ids like {next(iter(qrels))!r})" if run and qrels else ""
        raise ValueError(
            f"the run ({', '.join(run_files)}) and the qrels ({', '.join(qrels_files)}) share no query id{example}"
        )
    unranked, unjudged = len(qrels.keys() - run.keys()), len(run.keys() - qrels.keys())
    if unranked:
        logger.warning("%d of the %d qrels queries have no ranking in the run: each scores 0", unranked, len(qrels))
    return (
        f"queries: {len(shared)} scored; {unranked} in the qrels but not the run (scored 0); "
        f"{unjudged} in the run but not the qrels (ignored)"
    )


def evaluate_every_prompt(embedder, root: str | os.PathLike, style: TextStyle, **kwargs) -> dict[str, dict[str, float]]:
    """Policy ``all``: the table of each prompt in turn (queries with fewer prompts cycle through
    theirs), reported as the mean over prompts with each metric's spread (max - min) beside it."""
    table = Instructions.load(MBeirLayout(Path(root)).instructions_file)
    count = max(len(prompts) for prompts in table.prompts.values())
    runs_dir = kwargs.pop("runs_dir", None)
    tables = [
        evaluate_mbeir(
            embedder,
            root,
            style=replace(style, instruction_policy="all", prompt_index=i),
            runs_dir=Path(runs_dir) / f"prompt_{i + 1}" if runs_dir else None,
            **kwargs,
        )
        for i in range(count)
    ]
    return over_prompts(tables)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", nargs="+", help="run file(s) to score together: TREC (6 columns) or UniIR (7, with the task id)"
    )
    parser.add_argument("--qrels", nargs="+", help="qrels file(s) for --run (task ids from their 5th column)")
    parser.add_argument(
        "--instruction-file", help="--run: name datasets by this query_instructions.tsv (default: UniIR's ids)"
    )
    parser.add_argument("--model", help="model to evaluate end to end")
    parser.add_argument("--mbeir-root", help="M-BEIR root folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pool", choices=["local", "global"], default="local")
    parser.add_argument("--datasets", nargs="*", help="dataset names (default: all of the split)")
    parser.add_argument("--ablate", choices=["image", "text"], help="modality probe: remove it from image+text queries")
    parser.add_argument("--out", help="folder (end to end) or JSON file (--run) for the results")
    parser.add_argument("--png", action="store_true", help="also save a bar chart of per-task recall")
    parser.add_argument(
        "--report",
        metavar="HTML",
        help="write one self-contained page: sampled queries, their top 5, and (image+text) the positive's "
        "rank with and without the query image",
    )
    parser.add_argument("--report-sample", type=int, default=8, help="queries per task in --report (seeded by --seed)")
    parser.add_argument(
        "--dims", type=int, nargs="+", help="Matryoshka: also score the embeddings cut to each of these dimensions"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    add_vectors_argument(parser)
    add_text_style_arguments(parser, policies=("uniir", "first", "all"))
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.run:
        if not args.qrels:
            parser.error("--run needs --qrels")
        qrels, tasks = {}, {}
        for path in args.qrels:
            qrels.update(read_qrels(path))
            tasks.update(read_qrels_tasks(path))
        names = read_dataset_names(args.instruction_file) if args.instruction_file else None
        run = read_runs(args.run)
        coverage = query_coverage(run, qrels, args.run, args.qrels)
        shown = with_headline(score_mbeir(run, qrels, tasks, names))
        print(to_markdown(shown))
        print(coverage)
        if args.out:
            Path(args.out).write_text(json.dumps(shown, indent=2))
        return 0

    if not (args.model and args.mbeir_root):
        parser.error("give --run and --qrels, or --model and --mbeir-root")
    from jfe.embedder import Embedder

    out = Path(args.out or "eval")
    out.mkdir(parents=True, exist_ok=True)
    embedder = Embedder.from_pretrained(args.model, **model_kwargs(args))
    common = dict(
        split=args.split,
        pool=args.pool,
        datasets=args.datasets,
        work_dir=out / "pool_embeddings" / model_fingerprint(args.model),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        multi=wants_multi(embedder, args.vectors),
    )
    if common["multi"] and args.dims:
        parser.error("--dims cuts single vectors (Matryoshka): evaluate them with --vectors single")
    style = text_style(args)
    details: dict[str, TaskRun] | None = {} if args.report else None
    # UniIR's 7 columns: the runs carry their task ids, and jfe eval --run prints this same table for them
    if style.instruction_policy == "all":
        table = evaluate_every_prompt(
            embedder, args.mbeir_root, style, runs_dir=out / "runs", run_format="uniir", **common
        )
        style = replace(style, instruction_policy="first")  # the probe compares one prompt per query
        if details is not None:  # the report shows one prompt per query, as the probe does
            evaluate_mbeir(embedder, args.mbeir_root, style=style, details=details, **common)
    else:
        table = evaluate_mbeir(
            embedder, args.mbeir_root, runs_dir=out / "runs", run_format="uniir", style=style, details=details, **common
        )
    common["style"] = style
    no_image: dict[str, TaskRun] = {}
    shown = with_headline(table)
    print(to_markdown(shown))
    result = EvalReport(metrics=shown, model=args.model, split=args.split, pool=args.pool)
    result.vectors = "multi" if common["multi"] else "single"
    result.instructions = {"policy": args.instruction_policy, "seed": args.seed, "uniir_format": args.uniir_format}
    if args.ablate:
        full = evaluate_mbeir(embedder, args.mbeir_root, multimodal_only=True, **common)
        ablated = evaluate_mbeir(
            embedder,
            args.mbeir_root,
            multimodal_only=True,
            ablate_modality=args.ablate,
            details=no_image if args.ablate == "image" else None,
            **common,
        )
        probe = probe_table(full, ablated)
        print(f"\nModality probe: {args.ablate} removed from image+text queries\n" + to_markdown(probe))
        result.probe = {"ablate": args.ablate, "tasks": probe}
    if args.dims:
        result.dims = {
            str(d): with_headline(evaluate_mbeir(embedder, args.mbeir_root, dim=d, **common)) for d in args.dims
        }
        print("\nMatryoshka: recall@1 by dimension\n" + to_markdown(dims_table(shown, result.dims)))
    result.write(out)
    (out / "eval.md").write_text(to_markdown(shown) + "\n")
    if args.png:
        save_chart(table, out / "recall.png", "recall@1")
    if details is not None:
        if not no_image:
            evaluate_mbeir(
                embedder, args.mbeir_root, multimodal_only=True, ablate_modality="image", details=no_image, **common
            )
        title = f"{args.model} on {args.mbeir_root} ({args.split} split, {args.pool} pool)"
        path = write_report(args.report, details, without_image=no_image, title=title, sample=args.report_sample,
                            seed=args.seed)  # fmt: skip
        print(f"report in {path}")
    print(f"results in {out}")
    return 0
