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
    return torch.cat(parts), states


def gradcache_loss(model, query: tuple, candidates: tuple, ids: dict) -> torch.Tensor:
    """The contrastive loss of the whole batch; its backward pushes gradients chunk by chunk.

    ``query`` and ``candidates``: (chunks, real rows per chunk, batch row of each chunk row or None).
    """
    (query_chunks, query_rows, query_order), (cand_chunks, cand_rows, cand_order) = query, candidates
    q, q_states = _embed_without_graph(model.embed, query_chunks, query_rows)
    c, c_states = _embed_without_graph(model.embed, cand_chunks, cand_rows)
    q = in_batch_order(q, query_order).requires_grad_(True)
    c = in_batch_order(c, cand_order).requires_grad_(True)
    temperature = model.temperature()
    loss = model.loss(q, c, temperature, ids)
    learn_t = temperature.requires_grad
    grads = torch.autograd.grad(loss, [q, c, temperature] if learn_t else [q, c])
    # the replay embeds chunk after chunk, so it takes the gradients in chunk-row order
    grad_q = grads[0] if query_order is None else grads[0][query_order.to(q.device)]
    grad_c = grads[1] if cand_order is None else grads[1][cand_order.to(c.device)]

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
                grads = torch.autograd.grad(emb, params, cached[start : start + count] * grad_output, allow_unused=True)
                total = [t if g is None else g if t is None else t + g for t, g in zip(total, grads, strict=True)]
                start += count
        # One pass through the parameters' gradient accumulators for the whole batch: DDP and
        # ZeRO-2 reduce a gradient when it is accumulated, and refuse to do it twice in a step.
        used = [(p, g) for p, g in zip(params, total, strict=True) if g is not None]
        torch.autograd.backward([p for p, _ in used], [g for _, g in used])

    anchor = torch.zeros((), device=q.device, requires_grad=True)
    out = _Replay.apply(loss.detach(), anchor, replay)
    if learn_t:
        # a zero-valued term whose derivative is d loss / d temperature
        out = out + (temperature - temperature.detach()) * grads[2]
    return out
