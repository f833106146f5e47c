"""The benchmark run: ``python -m tools.bench [--json OUT] [--quick] [--no-hnsw]`` from the repository root."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tools.bench
from tools.bench import ann, encode, gradcache, index_overhead, multi, ondisk, padding, pool, qlora, train
from tools.bench.goals import table


@dataclass(frozen=True)
class Sizes:
    """Every size the run uses; :data:`FULL` gives the figures, :data:`QUICK` a smoke run."""

    model: tuple[int, int]  # hidden, layers of the random-init Qwen2-VL the encode and training figures use
    encode: tuple[int, int]  # inputs, batch size
    padding: tuple[int, int]  # items, batch size
    train: tuple[int, int, int]  # timed batches, batch size, pool of pairs
    gradcache: tuple[int, int, int]  # big batch, small batch, chunk
    qlora: tuple[int, int]  # hidden, layers of the quantised model
    ann: tuple[int, int, int, int]  # vectors, queries, dim, centres
    multi: tuple[int, int, int, int]  # items, mean tokens per item, dim, queries (half as many tokens)
    ondisk: tuple[int, int, int, int]  # rows per shard, dim, centres, IVF lists
    pool: int  # candidates in the pool read


FULL = Sizes(model=(512, 4), encode=(256, 32), padding=(8192, 32), train=(8, 32, 8192), gradcache=(512, 32, 32),
             qlora=(1024, 12), ann=(1_000_000, 1_000, 256, 2_000), multi=(20_000, 32, 128, 200),
             ondisk=(100_000, 128, 100, 256), pool=1_000_000)  # fmt: skip
QUICK = Sizes(model=(64, 2), encode=(32, 16), padding=(512, 32), train=(2, 8, 256), gradcache=(64, 32, 32),
              qlora=(128, 2), ann=(20_000, 200, 64, 200), multi=(1_000, 8, 32, 50),
              ondisk=(5_000, 32, 20, 16), pool=20_000)  # fmt: skip


def run(sizes: Sizes, workdir: Path, hnsw: bool = True) -> dict:
    """Every measure in turn, each printing its time; the results with ``padding_efficiency`` added."""
    from jfe.tiny import build_tiny_model

    hidden, layers = sizes.model
    wide = build_tiny_model(workdir / "wide" / "model", hidden=hidden, layers=layers)
    results: dict = {}
    steps = [
        ("encode", lambda: encode.measure(wide, *sizes.encode)),
        ("padding", lambda: padding.measure_encode(wide, *sizes.padding, workdir / "padding")),
        ("train", lambda: train.measure(wide, *sizes.train, workdir / "train")),
        ("gradcache", lambda: gradcache.measure(wide, *sizes.gradcache, workdir / "gradcache")),
        ("qlora", lambda: qlora.measure(workdir / "big", *sizes.qlora)),
        ("ann", lambda: ann.measure(*sizes.ann, hnsw=hnsw)),
        ("index", lambda: index_overhead.measure(results["ann_best"], *sizes.ann, workdir / "index")),
        ("multi", lambda: multi.measure(*sizes.multi, workdir / "multi")),
        ("ondisk", lambda: ondisk.measure(*sizes.ondisk, workdir / "ondisk")),
        ("pool", lambda: pool.measure(sizes.pool, workdir / "pool")),
    ]
    for name, fn in steps:
        start = time.perf_counter()
        results.update(fn())
        print(f"[{name}] done in {time.perf_counter() - start:.0f} s", flush=True)
    results["padding_efficiency"] = padding.combined(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=tools.bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs, not figures")
    parser.add_argument("--no-hnsw", action="store_true", help="skip building HNSW on the 1M vectors (slow)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = run(QUICK if args.quick else FULL, Path(tmp), hnsw=not (args.quick or args.no_hnsw))
    print("\n" + table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
