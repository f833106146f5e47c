"""The trainable model: the embedder (optionally with LoRA / 4-bit base) plus the temperature.

Its ``forward`` takes a collated batch and returns the loss, so the HF Trainer, DeepSpeed's engine
and ZeRO-3's parameter gathering all see one ordinary module call.
"""

from __future__ import annotations

import logging
import os
import re

import torch
from peft import LoraConfig, get_peft_model
from transformers import BitsAndBytesConfig

from jfe.backbones import backbone_for
from jfe.embedder import Embedder
from jfe.lengths import in_batch_order
from jfe.matryoshka import check_dims, prefixes
from jfe.multivector import Embedded
from jfe.train.config import TrainConfig
from jfe.train.gradcache import gradcache_loss
from jfe.train.loss import Temperature, contrastive_loss

logger = logging.getLogger(__name__)


def training_device() -> str:
    """This process's device: its own GPU under a launcher (which sets LOCAL_RANK), else the CPU."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def nf4_config(compute_dtype: str, skip: tuple[str, ...]) -> BitsAndBytesConfig:
    """QLoRA's 4-bit base: nf4 with double quantisation, computing in ``compute_dtype``; the modules
    in ``skip`` (a family's :attr:`~jfe.backbones.Backbone.quantization_skip`) stay in full precision."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=list(skip),
    )


def checked_lora_target(model: torch.nn.Module, regex: str, target: str) -> str:
    """``regex``, once checked against the modules it full-matches (peft's rule): no match, or a
    match that is not an ``nn.Linear`` (peft would adapt a Conv3d patch embedding too, and fails on
    one under ZeRO-3), is an error naming ``target`` and the modules."""
    pattern = re.compile(regex)
    names = [name for name, _ in model.named_modules() if pattern.fullmatch(name)]
    if not names:
        raise ValueError(f"lora_target={target!r} matches no module of the model")
    # a 4-bit base holds bitsandbytes Linear4bit layers, which subclass nn.Linear
    other = [f"{name} ({type(model.get_submodule(name)).__name__})" for name in names
             if not isinstance(model.get_submodule(name), torch.nn.Linear)]  # fmt: skip
    if other:
        raise ValueError(
            f"lora_target={target!r} matches modules that are not nn.Linear: {', '.join(other[:5])}; "
            "jfe adapts linear layers only (use the presets language or language+vision)"
        )
    return regex


def load_embedder(config: TrainConfig, model_path: str, device: str = "cpu") -> Embedder:
    """The starting embedder on ``device`` with the trainable set of ``config`` (LoRA, full LLM or nothing)."""
    family = backbone_for(model_path)
    kwargs = {}
    if config.quantization == "nf4":
        # bitsandbytes quantises when the weights are placed, so a 4-bit model is placed at load time
        kwargs["device_map"] = {"": device}
        kwargs["quantization_config"] = nf4_config(config.dtype, family.quantization_skip)
    pixels = {"min_pixels": config.min_pixels or None, "max_pixels": config.max_pixels or None}
    embedder = Embedder.from_pretrained(model_path, dtype=config.dtype, device=device, **pixels, **kwargs)
    embedder = with_embedding(embedder, config)
    embedder.config.fusion = config.fusion
    make_trainable(embedder, config)
    trainable, total = parameter_counts(embedder)
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))
    return embedder


def with_embedding(embedder: Embedder, config: TrainConfig) -> Embedder:
    """``embedder`` with the heads ``config.embedding`` asks for: a saved multi-vector head is kept
    (stage 2 continues stage 1's), a missing one starts from a seeded random init."""
    same_head = embedder.multi and embedder.config.multi_dim == config.multi_dim
    if config.embedding == embedder.config.embedding and (same_head or not embedder.multi):
        return embedder
    torch.manual_seed(config.seed)
    head = embedder.multi_head if same_head else None
    embedder.config.embedding, embedder.config.multi_dim = config.embedding, config.multi_dim
    out = Embedder(embedder.model, embedder.processor, embedder.config, head)
    if out.multi_head is not None:
        out.multi_head.to(out.device)
    return out


