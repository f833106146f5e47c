"""Thin drivers: ``jfe index``, ``jfe search`` and ``jfe mine``."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from jfe.data.jsonl import json_lines
from jfe.matryoshka import truncate
from jfe.model_args import add_model_arguments, model_kwargs
from jfe.retrieval.index import IVFDATA_FILE, META_FILE, build_index, load_index, save_index, set_search_params
from jfe.retrieval.items import add_text_style_arguments, read_items, text_style
from jfe.retrieval.mine import mine_negatives, write_mined
from jfe.retrieval.multi_index import (
    DEFAULT_FACTORY,
    build_multi_index,
    load_multi_index,
    save_multi_index,
    search_multi,
)
from jfe.retrieval.multi_shards import read_multi_embeddings
from jfe.retrieval.ondisk import build_on_disk
from jfe.retrieval.search import merge_topk, search, write_trec_run
from jfe.retrieval.shards import concatenate, single_shards
from jfe.retrieval.trec import read_qrels, read_run
from jfe.retrieval.tuning import RecallTarget, tune_index


def index_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jfe index", description="build a FAISS inner-product index")
    parser.add_argument("--embeddings", nargs="+", required=True, help="shard folders or folders of shards")
    parser.add_argument("--out", required=True, help="index folder (index.faiss, ids.txt, index.json)")
    parser.add_argument(
        "--factory",
        help='FAISS index_factory string: "Flat", "IVF4096,PQ64", "HNSW32" (default: Flat; with --multi '
        f"{DEFAULT_FACTORY}, {{auto}} an IVF list count for the number of tokens)",
    )
    parser.add_argument("--train-size", type=int, default=100_000, help="vectors sampled to train IVF/PQ indexes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None, help="GPU FAISS when present")
    parser.add_argument(
        "--on-disk",
        action="store_true",
        help="IVF factories: add each shard on its own and merge the inverted lists on disk (index.ivfdata), so "
        "peak memory is one shard plus the quantizer whatever the pool's size",
    )
    parser.add_argument(
        "--target-recall",
        type=float,
        help="measure recall@k against exact search on sampled indexed vectors and store the smallest nprobe "
        "(IVF) or efSearch (HNSW) reaching it; jfe search uses it unless given --nprobe/--ef-search",
    )
    parser.add_argument("--recall-k", type=int, default=10, help="k of --target-recall")
    parser.add_argument("--recall-queries", type=int, default=1000, help="vectors sampled as --target-recall queries")
    parser.add_argument(
        "--multi",
        action="store_true",
        help="multi-vector shards (jfe encode of a late-interaction model): a token-level index for candidates, "
        "with the token vectors kept for jfe search's exact MaxSim rerank",
    )
    args = parser.parse_args(argv)
    if args.multi:
        if args.on_disk or args.target_recall:
            parser.error("--on-disk and --target-recall build single-vector indexes; not with --multi")
        docs = read_multi_embeddings(args.embeddings)
        built = build_multi_index(docs, args.factory or DEFAULT_FACTORY, args.train_size, args.seed, args.gpu)
        save_multi_index(built, args.out)
        print(f"indexed {len(docs.vectors)} token vectors of {len(docs)} items, dim {docs.dim} ({built.factory}) "
              f"into {args.out}")  # fmt: skip
        return 0
    target = None
    if args.target_recall is not None:
        target = RecallTarget(args.target_recall, args.recall_k, args.recall_queries, args.seed)
    args.factory = args.factory or "Flat"
    out = Path(args.out)
    pairs = single_shards(args.embeddings)
    vectors = None
    if args.on_disk:
        meta = build_on_disk(pairs, out, args.factory, args.train_size, args.seed)
        count, dim = meta["count"], meta["dim"]
        where = f"{out} (inverted lists on disk: {IVFDATA_FILE})"
        index = None  # its lists are on disk: tuning maps them
    else:
        ids, vectors = concatenate(pairs)
        index = build_index(vectors, ids, args.factory, train_size=args.train_size, seed=args.seed, use_gpu=args.gpu)
        save_index(index, ids, out, factory=args.factory)
        count, dim, where = len(ids), vectors.shape[1], str(out)
    print(f"indexed {count} vectors of dim {dim} ({args.factory}) into {where}")
    if target is not None:
        tuned = tune_index(out, pairs, vectors, target, index)
        print(recall_line(tuned))
        if not tuned["recall"]["reached"]:
            raise ValueError(
                f"{recall_line(tuned)}: the index cannot reach recall@{target.k} {target.target} (its codes cap "
                f"it); it is saved with that setting: use a finer factory (e.g. IVF...,Flat) or a lower target"
            )
    return 0


def recall_line(tuned: dict) -> str:
    """One line on what ``--target-recall`` measured and picked."""
    recall, params = tuned["recall"], tuned["search_params"]
    setting = ", ".join(f"{k} {v}" for k, v in params.items()) or "the index's only setting"
    return (
        f"recall@{recall['k']} {recall['measured']:.3f} at {setting} (target {recall['target']}, "
        f"{recall['queries']} sampled vectors); jfe search uses it unless told otherwise"
    )


def index_kind(folder: str | os.PathLike) -> str:
    """ "single" or "multi": what ``jfe index`` wrote into ``folder`` (loading checks the rest)."""
    import json

    path = Path(folder) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind", "single")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable index ({err}); build the folder with jfe index") from err


def search_indexes(
    index_dirs: list[str],
    queries,
    k: int,
    nprobe: int | None = None,
    ef_search: int | None = None,
    mmap: bool = True,
    depth: int = 100,
    verify: bool = False,
) -> tuple:
    """Top-k over one or several index folders (shards of one corpus), merged by score. Token-vector
    queries (a list of (n_i, d) arrays) search multi-vector indexes: ``depth`` token hits per query
    vector give the candidates, exact MeanMaxSim ranks them."""
    results = []
    for folder in index_dirs:
        if isinstance(queries, list):
            results.append(search_multi(load_multi_index(folder, mmap=mmap), queries, k, depth, nprobe))
            continue
        index, ids, meta = load_index(folder, mmap=mmap, verify=verify)
        if index.d != queries.shape[1]:
            raise ValueError(
                f"{folder}: the index holds {index.d}-d vectors, the queries are {queries.shape[1]}-d "
                f"(a Matryoshka index needs jfe search --dim {index.d})"
            )
        if nprobe is None and ef_search is None:  # what jfe index --target-recall picked, if it did
            set_search_params(index, **search_params(meta))
        else:
            set_search_params(index, nprobe=nprobe, ef_search=ef_search)
        results.append(search(index, ids, queries, k))
    return results[0] if len(results) == 1 else merge_topk(results, k)


def search_params(meta: dict) -> dict:
    """The ``nprobe`` / ``ef_search`` an index's ``index.json`` stores (from ``--target-recall``)."""
    stored = meta.get("search_params") or {}
    return {"nprobe": stored.get("nprobe"), "ef_search": stored.get("efSearch")}


