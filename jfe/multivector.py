"""Late interaction (ColBERT's MaxSim, MIRe's scoring): many vectors per input.

A linear head maps each last hidden state to ``multi_dim`` components (128 by default, as ColQwen),
and each vector is L2-normalised. Which tokens count: every token of the rendered input (the
instruction, the text, the visual tokens and the template's words, which attend to the content and
so carry it, as ColBERT's query expansion does), except the template's special markers
(:data:`SKIPPED_TOKENS`), on queries and candidates alike. That rule is a token-id skiplist, so
sentence-transformers' ``MultiVectorMask`` expresses it exactly.

The score is **MeanMaxSim**: for each query vector the best dot product over the candidate's
vectors, averaged over the query's vectors. Dividing by the query's count keeps scores in
[-1, 1] whatever the query's length, so one temperature serves single- and multi-vector losses
(``embedding: both``); sentence-transformers calls it ``similarity_fn_name="meanmaxsim"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

# The markers of jfe's chat template: fixed tokens whose vectors would only add the same matches to
# every candidate. Other template tokens stay (they attend to the content).
SKIPPED_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")
EMBEDDINGS = ("single", "multi", "both")
HEAD_DIR = "multi_vector_head"  # sentence-transformers' Dense module folder, read by jfe too
# sentence-transformers' Dense writes this key for its nn.Linear
_WEIGHT, _BIAS = "linear.weight", "linear.bias"


def check_vectors(embedding: str, multi: bool) -> None:
    """Refuse to ask a model of ``embedding`` for vectors it does not give: token vectors
    (``multi``) of a single-vector model, single vectors of a multi-vector-only one. Every engine
    (jfe's, vLLM's) and command asks through this."""
    if multi and embedding == "single":
        raise ValueError("this model gives one vector per input (embedding: single), no token vectors: use encode")
    if not multi and embedding == "multi":
        raise ValueError("this model gives token vectors only (embedding: multi): use encode_multi")


def check_embedding(embedding: str) -> str:
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding={embedding!r} is not one of {', '.join(EMBEDDINGS)}")
    return embedding


@dataclass
class TokenVectors:
    """A batch of token-vector sets, padded: ``vectors`` (N, T, d) and ``mask`` (N, T) bool (True: scored)."""

    vectors: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def __getitem__(self, rows) -> TokenVectors:
        return TokenVectors(self.vectors[rows], self.mask[rows])

    def padded(self, width: int) -> TokenVectors:
        extra = width - self.vectors.shape[1]
        if extra <= 0:
            return self
        return TokenVectors(F.pad(self.vectors, (0, 0, 0, extra)), F.pad(self.mask, (0, extra), value=False))

    @staticmethod
    def cat(parts: list[TokenVectors]) -> TokenVectors:
        width = max(p.vectors.shape[1] for p in parts)
        parts = [p.padded(width) for p in parts]
        return TokenVectors(torch.cat([p.vectors for p in parts]), torch.cat([p.mask for p in parts]))

    def to_list(self) -> list[torch.Tensor]:
        """Each row's scored vectors, (n_i, d)."""
        return [v[m] for v, m in zip(self.vectors, self.mask, strict=True)]


@dataclass
class Embedded:
    """What one forward gives a batch: the single vectors (N, D), the token vectors, or both
    (``embedding: both``). Training handles the pair as one value (rows, order, gradients)."""

    single: torch.Tensor | None = None
    multi: TokenVectors | None = None

    def __len__(self) -> int:
        return len(self.single) if self.single is not None else len(self.multi)

    def __getitem__(self, rows) -> Embedded:
        return Embedded(
            None if self.single is None else self.single[rows], None if self.multi is None else self.multi[rows]
        )

    @staticmethod
    def cat(parts: list[Embedded]) -> Embedded:
        first = parts[0]
        return Embedded(
            None if first.single is None else torch.cat([p.single for p in parts]),
            None if first.multi is None else TokenVectors.cat([p.multi for p in parts]),
        )

    def leaves(self) -> list[torch.Tensor]:
        """The differentiable tensors, single first."""
        return [t for t in (self.single, None if self.multi is None else self.multi.vectors) if t is not None]

    def with_leaves(self, leaves: list[torch.Tensor]) -> Embedded:
        """The same structure holding ``leaves`` (as :meth:`leaves` orders them)."""
        it = iter(leaves)
        single = next(it) if self.single is not None else None
        multi = TokenVectors(next(it), self.multi.mask) if self.multi is not None else None
        return Embedded(single, multi)


