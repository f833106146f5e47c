"""Benchmarks of jfe against its baselines, each a ratio measured side by side in one run.

    python -m tools.bench [--json OUT] [--quick] [--no-hnsw]      (from the repository root)

Keys (goal in brackets), one module per measure:
  encode_vs_st        jfe encode throughput / sentence-transformers encode throughput      [>= 1.0]   encode.py
  encode_vs_bare      jfe encode throughput / bare forward on pre-collated batches         [>= 0.9]   encode.py
  padding_efficiency  real / padded tokens, encode and training batches, M-BEIR-like mix   [>= 0.95]  padding.py
  train_vs_bare       jfe training-step throughput / bare forward+backward+AdamW step      [>= 0.9]   train.py
  gradcache_memory    peak memory growth, effective batch 512 / batch 32, chunk 32         [<= 1.25]  gradcache.py
  qlora_memory        4-bit model memory / bf16 model memory, >= 100M parameters           [<= 0.35]  qlora.py
  ann_speedup         best IVF/HNSW QPS / Flat QPS among settings with recall@10 >= 0.95   [>= 20]    ann.py
  ann_recall          that setting's recall@10 against exact search                        [>= 0.95]  ann.py
  index_overhead      jfe index + search wall time / the same FAISS calls made directly    [<= 1.1]   index_overhead.py
                      (on the ANN vectors, with the setting the ANN step picked)
  multi_overhead      jfe search_multi wall time / the same FAISS search + a numpy MaxSim  [<= 1.1]   multi.py
                      rerank written directly (late interaction, synthetic token vectors)
  multi_recall        two-stage late-interaction recall@10 vs exhaustive MeanMaxSim        [>= 0.95]  multi.py
  ondisk_memory       jfe index --on-disk peak memory, 8 shards / 1 shard of 100k x 128      [<= 1.5]   ondisk.py
                      (without --on-disk, measured beside it, the peak grows with the shards)
  pool_read_speedup   pool rows read into encode items a second, column-wise / row by row  [>= 10]    pool.py

The inputs (an M-BEIR-like mix, written as images and a pair file) are in inputs.py, the timing
helpers in timing.py, the goals in goals.py. --quick shrinks every size so the whole run takes
about a minute (a smoke run, not figures).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