def query_task_ids(path: str | os.PathLike) -> dict[str, int]:
    """``{qid: task_id}`` of an M-BEIR query file: the 7th column of a UniIR run."""
    tasks: dict[str, int] = {}
    for lineno, record in json_lines(path):
        task = record.get("task_id") if isinstance(record, dict) else None
        if not isinstance(task, int) or isinstance(task, bool) or "qid" not in record:
            raise ValueError(f"{path}:{lineno}: the uniir run format needs M-BEIR queries (qid, integer task_id)")
        tasks[record["qid"]] = task
    return tasks


def search_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jfe search", description="embed queries and write a TREC or UniIR run file")
    parser.add_argument("--model", required=True)
    parser.add_argument("--index", nargs="+", required=True, help="index folder(s); several are merged per query")
    parser.add_argument("--queries", required=True, help="M-BEIR query file or pair-format JSONL")
    parser.add_argument("--out", required=True, help="run file")
    parser.add_argument(
        "--run-format",
        choices=["trec", "uniir"],
        default="trec",
        help="trec: qid Q0 did rank score tag; uniir: UniIR's 7 columns, + task_id (needs an M-BEIR query file)",
    )
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--images-root")
    parser.add_argument("--instruction-file", help="M-BEIR query_instructions.tsv (prompts per --instruction-policy)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--nprobe", type=int, help="IVF cells visited per query (default: what jfe index --target-recall stored)"
    )
    parser.add_argument("--ef-search", type=int, help="HNSW search breadth")
    parser.add_argument(
        "--depth", type=int, default=100, help="multi-vector index: token hits per query vector that give candidates"
    )
    parser.add_argument(
        "--verify", action="store_true", help="check the index files' checksums before searching (reads them once)"
    )
    parser.add_argument("--tag", default="jfe")
    parser.add_argument("--dim", type=int, help="queries cut to D components, renormalised (as the index's shards)")
    parser.add_argument(
        "--mmap",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="map IVF lists from disk (instant load); --no-mmap reads the index, faster for very many queries",
    )
    add_text_style_arguments(parser)
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from jfe.embedder import Embedder
    from jfe.retrieval.encode import encode_items

    items = list(read_items(args.queries, args.images_root, args.instruction_file, text_style(args)))
    # read before the model loads, so a query file without task ids fails at once
    task_ids = None
    if args.run_format == "uniir":
        tasks = query_task_ids(args.queries)
        task_ids = [tasks[item.id] for item in items]
    kinds = {folder: index_kind(folder) for folder in args.index}
    if len(set(kinds.values())) > 1:
        parser.error(f"--index mixes single- and multi-vector indexes: {kinds}")
    multi = kinds[args.index[0]] == "multi"
    if multi and args.dim:
        parser.error("--dim cuts single vectors (Matryoshka); a multi-vector index holds token vectors")
    embedder = Embedder.from_pretrained(args.model, **model_kwargs(args))
    if multi and not embedder.multi:
        parser.error(f"{args.index[0]} is a multi-vector index but {args.model} has no multi-vector head")
    vectors, _ = encode_items(embedder, items, args.batch_size, progress="queries", multi=multi)
    vectors = vectors if multi else truncate(vectors, args.dim)
    scores, dids = search_indexes(
        args.index, vectors, args.k, args.nprobe, args.ef_search, args.mmap, args.depth, args.verify
    )
    write_trec_run(args.out, [item.id for item in items], scores, dids, args.tag, task_ids, args.run_format)
    print(f"wrote top-{args.k} for {len(items)} queries to {args.out}")
    return 0


def mine_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe mine", description="turn a search run into hard negatives for training (negatives_file)"
    )
    parser.add_argument("--run", required=True, help="TREC run file from jfe search over the training queries")
    parser.add_argument("--qrels", nargs="+", required=True, help="qrels file(s) of those queries")
    parser.add_argument("--out", required=True, help="JSONL: {qid, neg_dids} per line")
    parser.add_argument("--k", type=int, default=30, help="negatives kept per query")
    parser.add_argument("--skip-top", type=int, default=0, help="skip this many top non-positives (false negatives)")
    args = parser.parse_args(argv)
    qrels: dict = {}
    for path in args.qrels:
        qrels.update(read_qrels(path))
    mined = mine_negatives(read_run(args.run), qrels, k=args.k, skip_top=args.skip_top)
    write_mined(Path(args.out), mined)
    print(f"mined negatives for {len(mined)} queries into {args.out}")
    return 0