def skipped_ids(tokenizer) -> list[int]:
    """Token ids of :data:`SKIPPED_TOKENS` in ``tokenizer`` (those it has)."""
    vocab = tokenizer.get_vocab()
    return [vocab[t] for t in SKIPPED_TOKENS if t in vocab]


def scoring_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """(N, T) bool: real tokens that are not skipped (sentence-transformers' MultiVectorMask rule)."""
    return attention_mask.bool() & ~torch.isin(input_ids, skip.to(input_ids.device))


def mean_maxsim(queries: TokenVectors, candidates: TokenVectors, chunk: int = 64) -> torch.Tensor:
    """(Nq, Nc) MeanMaxSim scores (differentiable); candidates in chunks, so the (q, c, i, j) table
    stays bounded."""
    neg = torch.finfo(queries.vectors.dtype).min
    counts = queries.mask.sum(-1).clamp(min=1).to(queries.vectors.dtype)
    out = []
    for start in range(0, len(candidates), chunk):
        part = candidates[start : start + chunk]
        sims = torch.einsum("qid,cjd->qcij", queries.vectors, part.vectors)
        best = sims.masked_fill(~part.mask[None, :, None, :], neg).amax(-1)
        out.append((best * queries.mask[:, None, :]).sum(-1))
    return torch.cat(out, dim=1) / counts[:, None]


class MultiVectorHead(torch.nn.Module):
    """The projection to ``dim`` components, saved as sentence-transformers' ``Dense`` module
    (reading ``token_embeddings``, no activation), which jfe loads too."""

    def __init__(self, hidden: int, dim: int = 128):
        super().__init__()
        self.linear = torch.nn.Linear(hidden, dim)

    @property
    def dim(self) -> int:
        return self.linear.out_features

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(hidden.to(self.linear.weight.dtype)).float(), dim=-1)

    def save(self, folder: str | os.PathLike) -> Path:
        out = Path(folder) / HEAD_DIR
        out.mkdir(parents=True, exist_ok=True)
        weights = {_WEIGHT: self.linear.weight.detach().float().cpu().contiguous()}
        weights[_BIAS] = self.linear.bias.detach().float().cpu().contiguous()
        save_file(weights, str(out / "model.safetensors"))
        config = {
            "in_features": self.linear.in_features,
            "out_features": self.dim,
            "bias": True,
            "activation_function": "torch.nn.modules.linear.Identity",
            "module_input_name": "token_embeddings",
            "module_output_name": "token_embeddings",
        }
        (out / "config.json").write_text(json.dumps(config, indent=2))
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike) -> MultiVectorHead:
        path = Path(folder) / HEAD_DIR
        try:
            config = json.loads((path / "config.json").read_text())
            weights = load_file(str(path / "model.safetensors"))
            head = cls(int(config["in_features"]), int(config["out_features"]))
            head.linear.load_state_dict({"weight": weights[_WEIGHT], "bias": weights[_BIAS]})
        except (OSError, KeyError, ValueError, RuntimeError) as err:
            raise ValueError(f"{path}: not a readable multi-vector head ({err})") from err
        return head


def multi_vector_st_files(prompts: dict[str, str]) -> dict[str, object]:
    """The files (beside the shared Transformer ones) that make ``MultiVectorEncoder(folder)`` give
    jfe's token vectors and MeanMaxSim scores."""
    modules = [
        ("", "sentence_transformers.base.modules.transformer.Transformer"),
        (HEAD_DIR, "sentence_transformers.base.modules.dense.Dense"),
        ("2_MultiVectorMask", "sentence_transformers.multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask"),
        ("3_Normalize", "sentence_transformers.base.modules.normalize.Normalize"),
    ]
    return {
        "modules.json": [{"idx": i, "name": str(i), "path": p, "type": t} for i, (p, t) in enumerate(modules)],
        "config_sentence_transformers.json": {
            "model_type": "MultiVectorEncoder",
            "prompts": {"document": "", **prompts},
            "default_prompt_name": None,
            "similarity_fn_name": "meanmaxsim",
        },
        "2_MultiVectorMask/config.json": {
            "skiplist_words": list(SKIPPED_TOKENS),
            "skiplist_tasks": ["query", "document"],
            "keep_only_token_ids": None,
        },
        "3_Normalize/config.json": {"module_input_name": "token_embeddings"},
    }