def make_trainable(embedder: Embedder, config: TrainConfig) -> None:
    """Freeze ``embedder`` and unfreeze (or adapt with LoRA) what ``config`` trains, in place. Also
    runs on a model built on the meta device, which is how ``jfe train --plan`` counts parameters."""
    family = backbone_for(embedder.model)
    embedder.config.max_text_tokens = config.max_text_tokens
    model = embedder.model
    model.config.use_cache = False
    for param in model.parameters():
        param.requires_grad = False
    if config.trainable == "full":
        for name, param in model.named_parameters():
            if config.train_vision or not name.startswith(family.vision_prefix):
                param.requires_grad = True
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if config.trainable == "lora":
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=checked_lora_target(model, family.lora_target(config.lora_target), config.lora_target),
            bias="none",
        )
        embedder.model = get_peft_model(model, lora)
    if embedder.multi_head is not None and config.trainable != "none":
        # the head is new: it always trains (outside LoRA, which adapts the backbone's layers)
        embedder.multi_head.requires_grad_(True)


def parameter_counts(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; under ZeRO-3 a parameter is a partitioned stub whose real
    size is ``ds_numel``."""
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in module.parameters()]
    return sum(n for n, grad in sizes if grad), sum(n for n, _ in sizes)


class ContrastiveModel(torch.nn.Module):
    def __init__(self, embedder: Embedder, config: TrainConfig):
        super().__init__()
        self.embedder = embedder
        # The Trainer and its DeepSpeed integration size buckets from config.hidden_size.
        self.config = embedder.model.config.get_text_config()
        self.temperature = Temperature(
            config.temperature, learnable=config.learn_temperature, minimum=config.temperature_min
        )
        self.gather = config.gather_across_ranks
        self.symmetric = config.symmetric_loss
        self.chunk_size = config.gradcache_chunk_size
        check_dims(config.matryoshka_dims, config.matryoshka_weights, embedder.dimension)
        self.dims = list(config.matryoshka_dims)
        self.dim_weights = list(config.matryoshka_weights) or [1.0] * len(self.dims)
        self.multi_weight = config.multi_weight

    def embed(self, features, count: int) -> Embedded:
        """Embeddings of the first ``count`` rows (a trailing dummy-image row is dropped)."""
        return self.embedder.embed(**features)[:count]

    def loss(self, q: Embedded, c: Embedded, temperature: torch.Tensor, ids: dict) -> torch.Tensor:
        """InfoNCE on the single vectors, plus (MRL) each ``matryoshka_dims`` prefix's, weighted, as
        sentence-transformers' MatryoshkaLoss sums them; InfoNCE on the token vectors' MeanMaxSim,
        weighted by ``multi_weight`` when there are both."""

        def term(qv, cv):
            return contrastive_loss(qv, cv, temperature, gather=self.gather, symmetric=self.symmetric, **ids)

        if q.single is None:
            return term(q.multi, c.multi)
        total = term(q.single, c.single)
        for weight, qd, cd in zip(
            self.dim_weights, prefixes(q.single, self.dims), prefixes(c.single, self.dims), strict=True
        ):
            total = total + weight * term(qd, cd)
        if q.multi is not None:
            total = total + self.multi_weight * term(q.multi, c.multi)
        return total

    def forward(
        self,
        query: list,
        candidates: list,
        query_rows: list[int],
        candidate_rows: list[int],
        query_order: torch.Tensor | None = None,
        candidate_order: torch.Tensor | None = None,
        positive_ids: torch.Tensor | None = None,
        candidate_ids: torch.Tensor | None = None,
        qids: list[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """A batch as ``ContrastiveCollator`` makes it -> ``{"loss": ...}``. ``query`` / ``candidates``
        are lists of collated chunks; ``qids`` only names the batch's queries (in errors and logs).
        Any other key is a ``TypeError``: a collator and a model that disagree must not train."""
        ids = {"positive_ids": positive_ids, "candidate_ids": candidate_ids}
        if self.chunk_size:
            sides = (query, query_rows, query_order), (candidates, candidate_rows, candidate_order)
            return {"loss": gradcache_loss(self, *sides, ids)}
        q = Embedded.cat([self.embed(f, n) for f, n in zip(query, query_rows, strict=True)])
        c = Embedded.cat([self.embed(f, n) for f, n in zip(candidates, candidate_rows, strict=True)])
        q, c = in_batch_order(q, query_order), in_batch_order(c, candidate_order)
        return {"loss": self.loss(q, c, self.temperature(), ids)}
