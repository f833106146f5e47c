"""tools/bench.py must keep running and report every key (its figures are a benchmark, not asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

KEYS = ["encode_vs_st", "encode_vs_bare", "padding_efficiency", "train_vs_bare", "gradcache_memory",
        "qlora_memory", "ann_speedup", "ann_recall", "index_overhead"]  # fmt: skip


def test_quick_benchmark_reports_every_ratio(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(repo / "tools" / "bench.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=repo,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in KEYS:
        assert figures[key] > 0, key
        assert f"| {key} |" in result.stdout
    assert 0 < figures["ann_recall"] <= 1 and 0 < figures["padding_efficiency"] <= 1
