"""The one-tower early-fusion embedder: a VLM whose last real token, L2-normalised, is the embedding."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor, BatchFeature

from jfe.artifacts import EMBEDDER_CONFIG
from jfe.atomic import atomic_dir
from jfe.backbones import backbone_for
from jfe.formatting import EMBEDDING_CHAT_TEMPLATE, render, to_features
from jfe.fusion import check_fusion
from jfe.inference import Row, embed_windows
from jfe.inputs import to_embed_input
from jfe.matryoshka import truncate
from jfe.multivector import (
    HEAD_DIR,
    Embedded,
    MultiVectorHead,
    TokenVectors,
    check_embedding,
    check_vectors,
    multi_vector_st_files,
    scoring_mask,
    skipped_ids,
)
from jfe.pixels import set_pixel_budget
from jfe.pooling import last_token_pool

JFE_CONFIG = EMBEDDER_CONFIG
CHAT_TEMPLATES = ("jfe", "checkpoint")


@dataclass
class EmbedderConfig:
    """Settings saved beside the weights in ``jfe_config.json``."""

    max_text_tokens: int = field(
        default=512, metadata={"help": "text longer than this many tokens is cut before the prompt is added"}
    )
    prompts: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "named instructions, exported as sentence-transformers prompts (e.g. 'query')"},
    )
    base_model: str | None = field(default=None, metadata={"help": "the checkpoint this model was trained from"})
    matryoshka_dims: list[int] = field(
        default_factory=list,
        metadata={"help": "the shorter prefixes training made embeddings of their own (MRL); any prefix can be used"},
    )
    embedding: str = field(
        default="single",
        metadata={
            "help": "single: one vector per input (the last token's state); multi: token vectors from a linear "
            "head, scored by MeanMaxSim (late interaction, jfe.multivector); both: the two heads"
        },
    )
    multi_dim: int = field(default=128, metadata={"help": "components of each token vector (multi, both)"})
    fusion: str = field(
        default="early",
        metadata={
            "help": "early: an image+text input is one sequence; late: its image and its text are embedded apart "
            "and combined (jfe.fusion); sentence-transformers and vLLM embed image+text inputs early"
        },
    )
    chat_template: str = field(
        default="jfe",
        metadata={
            "help": "jfe: jfe's embedding template (installed on the processor); checkpoint: the template the "
            "checkpoint ships (an embedding model's own prompt, e.g. GME or Qwen3-VL-Embedding), rendered "
            "with the assistant turn opened, whose first position is read"
        },
    )

    @classmethod
    def load(cls, folder: str | os.PathLike) -> EmbedderConfig:
        path = Path(folder) / JFE_CONFIG
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def install_chat_template(processor: Any, config: EmbedderConfig) -> None:
    """Give ``processor`` the template ``config.chat_template`` names (jfe's embedding template, or
    the checkpoint's own, which must exist). Every engine that renders prompts calls this."""
    if config.chat_template not in CHAT_TEMPLATES:
        raise ValueError(f"chat_template={config.chat_template!r} is not one of {CHAT_TEMPLATES}")
    if config.chat_template == "jfe":
        processor.chat_template = EMBEDDING_CHAT_TEMPLATE
    elif not getattr(processor, "chat_template", None):
        source = config.base_model or "the checkpoint"
        raise ValueError(f"chat_template='checkpoint', but {source} ships no chat template")


def load_processor(
    path: str,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    chat_template: str | None = None,
) -> tuple[Any, EmbedderConfig]:
    """A checkpoint's processor, with the image-token budget and the chat template its
    :class:`EmbedderConfig` (``chat_template`` overriding the saved one) names, and that config:
    what every engine (transformers, vLLM, ``jfe train --plan``) renders and resizes with."""
    processor = AutoProcessor.from_pretrained(path)
    if min_pixels or max_pixels:
        set_pixel_budget(processor, min_pixels, max_pixels)
    config = EmbedderConfig.load(path)
    if config.base_model is None:
        config.base_model = path
    if chat_template is not None:
        config.chat_template = chat_template
    install_chat_template(processor, config)
    return processor, config


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def attention_implementation(device: torch.device, dtype: torch.dtype) -> str:
    """flash-attn 2 where it can run (CUDA, half precision, package installed), sdpa otherwise."""
    half = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and _imports("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


def _imports(name: str) -> bool:
    # found is not enough: a flash-attn built for another torch or CUDA is found, then fails at load
    if importlib.util.find_spec(name) is None:
        return False
    try:
        importlib.import_module(name)
    except Exception:  # any failure means: do not pick it
        return False
    return True


def _as_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16'")
        return getattr(torch, dtype)
    return dtype


class Embedder(torch.nn.Module):
    """Wraps a Hugging Face VLM (its base model, no LM head) and its processor.

    The same object embeds for training (``forward`` on collated features, with gradients) and for
    inference (``encode`` on raw inputs), so both format inputs identically.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        config: EmbedderConfig | None = None,
        multi_head: MultiVectorHead | None = None,
    ):
        super().__init__()
        self.model = model
        self.processor = processor
        self.config = config or EmbedderConfig()
        install_chat_template(processor, self.config)
        check_fusion(self.config.fusion)
        if self.config.fusion == "late" and self.config.embedding != "single":
            raise ValueError("fusion=late combines single vectors: this model has embedding=" + self.config.embedding)
        self.multi_head = None
        if check_embedding(self.config.embedding) != "single":
            # a new head starts from torch's seeded init; a saved one is passed in
            self.multi_head = multi_head or MultiVectorHead(self.hidden_size, self.config.multi_dim)
            self.config.multi_dim = self.multi_head.dim
        self._skip = torch.tensor(skipped_ids(processor.tokenizer), dtype=torch.long)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        chat_template: str | None = None,
        **model_kwargs: Any,
    ) -> Embedder:
        """Load a checkpoint folder of a supported family (:mod:`jfe.backbones`), or one jfe saved,
        with its processor. ``min_pixels`` / ``max_pixels`` bound every image's size, so its visual
        tokens (:mod:`jfe.pixels`); ``save`` keeps the bounds with the model. ``chat_template``
        (:data:`CHAT_TEMPLATES`) overrides the saved :attr:`EmbedderConfig.chat_template`."""
        path = os.fspath(path)
        if os.path.isdir(path):
            backbone_for(path)  # an unsupported family fails here, naming the supported ones
        device = torch.device(device) if device is not None else default_device()
        dtype = _as_dtype(dtype, device)
        model_kwargs.setdefault("attn_implementation", attention_implementation(device, dtype))
        processor, config = load_processor(path, min_pixels, max_pixels, chat_template)
        model = AutoModel.from_pretrained(path, dtype=dtype, **model_kwargs)
        head = MultiVectorHead.load(path) if os.path.isdir(os.path.join(path, HEAD_DIR)) else None
        embedder = cls(model, processor, config, head)
        if "device_map" not in model_kwargs and "quantization_config" not in model_kwargs:
            embedder.to(device)
        elif embedder.multi_head is not None:
            embedder.multi_head.to(embedder.device)
        return embedder.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def dimension(self) -> int:
        """Width of the single vector, or of each token vector for a multi-vector-only model."""
        return self.config.multi_dim if self.config.embedding == "multi" else self.hidden_size

    @property
    def multi(self) -> bool:
        """Whether this model gives token vectors (``embedding`` multi or both)."""
        return self.multi_head is not None

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def features(self, inputs: Sequence[Any], instruction: str | Sequence[str | None] | None = None) -> BatchFeature:
        """Raw inputs (as ``encode`` takes them) -> the model features of one batch, in input order."""
        items = [to_embed_input(x, i) for i, x in enumerate(inputs)]
        prompts = render(self.processor, items, per_input(instruction, len(items)), self.config.max_text_tokens)
        return to_features(self.processor, prompts, items)

    def embed(self, **features: torch.Tensor) -> Embedded:
        """Collated features -> what this model's ``embedding`` gives, from one forward
        (differentiable): the L2-normalised last-token state, the token vectors, or both."""
        device = self.device
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        # input_ids are always passed so the model recomputes its rope offsets instead of reusing
        # ones cached from the previous forward.
        hidden = self.model(**features, use_cache=False, return_dict=True).last_hidden_state
        single = multi = None
        if self.config.embedding != "multi":
            single = F.normalize(last_token_pool(hidden, features["attention_mask"]).float(), dim=-1)
        if self.multi_head is not None:
            mask = scoring_mask(features["input_ids"], features["attention_mask"], self._skip)
            multi = TokenVectors(self.multi_head(hidden), mask)
        return Embedded(single, multi)

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        """Collated features -> (batch, dim) L2-normalised float32 embeddings (differentiable)."""
        check_vectors(self.config.embedding, multi=False)
        return self.embed(**features).single

    @torch.inference_mode()
    def encode(
        self,
        inputs: Sequence[Any],
        instruction: str | Sequence[str | None] | None = None,
        batch_size: int = 32,
        show_progress: bool = False,
        truncate_dim: int | None = None,
    ) -> np.ndarray:
        """Embed texts, images or image+text dicts; returns (N, D) float32, L2-normalised rows.

        ``instruction`` is one task instruction for every input (queries) or one per input.
        ``truncate_dim``: keep the first components and renormalise (Matryoshka; as
        sentence-transformers' ``truncate_dim`` with ``normalize_embeddings=True``).
        """
        return truncate(self._encode(inputs, instruction, batch_size, show_progress, multi=False), truncate_dim)

    @torch.inference_mode()
    def encode_multi(
        self,
        inputs: Sequence[Any],
        instruction: str | Sequence[str | None] | None = None,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> list[np.ndarray]:
        """Token vectors of each input: a list of (n_i, multi_dim) float32 arrays, L2-normalised rows
        (the tokens :mod:`jfe.multivector` scores), as ``MultiVectorEncoder.encode`` gives them."""
        check_vectors(self.config.embedding, multi=True)
        return self._encode(inputs, instruction, batch_size, show_progress, multi=True)

    def _encode(self, inputs, instruction, batch_size: int, show_progress: bool, multi: bool):
        items = [to_embed_input(x, i) for i, x in enumerate(inputs)]
        window = list(zip(range(len(items)), items, per_input(instruction, len(items)), strict=True))
        progress = "encode" if show_progress else None
        return self.embed_windows([window], len(items), batch_size, progress, multi=multi)[0]

    def embed_windows(
        self,
        windows: Iterable[list[Row]],
        total: int,
        batch_size: int = 32,
        progress: str | None = None,
        multi: bool = False,
    ) -> tuple[np.ndarray | list, np.ndarray]:
        """:func:`jfe.inference.embed_windows` on this model: the engine interface ``jfe encode``
        drives (:class:`jfe.serving.vllm.VllmEmbedder` has the same method)."""
        return embed_windows(self, windows, total, batch_size, progress, multi)

    def save(self, path: str | os.PathLike) -> Path:
        """Write weights, processor (with the embedding chat template), jfe and sentence-transformers
        configs into ``path``, atomically: the folder appears complete or not at all."""
        out = Path(path)
        with atomic_dir(out) as tmp:
            self.model.save_pretrained(tmp)
            if prefix := backbone_for(self.model).saved_prefix:
                prefix_weight_names(tmp, prefix)
            self.processor.save_pretrained(tmp)
            (tmp / JFE_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))
            if self.multi_head is not None:
                self.multi_head.save(tmp)
            if self.config.embedding == "multi":
                write_sentence_transformers_config(tmp, self.dimension, self.config.prompts, multi=True)
            else:
                write_sentence_transformers_config(tmp, self.dimension, self.config.prompts)
            if self.config.embedding == "both":
                multi_vector_folder(tmp, self.config.prompts)
        return out


def prefix_weight_names(folder: Path, prefix: str) -> None:
    """Rename every weight of the safetensors checkpoint in ``folder`` to ``prefix + name`` (names
    that have it already are kept), shards and index alike."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    index = folder / "model.safetensors.index.json"
    shards = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    )
    for shard in shards:
        with safe_open(folder / shard, framework="pt") as f:
            tensors = {k if k.startswith(prefix) else prefix + k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
            metadata = f.metadata() or {"format": "pt"}
        save_file(tensors, folder / shard, metadata=metadata)
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {k if k.startswith(prefix) else prefix + k: v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))


def per_input(instruction: str | Sequence[str | None] | None, n: int) -> list[str | None]:
    """One instruction for every input, or one per input (checked)."""
    if instruction is None or isinstance(instruction, str):
        return [instruction] * n
    instructions = list(instruction)
    if len(instructions) != n:
        raise ValueError(f"got {len(instructions)} instructions for {n} inputs")
    return instructions


# ``embedding: both`` writes a second sentence-transformers folder inside the first: one folder holds
# one model type (SentenceTransformer or MultiVectorEncoder)
MULTI_VECTOR_FOLDER = "multi_vector"
_SINGLE_ONLY = {"modules.json", "config_sentence_transformers.json", "1_Pooling", "2_Normalize", "README.md"}


def multi_vector_folder(folder: Path, prompts: dict[str, str]) -> Path:
    """``folder/multi_vector``: the MultiVectorEncoder view of a ``both`` model. Its files are
    hard links to the model's (no second copy of the weights on disk; a copy where links fail)."""
    out = folder / MULTI_VECTOR_FOLDER
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_dir() or rel.parts[0] in _SINGLE_ONLY or rel.parts[0] == MULTI_VECTOR_FOLDER:
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, out / rel)
        except OSError:
            shutil.copy2(path, out / rel)
    write_sentence_transformers_config(out, 0, prompts, multi=True)
    return out


def write_sentence_transformers_config(
    folder: Path, dimension: int, prompts: dict[str, str], multi: bool = False
) -> None:
    """Files that make ``SentenceTransformer(folder)`` rebuild the same pipeline: the VLM's chat
    template for formatting, last-token pooling, L2 normalisation, and the instructions as prompts;
    with ``multi``, ``MultiVectorEncoder(folder)`` instead (:func:`jfe.multivector.multi_vector_st_files`)."""
    forward = {"method": "forward", "method_output_name": "last_hidden_state"}
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.base.modules.normalize.Normalize",
        },
    ]
    st_module = {
        "transformer_task": "feature-extraction",
        "modality_config": {
            "text": forward,
            "image": forward,
            "message": {**forward, "format": "structured"},
        },
        "module_output_name": "token_embeddings",
        # jfe renders every prompt so (its own template opens the assistant turn regardless, a
        # checkpoint's template only when asked): the embedding is read from that turn's first position
        "processing_kwargs": {"chat_template": {"add_generation_prompt": True}},
    }
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": st_module,
        "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer",
            "prompts": {"document": "", **prompts},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": {
            "embedding_dimension": dimension,
            "pooling_mode": "lasttoken",
            "include_prompt": True,
        },
        "2_Normalize/config.json": {},
    }
    if multi:
        files = {"sentence_bert_config.json": st_module, **multi_vector_st_files(prompts)}
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content, indent=2))
