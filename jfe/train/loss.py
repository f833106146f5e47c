"""InfoNCE over queries and candidates, with candidates gathered from every rank (with gradient).

Layout of one rank's candidates: its queries' positives first (query i -> candidate i), then any
hard negatives. All ranks' candidates become extra columns for every query, so each query sees
in-batch negatives from the whole global batch plus every hard negative.

The same loss serves single vectors (dot products) and token vectors (:class:`TokenVectors`,
scored by MeanMaxSim, :func:`jfe.multivector.mean_maxsim`).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather as all_gather_with_grad

from jfe.multivector import TokenVectors, mean_maxsim

Vectors = torch.Tensor | TokenVectors


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate every rank's rows (ranks may hold different counts) and return the offset of
    this rank's rows. Gradients flow back to each rank's own rows: the backward of the gather sums
    the gradients every rank's loss sends to them, so averaging gradients over ranks (as DDP and
    DeepSpeed do) yields exactly the gradient of the global mean loss; no extra world-size factor."""
    if not distributed():
        return x, 0
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    longest = max(counts)
    padded = F.pad(x, (0, 0, 0, longest - x.shape[0])) if x.shape[0] < longest else x
    parts = all_gather_with_grad(padded)
    rank = dist.get_rank()
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)]), sum(counts[:rank])


def gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's id rows (no gradient), rank order as in gather_with_grad. ``ids``
    is (N,) or (N, P); ranks may differ in N and P, and rows are padded with -1 to the widest P."""
    if not distributed():
        return ids
    grid = ids[:, None] if ids.dim() == 1 else ids
    shape = torch.tensor(grid.shape, device=ids.device)
    shapes = [torch.zeros_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    longest, widest = torch.stack(shapes).max(0).values.tolist()
    padded = F.pad(grid, (0, widest - grid.shape[1], 0, longest - grid.shape[0]), value=-1)
    parts = [torch.empty_like(padded) for _ in shapes]
    dist.all_gather(parts, padded)
    rows = torch.cat([p[: int(s[0])] for p, s in zip(parts, shapes, strict=True)])
    return rows if ids.dim() == 2 else rows[:, 0]


def gather_tokens(x: TokenVectors) -> tuple[TokenVectors, int]:
    """Every rank's token sets (with gradient) and this rank's row offset, as
    :func:`gather_with_grad`; each rank pads its sets to the widest of any rank before the gather."""
    if not distributed():
        return x, 0
    width = torch.tensor([x.vectors.shape[1]], device=x.vectors.device)
    dist.all_reduce(width, op=dist.ReduceOp.MAX)
    x = x.padded(int(width))
    n, t, d = x.vectors.shape
    flat, offset = gather_with_grad(x.vectors.reshape(n, t * d))
    mask = gather_ids(x.mask.long()) > 0
    return TokenVectors(flat.reshape(-1, t, d), mask), offset


def _gather(x: Vectors) -> tuple[Vectors, int]:
    return gather_tokens(x) if isinstance(x, TokenVectors) else gather_with_grad(x)


def similarity(queries: Vectors, candidates: Vectors) -> torch.Tensor:
    """(queries, candidates) scores: dot products, or MeanMaxSim for token vectors."""
    if isinstance(queries, TokenVectors):
        return mean_maxsim(queries, candidates)
    return queries @ candidates.T


def _relevant(positive_ids: torch.Tensor, candidate_ids: torch.Tensor) -> torch.Tensor:
    """(queries, candidates) bool: the candidate's id is one of the query's ``positive_ids``."""
    return (candidate_ids[None, :, None] == positive_ids[:, None, :]).any(-1)


def false_negative_mask(
    positive_ids: torch.Tensor, candidate_ids: torch.Tensor, positive_offset: int = 0
) -> torch.Tensor:
    """(queries, candidates) bool mask of columns that are positives of the row's query but not
    its target column: in-batch false negatives. ``positive_ids`` is (queries, P) padded with -1."""
    hit = _relevant(positive_ids, candidate_ids)
    targets = torch.arange(positive_ids.shape[0], device=hit.device) + positive_offset
    hit[torch.arange(positive_ids.shape[0], device=hit.device), targets] = False
    return hit


def info_nce(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    temperature: torch.Tensor | float,
    positive_offset: int = 0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``queries @ candidates.T / temperature`` with query i's positive at
    column ``positive_offset + i``; ``mask`` removes columns from a row's softmax. Inputs are
    L2-normalised embeddings."""
    return nce(queries @ candidates.T / temperature, positive_offset, mask)


def nce(scores: torch.Tensor, positive_offset: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`info_nce` on a (queries, candidates) table of scaled scores."""
    if mask is not None:
        scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
    targets = torch.arange(scores.shape[0], device=scores.device) + positive_offset
    return F.cross_entropy(scores, targets)


def contrastive_loss(
    queries: Vectors,
    candidates: Vectors,
    temperature: torch.Tensor | float,
    gather: bool = True,
    positive_ids: torch.Tensor | None = None,
    candidate_ids: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """This rank's share of the global InfoNCE loss (see :func:`gather_with_grad` for the scaling).

    With ``positive_ids`` (each query's relevant candidate ids) and ``candidate_ids``, candidates
    relevant to a query other than its target are masked out instead of counting as negatives.
    ``symmetric`` averages in the reverse direction: each query's positive picks its query among
    every query of the global batch (hard negatives have no query, so they only act as columns).
    ``queries`` and ``candidates`` are single vectors, or both :class:`TokenVectors`."""
    own = len(queries)
    device = queries.mask.device if isinstance(queries, TokenVectors) else queries.device
    all_candidates, offset = _gather(candidates) if gather else (candidates, 0)
    all_candidate_ids = gather_ids(candidate_ids) if gather and candidate_ids is not None else candidate_ids
    masking = positive_ids is not None and candidate_ids is not None
    mask = None
    if masking:
        mask = false_negative_mask(positive_ids.to(device), all_candidate_ids.to(device), offset)
    loss = nce(similarity(queries, all_candidates) / temperature, offset, mask)
    if not symmetric:
        return loss
    all_queries, query_offset = _gather(queries) if gather else (queries, 0)
    reverse_mask = None
    if masking:
        all_positive_ids = gather_ids(positive_ids) if gather else positive_ids
        # another query that counts this rank's positive i as relevant is not a negative of row i
        own_ids = candidate_ids[:own].to(device)
        reverse_mask = _relevant(all_positive_ids.to(device), own_ids).T
        rows = torch.arange(own, device=device)
        reverse_mask[rows, rows + query_offset] = False
    # the scores are the forward direction's (a query's vectors against a candidate's), transposed
    reverse = nce(similarity(all_queries, candidates[:own]).T / temperature, query_offset, reverse_mask)
    return (loss + reverse) / 2


class Temperature(torch.nn.Module):
    """A fixed temperature, or a learnable one kept within [minimum, maximum] (stored as a log)."""

    def __init__(self, initial: float = 0.05, learnable: bool = False, minimum: float = 0.01, maximum: float = 1.0):
        super().__init__()
        if not minimum <= initial <= maximum:
            raise ValueError(f"temperature {initial} is outside [{minimum}, {maximum}]")
        self.minimum, self.maximum = minimum, maximum
        # shape (1,), not a scalar: ZeRO-3 cannot partition 0-dim parameters
        self.log_value = torch.nn.Parameter(torch.tensor([math.log(initial)]), requires_grad=learnable)

    def forward(self) -> torch.Tensor:
        return self.log_value.exp().clamp(self.minimum, self.maximum)[0]
