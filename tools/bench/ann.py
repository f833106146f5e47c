"""ann_speedup and ann_recall: the fastest IVF / HNSW setting with recall@10 >= 0.95 against exact
(Flat) search, on clustered unit vectors."""

from __future__ import annotations

import numpy as np

from tools.bench.inputs import clustered
from tools.bench.timing import throughput

RECALL_GOAL = 0.95


def recall_at_10(found: np.ndarray, exact_sets: list[set]) -> float:
    """Mean share of each query's exact top 10 among the 10 found."""
    return float(np.mean([len(exact_sets[i] & set(found[i])) / 10 for i in range(len(exact_sets))]))


def pick(settings: list[dict]) -> dict:
    """The fastest setting with recall@10 >= 0.95, or the one of best recall if none reaches it."""
    good = [s for s in settings if s["recall@10"] >= RECALL_GOAL]
    return max(good, key=lambda s: s["qps"]) if good else max(settings, key=lambda s: s["recall@10"])


def measure(n: int, n_queries: int, dim: int, centres: int, hnsw: bool) -> dict:
    from jfe.retrieval.index import build_index, set_search_params

    x = clustered(n, dim, centres, 0)
    q = clustered(n_queries, dim, centres, 1)
    ids = [str(i) for i in range(n)]
    flat = build_index(x, ids, "Flat")
    _, exact = flat.search(q, 10)
    flat_qps = throughput(lambda: flat.search(q, 10), n_queries, repeats=3)
    exact_sets = [set(row) for row in exact]

    def setting(index, factory: str, train_size: int, params: dict) -> dict:
        set_search_params(index, **params)
        _, found = index.search(q, 10)
        # an IVF pass over 1,000 queries lasts a few tens of ms: one timing alone swung 2x between runs
        qps = throughput(lambda: index.search(q, 10), n_queries, repeats=5)
        name = f"{factory} " + " ".join(f"{k}={v}" for k, v in params.items())
        return {"index": name, "qps": qps, "recall@10": recall_at_10(found, exact_sets), "factory": factory,
                "train_size": train_size, "params": params}  # fmt: skip

    settings = []
    # about 4 sqrt(n) cells (more cells than clusters, so a cluster is not split across many),
    # trained on ~40 points per cell to keep k-means to a minute or two on 2 cores
    nlist = max(16, int(4 * np.sqrt(n)))
    factory, train_size = f"IVF{nlist},Flat", min(n, 40 * nlist)
    ivf = build_index(x, ids, factory, train_size=train_size)
    settings += [setting(ivf, factory, train_size, {"nprobe": p}) for p in (4, 8, 16, 32, 64, 128)]
    if hnsw:
        graph = build_index(x, ids, "HNSW32")
        settings += [setting(graph, "HNSW32", 0, {"ef_search": ef}) for ef in (32, 64, 128)]
    best = pick(settings)
    return {"ann_speedup": best["qps"] / flat_qps, "ann_recall": best["recall@10"], "ann_best": best,
            "ann_flat_qps": flat_qps, "ann_settings": settings}  # fmt: skip
