"""tools/bench: each measure's arithmetic on inputs whose answer is known, its inputs built by the
library's own builders, and a --quick run that reports every key the full run does."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jfe import Embedder
from jfe.data.pairs import load_pairs
from jfe.formatting import EmbedInput, render
from jfe.inputs import load_image
from jfe.lengths import batches_by_length, rendered_token_counts
from jfe.retrieval.encode import SORT_WINDOW_BATCHES, EncodeItem, length_order
from jfe.retrieval.multi_index import build_multi_index, exhaustive_multi
from jfe.retrieval.multi_shards import MultiVectors
from tools.bench import ann, goals, multi, qlora, timing, train
from tools.bench.goals import GOALS
from tools.bench.inputs import INSTRUCTION, mbeir_like_inputs, write_inputs, write_pairs
from tools.bench.padding import encode_tokens, real_and_padded

REPO = Path(__file__).resolve().parents[2]

# every key tools/bench.py wrote before it became a package: the JSON stays comparable
KEYS = {
    "encode_vs_st", "encode_vs_bare", "encode_items_per_s", "st_items_per_s", "bare_items_per_s",
    "encode_padding_efficiency", "train_vs_bare", "train_padding_efficiency", "train_queries_per_s",
    "bare_train_queries_per_s", "gradcache_memory", "gradcache_growth_mb", "qlora_memory",
    "qlora_model_parameters", "ann_speedup", "ann_recall", "ann_best", "ann_flat_qps", "ann_settings",
    "index_overhead", "index_overhead_vs_in_memory", "index_jfe_seconds", "index_faiss_seconds",
    "index_faiss_in_memory_seconds", "index_setting", "padding_efficiency",
    "multi_overhead", "multi_recall", "multi_best", "multi_settings", "multi_qps", "multi_jfe_seconds",
    "multi_direct_seconds", "multi_direct_agreement", "multi_rerank_candidates_per_s", "multi_candidates_per_query",
    "multi_build_seconds", "multi_index_bytes", "single_qps", "single_index_bytes", "single_recall_vs_maxsim",
    "multi_workload", "ondisk_memory", "inmemory_memory", "ondisk_peaks_mb", "inmemory_peaks_mb", "ondisk_shard_mb",
    "pool_read_speedup", "pool_rows_per_s", "pool_row_wise_rows_per_s", "pool_load_seconds", "pool_rows",
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(GOALS))
def test_goal_check_flags_the_wrong_side_of_each_goal(key):
    op, goal = GOALS[key]
    better, worse = (goal * 1.01, goal * 0.99) if op == ">=" else (goal * 0.99, goal * 1.01)
    assert goals.met(key, goal) and goals.met(key, better)
    assert not goals.met(key, worse)
    row = {k: GOALS[k][1] for k in GOALS} | {key: worse}
    assert f"| {key} | {worse:.3f} | {op} {goal} | NO |" in goals.table(row).splitlines()


def _chunk(mask: list[list[int]]) -> dict:
    return {"attention_mask": torch.tensor(mask)}


def test_real_and_padded_counts_real_rows_only_and_every_token_run():
    batch = {
        # 2 real rows (5 real tokens of 8); then 1 real row and a dummy-image row (2 of 4)
        "query": [_chunk([[1, 1, 1, 0], [1, 1, 0, 0]]), _chunk([[1, 0], [1, 1]])],
        "query_rows": [2, 1],
        # 2 real rows and a dummy row (6 real tokens of 9)
        "candidates": [_chunk([[1, 1, 1], [1, 1, 1], [1, 0, 0]])],
        "candidate_rows": [2],
    }
    assert real_and_padded([batch, batch]) == (2 * 12, 2 * 21)


def _by_hand(embedder, items: list[EncodeItem], batch_size: int) -> tuple[int, int]:
    """The tokens of the batches ``encode_items`` forms, worked out from its documented batching:
    items in length_order, windows of SORT_WINDOW_BATCHES batches, each window sorted by exact
    token count and cut into batches padded to their longest row."""
    ordered = [items[i] for i in length_order(items)]
    real = padded = 0
    step = batch_size * SORT_WINDOW_BATCHES
    for start in range(0, len(ordered), step):
        window = ordered[start : start + step]
        inputs = [EmbedInput(it.text, load_image(it.image) if it.image else None) for it in window]
        texts = render(embedder.processor, inputs, [None] * len(inputs), embedder.config.max_text_tokens)
        counts = rendered_token_counts(embedder.processor, texts, inputs)
        real += sum(counts)
        padded += sum(len(b) * max(counts[i] for i in b) for b in batches_by_length(counts, batch_size))
    return real, padded


def test_encode_padding_counts_the_batches_encode_items_forms(tiny_model_dir, tmp_path):
    embedder = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    written = write_inputs(tmp_path, 150, seed=3)
    items = [EncodeItem(str(i), x["text"], str(tmp_path / x["image"]) if x["image"] else None)
             for i, x in enumerate(written)]  # fmt: skip
    real, padded = encode_tokens(embedder, items, batch_size=4)  # 3 windows of up to 64 items
    assert (real, padded) == _by_hand(embedder, items, 4)
    assert real < padded


def test_written_pairs_hold_the_in_memory_mix(tmp_path):
    path = write_pairs(tmp_path, 12, seed=1, instruction=INSTRUCTION)
    queries, pool = load_pairs(path)
    mix = mbeir_like_inputs(24, seed=1)
    assert len(queries) == 12
    assert {(x["text"] is None, x["image"] is None) for x in mix} == {(True, False), (False, True), (False, False)}
    for i, q in enumerate(queries):
        (positive,) = q.positives
        for record, x in ((q, mix[2 * i]), (pool[positive], mix[2 * i + 1])):
            assert record.text == x["text"]
            assert (record.image is None) == (x["image"] is None)
            if x["image"] is not None:
                assert np.array_equal(np.asarray(load_image(record.image)), np.asarray(x["image"]))
        assert q.instruction == INSTRUCTION and q.dataset == "mix"
    # the gradcache step's small batch is the big batch's first pairs
    assert [x["text"] for x in mbeir_like_inputs(10, seed=2)] == [x["text"] for x in mbeir_like_inputs(30, seed=2)[:10]]


def test_training_batches_are_a_run_s_batches_and_the_bare_ones_one_pass_per_side(tiny_model_dir, tmp_path):
    pairs = write_pairs(tmp_path, 40, seed=1, instruction=INSTRUCTION)
    processor = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").processor
    sets = train.batch_sets(tiny_model_dir, pairs, processor, batch_size=8, n_batches=2)
    every, timed, bare = sets["all"], sets["timed"], sets["bare"]
    queries, _ = load_pairs(pairs)
    # an epoch of the pool, each query once; the timed batches are its first ones
    assert sorted(q for b in every for q in b["qids"]) == sorted(q.id for q in queries)
    assert [b["qids"] for b in timed] == [b["qids"] for b in every[:2]]
    # the run's batches embed each side in up to length_chunks passes, the bare ones in one
    assert max(len(b["query"]) for b in timed) > 1
    assert all(len(b["query"]) == 1 and len(b["candidates"]) == 1 for b in bare)
    # the same examples either way: the same real tokens, less padding when split by length
    assert [b["qids"] for b in bare] == [b["qids"] for b in timed]
    (jfe_real, jfe_padded), (bare_real, bare_padded) = real_and_padded(timed), real_and_padded(bare)
    assert jfe_real == bare_real and jfe_padded < bare_padded


class _Clock:
    """A perf_counter that moves only when a timed function runs (by that call's scripted length)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throughput_keeps_the_best_timed_call_after_an_untimed_warm_up(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(timing, "perf_counter", clock)
    lengths = [0.5, 4.0, 2.0, 3.0]  # the warm-up is the fastest: it must not count
    calls = []

    def fn():
        calls.append(1)
        clock.now += lengths[len(calls) - 1]

    assert timing.throughput(fn, 10, repeats=3) == pytest.approx(10 / 2.0)
    assert len(calls) == 4


def test_alternating_best_alternates_after_a_sync_and_keeps_each_best(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(timing, "perf_counter", clock)
    monkeypatch.setattr(timing.os, "sync", lambda: events.append("sync"))
    lengths = {"a": [5.0, 3.0, 4.0], "b": [1.0, 2.0, 0.5], "c": [7.0, 8.0, 9.0]}
    events = []

    def make(name):
        def fn():
            events.append(name)
            clock.now += lengths[name][sum(e == name for e in events) - 1]

        return fn

    assert timing.alternating_best([make("a"), make("b"), make("c")], rounds=3) == [3.0, 0.5, 7.0]
    assert events == ["sync", "a", "sync", "b", "sync", "c"] * 3


def test_ann_recall_and_the_setting_it_picks():
    exact = [set(range(10)), set(range(10, 20))]
    found = np.array([list(range(5)) + list(range(100, 105)), list(range(10, 20))])
    assert ann.recall_at_10(found, exact) == pytest.approx((0.5 + 1.0) / 2)
    settings = [
        {"index": "slow exact", "qps": 10.0, "recall@10": 1.0},
        {"index": "at the goal", "qps": 50.0, "recall@10": 0.95},
        {"index": "fast", "qps": 900.0, "recall@10": 0.94},
        {"index": "good", "qps": 40.0, "recall@10": 0.97},
    ]
    assert ann.pick(settings)["index"] == "at the goal"
    assert ann.pick([s for s in settings if s["recall@10"] < 0.95])["index"] == "fast"


def test_multi_texts_share_a_vocabulary_and_the_direct_search_does_jfe_s_work():
    items, lengths = multi.texts(300, 8, 16, seed=1)
    assert [len(x) for x in items] == lengths.tolist() and lengths.min() >= 4 and lengths.max() <= 12
    assert all(x.dtype == np.float32 for x in items)
    np.testing.assert_allclose(np.linalg.norm(np.concatenate(items), axis=1), 1, atol=1e-5)
    queries, _ = multi.texts(20, 4, 16, seed=2)
    # queries are about the items' topics: each has an item far closer than a random one
    mv = MultiVectors.from_items([f"d{i}" for i in range(300)], items)
    scores, dids = exhaustive_multi(queries, mv, 300)
    assert np.mean(scores[:, 0]) > np.mean(scores[:, -50:]) + 0.2
    # with depth over every token of an exact index, the direct search finds the exhaustive top 10
    mi = build_multi_index(mv, "Flat")
    found = multi.direct_search(mi.index, mi.token_items, mv.vectors, mv.offsets, queries, 10, len(mv.vectors))
    assert [[mv.ids[r] for r in row] for row in found] == [d[:10] for d in dids]


def test_qlora_memory_uses_a_4_bit_base(tmp_path):
    figures = qlora.measure(tmp_path / "model", hidden=128, layers=2)
    # 4-bit LLM weights: well under the bf16 model, the bf16 vision tower and embeddings aside
    assert 0.2 < figures["qlora_memory"] < 0.8
    assert figures["qlora_model_parameters"] > 0


@pytest.mark.slow
def test_quick_run_reports_every_key_with_consistent_figures(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "tools.bench", "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=900, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) == KEYS
    for key, (op, goal) in GOALS.items():
        assert math.isfinite(figures[key]) and figures[key] > 0, key
        assert f"| {key} | {figures[key]:.3f} | {op} {goal} |" in result.stdout
    f = figures
    assert f["padding_efficiency"] == min(f["encode_padding_efficiency"], f["train_padding_efficiency"])
    assert f["encode_vs_st"] == pytest.approx(f["encode_items_per_s"] / f["st_items_per_s"])
    assert f["encode_vs_bare"] == pytest.approx(f["encode_items_per_s"] / f["bare_items_per_s"])
    assert f["train_vs_bare"] == pytest.approx(f["train_queries_per_s"] / f["bare_train_queries_per_s"])
    growth = figures["gradcache_growth_mb"]
    assert figures["gradcache_memory"] == pytest.approx(growth["64"] / growth["32"])
    assert figures["ann_best"] in figures["ann_settings"] and figures["index_setting"] == figures["ann_best"]["index"]
    assert figures["ann_recall"] == figures["ann_best"]["recall@10"]
    assert figures["ann_speedup"] == pytest.approx(figures["ann_best"]["qps"] / figures["ann_flat_qps"])
    assert figures["index_overhead"] == pytest.approx(figures["index_jfe_seconds"] / figures["index_faiss_seconds"])
    assert f["multi_best"] in f["multi_settings"] and f["multi_recall"] == f["multi_best"]["recall@10"]
    assert f["multi_overhead"] == pytest.approx(f["multi_jfe_seconds"] / f["multi_direct_seconds"])
    assert f["multi_direct_agreement"] >= 0.9  # the direct path ranks the same items
    assert f["multi_index_bytes"] > f["single_index_bytes"] > 0 and f["multi_rerank_candidates_per_s"] > 0
    assert f["ondisk_memory"] == pytest.approx(f["ondisk_peaks_mb"]["8"] / f["ondisk_peaks_mb"]["1"])
    assert set(f["ondisk_peaks_mb"]) == set(f["inmemory_peaks_mb"]) == {"1", "2", "4", "8"}
    assert f["pool_read_speedup"] == pytest.approx(f["pool_rows_per_s"] / f["pool_row_wise_rows_per_s"])
