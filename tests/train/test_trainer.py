import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback

from jfe import Embedder
from jfe.train.config import TrainConfig
from jfe.train.trainer import cores_left_to_workers, run

PROBE = ["item 3", "doc 3", {"text": "item 4"}]


def _config(model, out, **overrides):
    values = {
        "model": str(model),
        "output_dir": str(out),
        "data_format": "pairs",
        "per_device_batch_size": 8,
        "learning_rate": 1e-3,
        "max_steps": 12,
        "logging_steps": 1,
        "save_steps": 6,
        "trainable": "full",
        "seed": 0,
    }
    values.update(overrides)
    return TrainConfig(**values)


def _history(final):
    return {e["step"]: e["loss"] for e in json.loads((final / "jfe_train.json").read_text())["loss_history"]}


def _losses(final):
    return list(_history(final).values())


@pytest.fixture(scope="module")
def stage1(tiny_model_dir, mixed_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "stage1"
    threads = torch.get_num_threads()
    # one DataLoader worker: a CPU run caps PyTorch's threads while it trains, and gives them back
    final = run(_config(tiny_model_dir, out, pairs_files=[str(mixed_pairs)], dataloader_num_workers=1))
    assert torch.get_num_threads() == threads
    return final


def test_stage1_writes_a_model_both_libraries_load(stage1, tiny_model_dir):
    losses = _losses(stage1)
    assert len(losses) == 12 and all(np.isfinite(losses))
    trained = Embedder.from_pretrained(stage1, dtype="float32", device="cpu").encode(PROBE)
    start = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").encode(PROBE)
    assert np.abs(trained - start).max() > 1e-3  # training changed the model
    st = SentenceTransformer(str(stage1), device="cpu").encode([{"text": "item 3"}, {"text": "doc 3"}])
    assert np.abs(st - trained[:2]).max() <= 1e-5
    summary = json.loads((stage1 / "jfe_train.json").read_text())
    assert summary["config"]["stage"] == "adapt" and summary["global_steps"] == 12


def test_stage2_lora_starts_from_the_merged_stage1_output(stage1, mixed_pairs, tmp_path):
    final = run(
        _config(
            stage1,
            tmp_path / "stage2",
            pairs_files=[str(mixed_pairs)],
            stage="instruct",
            trainable="lora",
            num_negatives=1,
            learning_rate=5e-3,
            lora_dropout=0.0,
        )
    )
    assert all(np.isfinite(_losses(final)))
    stage1_vecs = Embedder.from_pretrained(stage1, dtype="float32", device="cpu").encode(PROBE)
    merged = Embedder.from_pretrained(final, dtype="float32", device="cpu")
    assert not any("lora" in name for name, _ in merged.model.named_parameters())  # adapters merged
    assert np.abs(merged.encode(PROBE) - stage1_vecs).max() > 1e-4
    assert json.loads((final / "jfe_config.json").read_text())["base_model"] == str(stage1)


def test_a_lora_run_is_a_function_of_its_seed(stage1, mixed_pairs, tmp_path):
    def lora_run(name, seed):
        torch.manual_seed(len(name))  # whatever state the caller left the global generator in
        config = _config(stage1, tmp_path / name, pairs_files=[str(mixed_pairs)], stage="instruct",
                         trainable="lora", max_steps=3, save_steps=100, seed=seed)  # fmt: skip
        final = run(config)
        return _losses(final), Embedder.from_pretrained(final, dtype="float32", device="cpu").encode(PROBE)

    losses, vecs = lora_run("first", seed=0)
    again, again_vecs = lora_run("second", seed=0)
    other, other_vecs = lora_run("other-seed", seed=1)
    assert losses == again and np.array_equal(vecs, again_vecs)
    assert losses != other and np.abs(vecs - other_vecs).max() > 1e-4


def test_symmetric_loss_reaches_the_training_step(stage1, mixed_pairs, tmp_path):
    def first_loss(symmetric):
        config = _config(stage1, tmp_path / str(symmetric), pairs_files=[str(mixed_pairs)], max_steps=1,
                         save_steps=100, symmetric_loss=symmetric)  # fmt: skip
        final = run(config)
        assert json.loads((final / "jfe_train.json").read_text())["config"]["symmetric_loss"] is symmetric
        return _losses(final)[0]

    plain, symmetric = first_loss(False), first_loss(True)
    # same seed, same batch: only the added reverse direction can move the first loss
    assert np.isfinite(symmetric) and abs(symmetric - plain) > 1e-4


def test_qlora_trains_and_exports_full_precision(stage1, mixed_pairs, tmp_path):
    final = run(
        _config(
            stage1,
            tmp_path / "qlora",
            pairs_files=[str(mixed_pairs)],
            trainable="lora",
            quantization="nf4",
            learning_rate=5e-3,
            lora_dropout=0.0,
            max_steps=6,
        )
    )
    assert all(np.isfinite(_losses(final)))
    exported = Embedder.from_pretrained(final, dtype="float32", device="cpu")
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in exported.model.parameters())
    stage1_vecs = Embedder.from_pretrained(stage1, dtype="float32", device="cpu").encode(PROBE)
    assert np.abs(exported.encode(PROBE) - stage1_vecs).max() > 1e-4


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True


def test_resume_continues_the_same_loss_curve(tiny_model_dir, mixed_pairs, tmp_path):
    config = _config(tiny_model_dir, tmp_path / "whole", pairs_files=[str(mixed_pairs)])
    whole = _history(run(config))
    interrupted = _config(tiny_model_dir, tmp_path / "split", pairs_files=[str(mixed_pairs)])
    first = _history(run(interrupted, callbacks=[_StopAt(6)]))
    assert sorted(first) == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "split" / "checkpoint-6").is_dir()
    interrupted.resume = True
    resumed = _history(run(interrupted))
    # the resumed run continues at step 7 and its losses equal the uninterrupted run's
    assert sorted(resumed) == list(range(1, 13))
    steps = range(7, 13)
    print("resume: whole", [round(whole[s], 4) for s in steps], "resumed", [round(resumed[s], 4) for s in steps])
    np.testing.assert_allclose([resumed[s] for s in steps], [whole[s] for s in steps], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("cores", "workers", "ranks", "expected"),
    [(8, 2, 1, 6), (2, 1, 1, 1), (8, 1, 2, 3), (2, 3, 1, 1), (8, 0, 1, None)],
)
def test_cpu_threads_leave_a_core_to_each_worker(monkeypatch, cores, workers, ranks, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    before = torch.get_num_threads()
    with cores_left_to_workers(workers, ranks) as cap:
        assert cap == expected
        assert torch.get_num_threads() == (expected or before)
    assert torch.get_num_threads() == before  # the caller gets every core back


def test_cpu_threads_respect_an_explicit_omp_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    with cores_left_to_workers(1) as cap:
        assert cap is None
        assert torch.get_num_threads() == before
