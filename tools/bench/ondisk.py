"""ondisk_memory: peak memory of ``jfe index --on-disk`` over 8 shards / over 1 shard of the same size,
each build in a fresh process (its peak anonymous resident memory, less that of a process that only
imports jfe and FAISS). ``jfe index`` without ``--on-disk`` is measured beside it: it holds every shard at
once, so its peak grows with the pool."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tools.bench.inputs import clustered

COUNTS = (1, 2, 4, 8)
# run in the child: the peak of its anonymous resident memory (RssAnon, sampled every 2 ms) during the
# build, in MiB. Not VmHWM: that counts the pages of mapped files too (the shards, the blocks, the
# merged lists), which the kernel drops and rereads under pressure rather than needing RAM for them.
_CHILD = """
import sys, threading, time
def anon():
    return [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("RssAnon:")][0]
peak, done = [anon()], []
def sample():
    while not done:
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
from jfe.retrieval.commands import index_main
if sys.argv[1:]:
    index_main(sys.argv[1:])
done.append(1)
time.sleep(0.01)
print(max(peak[0], anon()))
"""


def _peak_mb(args: list[str]) -> float:
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def measure(rows: int, dim: int, centres: int, nlist: int, workdir: Path) -> dict:
    from jfe.retrieval.shards import shard_dir, write_shard

    total = max(COUNTS)
    shards = [shard_dir(workdir / "embeddings", i, total) for i in range(total)]
    for i, shard in enumerate(shards):
        write_shard(shard, [f"d{i}-{j}" for j in range(rows)], clustered(rows, dim, centres, i), model="bench")
    base = _peak_mb([])
    factory = f"IVF{nlist},Flat"
    peaks: dict[str, dict[int, float]] = {"on_disk": {}, "in_memory": {}}
    for count in COUNTS:
        common = ["--embeddings", *map(str, shards[:count]), "--factory", factory, "--train-size", str(20 * nlist)]
        for mode, flag in (("on_disk", ["--on-disk"]), ("in_memory", [])):
            out = workdir / f"{mode}-{count}"
            peaks[mode][count] = _peak_mb([*common, "--out", str(out), *flag]) - base
            print(f"  {mode:9s} {count} shard(s) of {rows} x {dim}: peak {peaks[mode][count]:.0f} MiB over imports",
                  flush=True)  # fmt: skip
    shard_mb = rows * dim * 4 / 2**20
    return {
        "ondisk_memory": peaks["on_disk"][total] / peaks["on_disk"][1],
        "inmemory_memory": peaks["in_memory"][total] / peaks["in_memory"][1],
        "ondisk_peaks_mb": json.loads(json.dumps(peaks["on_disk"])),
        "inmemory_peaks_mb": json.loads(json.dumps(peaks["in_memory"])),
        "ondisk_shard_mb": shard_mb,
    }
