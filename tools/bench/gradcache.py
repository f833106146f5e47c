"""gradcache_memory: the growth of peak memory over one GradCache step at a large effective batch
against a small one, each measured in a fresh process::

    python -m tools.bench.gradcache MODEL_DIR PAIRS BATCH_SIZE CHUNK     (prints {"growth_mb": ...})
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tools.bench.inputs import write_pairs
from tools.bench.timing import peak_rss_mb, rss_mb

REPO = Path(__file__).resolve().parents[2]


def step_growth(model_dir: Path, pairs: Path, batch_size: int, chunk: int) -> float:
    """Peak RSS growth (MiB) over the forward + backward of one GradCache step on the first
    ``batch_size`` pairs of ``pairs``, collated as a run with ``gradcache_chunk_size: chunk``."""
    import torch

    from jfe.train.model import ContrastiveModel, load_embedder
    from jfe.train.trainer import build_collator, build_dataset
    from tools.bench.train import bench_config

    config = bench_config(model_dir, pairs, gradcache_chunk_size=chunk)
    model = ContrastiveModel(load_embedder(config, str(model_dir)), config).train()
    dataset = build_dataset(config)
    batch = build_collator(config, model.embedder.processor)([dataset[(i, 0)] for i in range(batch_size)])
    torch.optim.AdamW(model.parameters())  # allocated lazily; measured step is forward + backward
    before = rss_mb()
    model(**batch)["loss"].backward()
    return peak_rss_mb() - before


def measure(model_dir: Path, big: int, small: int, chunk: int, workdir: Path) -> dict:
    # the small batch's pairs are the first ones of the big batch's (the mix is prefix-stable)
    pairs = write_pairs(workdir, max(big, small), seed=2)

    def growth(batch_size: int) -> float:
        child = [sys.executable, "-m", "tools.bench.gradcache", str(model_dir), str(pairs), str(batch_size), str(chunk)]
        out = subprocess.run(child, capture_output=True, text=True, check=True, cwd=REPO)
        return json.loads(out.stdout.strip().splitlines()[-1])["growth_mb"]

    big_mb, small_mb = growth(big), growth(small)
    return {"gradcache_memory": big_mb / small_mb, "gradcache_growth_mb": {str(big): big_mb, str(small): small_mb}}


def main(argv: list[str]) -> int:
    model_dir, pairs, batch_size, chunk = argv
    print(json.dumps({"growth_mb": step_growth(Path(model_dir), Path(pairs), int(batch_size), int(chunk))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
