"""train_vs_bare (and the training half of padding_efficiency): jfe's training step against a bare
forward + backward + AdamW step, on batches a pair-format run of the M-BEIR-like mix forms."""

from __future__ import annotations

from pathlib import Path

from tools.bench.inputs import INSTRUCTION, write_pairs
from tools.bench.padding import real_and_padded
from tools.bench.timing import throughput


def bench_config(model_dir: Path, pairs: Path, **options):
    """The training options of the benchmark's runs: the whole LLM trains, on the pair file."""
    from jfe.train.config import TrainConfig

    return TrainConfig(model=str(model_dir), output_dir="unused", trainable="full", data_format="pairs",
                       pairs_files=[str(pairs)], **options)  # fmt: skip


def train_batches(dataset, collator, batch_size: int, n_batches: int, length_of=None) -> list[dict]:
    """The first ``n_batches`` of epoch 0 of :class:`TaskBatchSampler` over ``dataset`` (seed 0),
    their examples drawn from the dataset and collated by ``collator``."""
    from jfe.data.sampler import TaskBatchSampler

    sampler = TaskBatchSampler(dataset.groups(), batch_size, seed=0, length_of=length_of)
    return [collator([dataset[key] for key in plan_batch]) for plan_batch in list(sampler)[:n_batches]]


def batch_sets(model_dir: Path, pairs: Path, processor, batch_size: int, n_batches: int) -> dict[str, list[dict]]:
    """The benchmark's batches of the pairs: ``all`` (every batch of an epoch, collated as a run
    collates them: the padding figure), ``timed`` (its first ``n_batches``) and ``bare`` (the same
    sampler's first ``n_batches`` without length grouping, one processor call per side, each
    padded to its longest row: the bare loop's input)."""
    from jfe.train.trainer import build_collator, build_dataset

    config = bench_config(model_dir, pairs)
    dataset = build_dataset(config)
    length_of = dataset.length_of if config.group_by_length else None
    collator = build_collator(config, processor)
    bare_collator = build_collator(bench_config(model_dir, pairs, length_chunks=1), processor)
    every = train_batches(dataset, collator, batch_size, 10_000, length_of)
    bare = train_batches(dataset, bare_collator, batch_size, n_batches)
    return {"all": every, "timed": every[:n_batches], "bare": bare}


def measure(model_dir: Path, n_batches: int, batch_size: int, pool: int, workdir: Path) -> dict:
    import torch
    import torch.nn.functional as F

    from jfe.pooling import last_token_pool
    from jfe.train.model import ContrastiveModel, load_embedder

    pairs = write_pairs(workdir, pool, seed=1, instruction=INSTRUCTION)
    config = bench_config(model_dir, pairs)
    torch.manual_seed(0)
    model = ContrastiveModel(load_embedder(config, str(model_dir)), config).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    sets = batch_sets(model_dir, pairs, model.embedder.processor, batch_size, n_batches)
    real, padded = real_and_padded(sets["all"])
    batches, bare_batches = sets["timed"], sets["bare"]

    def jfe_steps():
        for batch in batches:
            loss = model(**batch)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    bare_model = load_embedder(config, str(model_dir)).model.train()
    bare_opt = torch.optim.AdamW([p for p in bare_model.parameters() if p.requires_grad], lr=1e-5)

    def bare_steps():
        for batch in bare_batches:
            q_f, c_f = batch["query"][0], batch["candidates"][0]
            q = last_token_pool(bare_model(**q_f, use_cache=False).last_hidden_state, q_f["attention_mask"])
            c = last_token_pool(bare_model(**c_f, use_cache=False).last_hidden_state, c_f["attention_mask"])
            q = F.normalize(q[: batch["query_rows"][0]], dim=-1)
            c = F.normalize(c[: batch["candidate_rows"][0]], dim=-1)
            loss = F.cross_entropy(q @ c.T / 0.05, torch.arange(q.shape[0]))
            loss.backward()
            bare_opt.step()
            bare_opt.zero_grad(set_to_none=True)

    n = n_batches * batch_size
    jfe_tp = throughput(jfe_steps, n)
    bare_tp = throughput(bare_steps, n)
    return {"train_vs_bare": jfe_tp / bare_tp, "train_padding_efficiency": real / padded,
            "train_queries_per_s": jfe_tp, "bare_train_queries_per_s": bare_tp}  # fmt: skip
