"""The training run, top to bottom: :func:`prepare` (data, model, Trainer), :func:`train` (the HF
Trainer's loop, resumable), :func:`save_final` (the merged model and the run's summary)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import TrainOutput, rotate_checkpoints

from jfe.artifacts import RunStart, TrainSummary
from jfe.builtins import resolve_builtin
from jfe.data.collator import ContrastiveCollator
from jfe.data.dataset import ContrastiveDataset, ExampleOptions
from jfe.data.instructions import Instructions
from jfe.data.mbeir import CandidatePool, MBeirLayout, load_queries
from jfe.data.mimic import MimicOptions
from jfe.data.pairs import InMemoryPool, load_pairs
from jfe.data.sampler import TaskBatchSampler
from jfe.train.checkpoints import COMPLETE_FILE, latest_complete, mark_complete
from jfe.train.config import TrainConfig, deepspeed_stage
from jfe.train.finalize import write_final
from jfe.train.model import ContrastiveModel, load_embedder, training_device
from jfe.train.shm import ReleaseAllreduceBuffer, release_allreduce_buffer

logger = logging.getLogger(__name__)


def build_dataset(config: TrainConfig) -> ContrastiveDataset:
    options = ExampleOptions(
        num_negatives=config.num_negatives,
        fill_random_negatives=config.fill_random_negatives,
        skip_bad_inputs=config.skip_bad_inputs,
        seed=config.seed,
        mimic=MimicOptions(config.caption_dropout, config.modality_mixin, config.mimic_apply_to),
        uniir_format=config.uniir_format and config.data_format == "mbeir",
    )
    mined = None
    if config.negatives_file:
        from jfe.data.negatives import read_mined

        mined = read_mined(config.negatives_file)
    if config.data_format == "pairs":
        queries, records = [], {}
        for path in config.pairs_files:
            qs, pool = load_pairs(path, config.images_root or None)
            queries += qs
            records.update({r.id: r for r in pool.records()})
        return ContrastiveDataset(queries, InMemoryPool(records), None, mined, options)
    root = Path(resolve_builtin(config.mbeir_root, "data"))
    layout = MBeirLayout(root)
    images_root = config.images_root or root
    if config.query_file:
        # UniIR's up-sampled union file repeats qids on purpose: each row is an example, as in UniIR
        queries = load_queries(root / config.query_file, images_root, allow_duplicate_ids=True)
    else:
        names = config.datasets or layout.datasets(config.split)
        queries = [q for name in names for q in load_queries(layout.query_file(name, config.split), images_root)]
    if config.pool == "global":
        pool = CandidatePool.load(layout.global_pool_file(config.split), images_root)
    else:
        records = {}
        for name in names:
            local = CandidatePool.load(layout.local_pool_file(name, config.split), images_root)
            records.update({r.id: r for r in local.records()})
        pool = InMemoryPool(records)
    instructions = Instructions.load(layout.instructions_file) if config.use_instructions else None
    return ContrastiveDataset(queries, pool, instructions, mined, options)


class EmbeddingTrainer(Trainer):
    """The HF Trainer with task-homogeneous batches; everything else (optimiser, schedule,
    DeepSpeed, checkpoints, resume, logging) is the Trainer's own."""

    def __init__(self, *args, sampler_options: dict[str, Any], **kwargs):
        super().__init__(*args, **kwargs)
        self.sampler_options = sampler_options

    def _save_checkpoint(self, model, trial) -> None:
        # HF deletes old checkpoints (save_total_limit) before jfe can mark the new one complete; a run
        # killed in between would keep no complete checkpoint, so jfe rotates once the mark is written
        run_dir = self._get_output_dir(trial=trial)
        folder = Path(run_dir) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:  # a run writing this step's folder again: not complete until it is done
            (folder / COMPLETE_FILE).unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # every rank's part (its optimizer shard, its RNG state) is written
        if self.args.should_save:
            mark_complete(folder, self.state.global_step, self.args.world_size)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)  # fmt: skip

    def get_train_dataloader(self) -> DataLoader:
        dataset: ContrastiveDataset = self.train_dataset
        sampler = TaskBatchSampler(
            dataset.groups(),
            batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            rank=self.args.process_index,
            seed=self.args.seed,
            positive_of=dataset.positive_of,
            weights=self.sampler_options["weights"],
            length_of=dataset.length_of if self.sampler_options["group_by_length"] else None,
        )
        # The Trainer calls set_epoch on the sampler it finds here at each epoch.
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )


def training_arguments(config: TrainConfig) -> TrainingArguments:
    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,  # below 1: a fraction of the steps
        lr_scheduler_type=config.lr_scheduler_type,
        max_steps=config.max_steps,
        num_train_epochs=config.num_epochs,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=config.dataloader_num_workers,
        remove_unused_columns=False,
        deepspeed=config.deepspeed or None,
        bf16=config.dtype == "bfloat16",
        fp16=config.dtype == "float16",
        use_cpu=not torch.cuda.is_available(),
        report_to=[] if config.report_to == "none" else [config.report_to],
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )


def thread_cap(workers: int, local_ranks: int = 1) -> int | None:
    """PyTorch threads for a CPU run that leave each DataLoader worker a core (None: no cap).

    PyTorch's intra-op threads default to every core, so a worker collating the next batch fights
    the step it should overlap with (on 2 cores tiny stage 2 ran 1.3x faster capped). An
    explicit ``OMP_NUM_THREADS`` is left alone.
    """
    if workers < 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // max(1, local_ranks) - workers)


