"""GradCache (Gao et al., 2021): the gradients of a large contrastive batch at the memory of one chunk.

1. Embed every chunk without building graphs.
2. Compute the loss on those embeddings (gathered across ranks like the plain path, with the same
   temperature) and its gradient with respect to each embedding.
3. When the trainer calls ``backward`` on the returned loss, re-embed each chunk with a graph,
   under the random state it had in step 1 (same dropout masks), backpropagate the cached
   gradients to the parameters, and hand the summed gradients to the parameters in one go.

Under ZeRO-3 parameters are partitioned and cannot take a whole-batch gradient this way, so the
config refuses GradCache with ZeRO-3.

The trainer sees one forward and one backward per step, as with the plain path, so gradient
accumulation, loss scaling and the optimiser step are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

from jfe.lengths import in_batch_order
from jfe.multivector import Embedded


@contextmanager
def _replayed_rng(state: tuple[torch.Tensor, list[torch.Tensor]]):
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        torch.set_rng_state(state[0])
        if cuda:
            torch.cuda.set_rng_state_all(state[1])
        yield


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


class _Replay(torch.autograd.Function):
    """Identity on the loss value; its backward runs the chunk replay."""

    @staticmethod
    def forward(ctx, loss_value: torch.Tensor, anchor: torch.Tensor, replay: Callable[[torch.Tensor], None]):
        ctx.replay = replay
        return loss_value.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        ctx.replay(grad_output)
        return None, None, None


def _embed_without_graph(embed, chunks: Sequence, counts: Sequence[int]):
    states, parts = [], []
    with torch.no_grad():
        for features, count in zip(chunks, counts, strict=True):
            states.append(_rng_state())
            parts.append(embed(features, count))
    return Embedded.cat(parts), states


def _chunk_grads(cached: list[torch.Tensor], emb: Embedded, start: int) -> list[torch.Tensor]:
    """The cached gradients of ``emb``'s rows (the chunk's ``start``...), each cut to the chunk's
    own width (token vectors were padded to the widest chunk's)."""
    return [
        g[start : start + len(emb)][tuple(slice(n) for n in leaf.shape)]
        for g, leaf in zip(cached, emb.leaves(), strict=True)
    ]


def gradcache_loss(model, query: tuple, candidates: tuple, ids: dict) -> torch.Tensor:
    """The contrastive loss of the whole batch; its backward pushes gradients chunk by chunk.

    ``query`` and ``candidates``: (chunks, real rows per chunk, batch row of each chunk row or None).
    """
    (query_chunks, query_rows, query_order), (cand_chunks, cand_rows, cand_order) = query, candidates
    q, q_states = _embed_without_graph(model.embed, query_chunks, query_rows)
    c, c_states = _embed_without_graph(model.embed, cand_chunks, cand_rows)
    # the gradients are taken in chunk-row order, the order the replay embeds in; putting the rows
    # in batch order (and combining late fusion's parts) is part of the differentiated loss
    q_leaves = [t.requires_grad_(True) for t in q.leaves()]
    c_leaves = [t.requires_grad_(True) for t in c.leaves()]
    q = in_batch_order(q.with_leaves(q_leaves), query_order)
    c = in_batch_order(c.with_leaves(c_leaves), cand_order)
    temperature = model.temperature()
    loss = model.loss(q, c, temperature, ids)
    learn_t = temperature.requires_grad
    leaves = q_leaves + c_leaves
    grads = torch.autograd.grad(loss, [*leaves, temperature] if learn_t else leaves)
    grad_q, grad_c = grads[: len(q_leaves)], grads[len(q_leaves) : len(leaves)]

    def replay(grad_output: torch.Tensor) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        total: list[torch.Tensor | None] = [None] * len(params)
        for chunks, counts, states, cached in (
            (query_chunks, query_rows, q_states, grad_q),
            (cand_chunks, cand_rows, c_states, grad_c),
        ):
            start = 0
            for features, count, state in zip(chunks, counts, states, strict=True):
                with _replayed_rng(state), torch.enable_grad():
                    emb = model.embed(features, count)
                wanted = [g * grad_output for g in _chunk_grads(cached, emb, start)]
                grads = torch.autograd.grad(emb.leaves(), params, wanted, allow_unused=True)
                total = [t if g is None else g if t is None else t + g for t, g in zip(total, grads, strict=True)]
                start += count
        # One pass through the parameters' gradient accumulators for the whole batch: DDP and
        # ZeRO-2 reduce a gradient when it is accumulated, and refuse to do it twice in a step.
        used = [(p, g) for p, g in zip(params, total, strict=True) if g is not None]
        torch.autograd.backward([p for p, _ in used], [g for _, g in used])

    anchor = torch.zeros((), device=loss.device, requires_grad=True)
    out = _Replay.apply(loss.detach(), anchor, replay)
    if learn_t:
        # a zero-valued term whose derivative is d loss / d temperature
        out = out + (temperature - temperature.detach()) * grads[-1]
    return out
