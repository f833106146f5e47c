"""index_overhead: ``jfe index`` and the search half of ``jfe search`` (everything after the queries
are embedded) against the FAISS calls they wrap, made directly on the vectors held in memory: on
the ANN step's vectors with the setting it picked, since indexing a large pool is where the time goes.

Those calls include writing the index to disk and mapping it back for the search, as a FAISS user
who builds an index once and searches it later does too; the ratio left is jfe's own work (reading
the shards, the id map, the TREC run). The ratio against FAISS kept in memory, with no file at all,
is reported beside it."""

from __future__ import annotations

from pathlib import Path

from tools.bench.inputs import clustered
from tools.bench.timing import alternating_best


def measure(setting: dict, n: int, n_queries: int, dim: int, centres: int, workdir: Path) -> dict:
    import faiss

    from jfe.retrieval.commands import index_main, search_indexes
    from jfe.retrieval.index import set_search_params, training_rows
    from jfe.retrieval.search import write_trec_run
    from jfe.retrieval.shards import write_shard

    factory, train_size, params = setting["factory"], max(1, setting["train_size"]), setting["params"]
    x = clustered(n, dim, centres, 0)
    q = clustered(n_queries, dim, centres, 1)
    qids = [f"q{i}" for i in range(n_queries)]
    write_shard(workdir / "embeddings", [f"d{i}" for i in range(n)], x)

    def jfe_path():
        index_main(["--embeddings", str(workdir / "embeddings"), "--out", str(workdir / "index"),
                    "--factory", factory, "--train-size", str(train_size)])  # fmt: skip
        scores, dids = search_indexes([str(workdir / "index")], q, 10, **params)
        write_trec_run(workdir / "run.trec", qids, scores, dids)

    def faiss_path(to_disk: bool) -> None:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            # the rows jfe trains on, so both k-means runs do the same work
            index.train(x[training_rows(n, train_size)])
        index.add(x)
        if to_disk:
            faiss.write_index(index, str(workdir / "faiss.index"))
            index = faiss.read_index(str(workdir / "faiss.index"), faiss.IO_FLAG_MMAP)
        set_search_params(index, **params)
        index.search(q, 10)

    # the three alternate, each keeping its best of 3
    jfe_s, faiss_s, memory_s = alternating_best(
        [jfe_path, lambda: faiss_path(to_disk=True), lambda: faiss_path(to_disk=False)], rounds=3
    )
    return {"index_overhead": jfe_s / faiss_s, "index_overhead_vs_in_memory": jfe_s / memory_s,
            "index_jfe_seconds": jfe_s, "index_faiss_seconds": faiss_s, "index_faiss_in_memory_seconds": memory_s,
            "index_setting": setting["index"]}  # fmt: skip