@contextlib.contextmanager
def cores_left_to_workers(workers: int, local_ranks: int = 1) -> Iterator[int | None]:
    """Within the block PyTorch runs :func:`thread_cap` threads; after it, as many as before, so
    whatever the caller runs next gets every core back."""
    before = torch.get_num_threads()
    cap = thread_cap(workers, local_ranks)
    if cap is not None:
        torch.set_num_threads(cap)
        logger.info("CPU run: %d PyTorch threads beside %d DataLoader workers", cap, workers)
    try:
        yield cap
    finally:
        torch.set_num_threads(before)


def build_collator(config: TrainConfig, processor) -> ContrastiveCollator:
    """The collator a run with ``config`` batches with."""
    return ContrastiveCollator(
        processor,
        config.max_text_tokens,
        # ZeRO-3 runs every module call as a collective, so each chunk must run the vision tower
        dummy_image="chunk" if config.deepspeed and deepspeed_stage(config.deepspeed) == 3 else "side",
        chunk_size=config.gradcache_chunk_size,
        length_chunks=config.length_chunks,
        fusion=config.fusion,
    )


@dataclass
class PreparedRun:
    """Everything :func:`train` and :func:`save_final` need, built by :func:`prepare`."""

    config: TrainConfig
    base_model: str  # the resolved starting checkpoint
    trainer: EmbeddingTrainer
    collator: ContrastiveCollator


def prepare(config: TrainConfig, callbacks: list | None = None) -> PreparedRun:
    """Validate ``config``, load data and model, build the Trainer, and record the run's options."""
    config.validate()
    base_model = resolve_builtin(config.model, "model")
    args = training_arguments(config)
    if args.world_size > 1 and config.deepspeed:  # reading world_size initialises torch.distributed
        import deepspeed

        # ZeRO-3 partitions weights while from_pretrained loads them; its communicator must know
        # the real world size by then, not only torch's.
        deepspeed.init_distributed()
    dataset = build_dataset(config)
    # The Trainer seeds only once it exists, after the LoRA matrices were drawn: without this a
    # stage-2 run with a fixed seed still started from different adapters every time.
    set_seed(config.seed)
    embedder = load_embedder(config, base_model, device=training_device())
    collator = build_collator(config, embedder.processor)
    trainer = EmbeddingTrainer(
        model=ContrastiveModel(embedder, config),
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        sampler_options={"weights": config.task_weights or None, "group_by_length": config.group_by_length},
        callbacks=callbacks,
    )
    if trainer.is_deepspeed_enabled:
        release_allreduce_buffer()  # several ranks: DeepSpeed's comms are up already (init_distributed above)
        trainer.add_callback(ReleaseAllreduceBuffer())  # one rank: they come up inside train()
    if trainer.is_world_process_zero():
        # lets `jfe export` rebuild a merged model from any checkpoint of this run
        RunStart(config.to_dict(), base_model).write(config.output_dir)
    return PreparedRun(config, base_model, trainer, collator)


def train(run: PreparedRun) -> TrainOutput:
    """The Trainer's loop, from the newest checkpoint when ``resume`` is set."""
    config, trainer = run.config, run.trainer
    resume = None
    if config.resume and os.path.isdir(config.output_dir):
        resume, incomplete = latest_complete(config.output_dir)
        for folder in incomplete:
            logger.warning("%s is incomplete (the run stopped while writing it): not resuming from it", folder)
        resume = str(resume) if resume else None
    if config.resume and resume is None:
        logger.warning("resume requested but no complete checkpoint in %s: starting from step 0", config.output_dir)
    if not trainer.args.use_cpu:
        return trainer.train(resume_from_checkpoint=resume)
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    with cores_left_to_workers(config.dataloader_num_workers, local_ranks):
        return trainer.train(resume_from_checkpoint=resume)


def save_final(run: PreparedRun, result: TrainOutput) -> Path:
    """``output_dir/final``: the merged model and its :class:`~jfe.artifacts.TrainSummary`."""
    config, trainer = run.config, run.trainer
    final = Path(config.output_dir) / "final"
    if trainer.is_deepspeed_enabled:
        # Training is over: the fresh base loaded for the final save must not be ZeRO-3 partitioned
        # (only rank 0 loads it, so a partitioned load would wait forever for the other ranks).
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
        unset_hf_deepspeed_config()
    else:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        write_final(config, run.base_model, state_dict, final)
        TrainSummary(
            config=config.to_dict(),
            base_model=run.base_model,
            train_runtime=result.metrics.get("train_runtime"),
            global_steps=trainer.state.global_step,
            world_size=trainer.args.world_size,
            loss_history=[e for e in trainer.state.log_history if "loss" in e],
            skipped_inputs=dict(run.collator.skipped),
            hardware=_hardware(),
        ).write(final)
    trainer.accelerator.wait_for_everyone()
    return final


def run(config: TrainConfig, callbacks: list | None = None) -> Path:
    """Train as ``config`` says; returns the folder of the final (merged) model.

    ``callbacks``: extra ``transformers.TrainerCallback`` objects (progress hooks, early stops)."""
    prepared = prepare(config, callbacks)
    result = train(prepared)
    return save_final(prepared, result)


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores)"
