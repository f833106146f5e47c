import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from jfe.multivector import TokenVectors, mean_maxsim
from jfe.train.loss import Temperature, contrastive_loss, false_negative_mask, gather_ids, info_nce


def _batch(seed, q=6, c=10, d=8):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(q, d, generator=g), dim=-1), F.normalize(torch.randn(c, d, generator=g), dim=-1)


def test_info_nce_matches_the_definition():
    q, c = _batch(0)
    t = 0.05
    loss = info_nce(q, c, t)
    scores = (q @ c.T) / t
    expected = torch.stack([-(scores[i, i] - torch.logsumexp(scores[i], 0)) for i in range(q.shape[0])]).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    # the temperature is really applied
    assert not torch.allclose(info_nce(q, c, 0.5), loss)


def test_false_negatives_are_masked_but_targets_kept():
    positive_ids = torch.tensor([[10, 11], [11, -1]])
    candidate_ids = torch.tensor([10, 11, 12])
    mask = false_negative_mask(positive_ids, candidate_ids)
    assert mask.tolist() == [[False, True, False], [False, False, False]]
    q, c = _batch(1, q=2, c=3)
    masked = info_nce(q, c, 0.1, mask=mask)
    scores = (q @ c.T) / 0.1
    row0 = -(scores[0, 0] - torch.logsumexp(scores[0, [0, 2]], 0))
    row1 = -(scores[1, 1] - torch.logsumexp(scores[1], 0))
    assert torch.allclose(masked, (row0 + row1) / 2, atol=1e-6)


def test_temperature_bounds():
    t = Temperature(0.05, learnable=True, minimum=0.02)
    assert t.log_value.requires_grad and abs(float(t().detach()) - 0.05) < 1e-6
    with torch.no_grad():
        t.log_value.fill_(-10.0)
    assert abs(float(t()) - 0.02) < 1e-7
    assert not Temperature(0.05).log_value.requires_grad
    with pytest.raises(ValueError, match=r"temperature 0.001 is outside \[0.01, 1.0\]"):
        Temperature(0.001)


def _ids(sizes, n_negatives):
    """Candidate ids (each candidate's row in c_all) and padded positive ids per rank; query 0 also
    counts rank 1's first positive as relevant, so both directions have a false negative to mask,
    and the ranks' positive lists differ in width."""
    n_q = sum(sizes)
    negatives = torch.arange(n_q, n_q + n_negatives).chunk(2)
    ranks = []
    for rank in range(2):
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        candidate_ids = torch.cat([torch.arange(lo, hi), negatives[rank]])
        positive_ids = torch.arange(lo, hi)[:, None]
        if rank == 0:
            extra = torch.full((hi - lo, 1), -1)
            extra[0, 0] = sizes[0]
            positive_ids = torch.cat([positive_ids, extra], dim=1)
        ranks.append((positive_ids, candidate_ids))
    return ranks


def _rank_worker(rank, world, port, q_all, c_all, sizes, symmetric, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    # rank r holds its queries, their positives, and its share of the hard negatives
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    q = q_all[lo:hi].clone().requires_grad_(True)
    negatives = c_all[q_all.shape[0] :].chunk(world)[rank]
    c = torch.cat([c_all[lo:hi], negatives]).clone().requires_grad_(True)
    positive_ids, candidate_ids = _ids(sizes, c_all.shape[0] - q_all.shape[0])[rank]
    ids = {"positive_ids": positive_ids, "candidate_ids": candidate_ids} if symmetric else {}
    loss = contrastive_loss(q, c, 0.05, gather=True, symmetric=symmetric, **ids)
    loss.backward()
    out[rank] = (float(loss), q.grad.clone(), c.grad.clone())
    dist.destroy_process_group()


def _two_ranks(q_all, c_all, sizes, symmetric, port):
    with mp.Manager() as manager:
        out = manager.dict()
        args = (2, port, q_all, c_all, sizes, symmetric, out)
        mp.spawn(_rank_worker, args=args, nprocs=2, join=True)
        return dict(out)


def _one_rank(q_all, c_all, sizes, symmetric):
    """The same batch on one process: columns in gathered order (rank 0's block, then rank 1's);
    with ``symmetric``, also the masked reverse direction, written out from the definition."""
    n_q = q_all.shape[0]
    negatives = c_all[n_q:].chunk(2)
    columns = torch.cat([c_all[: sizes[0]], negatives[0], c_all[sizes[0] : n_q], negatives[1]])
    targets = list(range(sizes[0])) + [sizes[0] + len(negatives[0]) + i for i in range(sizes[1])]
    q = q_all.clone().requires_grad_(True)
    c = columns.clone().requires_grad_(True)
    scores = q @ c.T / 0.05
    if not symmetric:
        loss = F.cross_entropy(scores, torch.tensor(targets))
    else:
        ranks = _ids(sizes, c_all.shape[0] - n_q)
        column_ids = torch.cat([ranks[0][1], ranks[1][1]]).tolist()
        relevant = [set(row.tolist()) - {-1} for r in ranks for row in r[0]]
        forward_mask = torch.tensor([[column_ids[k] in relevant[j] and k != targets[j] for k in range(len(column_ids))]
                                     for j in range(n_q)])  # fmt: skip
        forward = F.cross_entropy(scores.masked_fill(forward_mask, float("-inf")), torch.tensor(targets))
        positives = c[torch.tensor(targets)]  # positive i is candidate id i
        reverse_mask = torch.tensor([[i in relevant[j] and j != i for j in range(n_q)] for i in range(n_q)])
        reverse_scores = (positives @ q.T / 0.05).masked_fill(reverse_mask, float("-inf"))
        assert reverse_mask.any() and forward_mask.any()
        loss = (forward + F.cross_entropy(reverse_scores, torch.arange(n_q))) / 2
    loss.backward()
    return float(loss), q.grad, c.grad


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("sizes", [[3, 3], [3, 2]])
def test_gather_across_two_ranks_equals_one_rank_holding_the_batch(sizes, symmetric, free_port):
    torch.manual_seed(0)
    q_all = F.normalize(torch.randn(sum(sizes), 8), dim=-1)
    c_all = F.normalize(torch.randn(sum(sizes) + 4, 8), dim=-1)
    ranks = _two_ranks(q_all, c_all, sizes, symmetric, free_port())
    full_loss, q_grad, c_grad = _one_rank(q_all, c_all, sizes, symmetric)
    # the global mean loss is the query-weighted mean of the rank losses
    weighted = sum(ranks[r][0] * sizes[r] for r in range(2)) / sum(sizes)
    assert abs(weighted - full_loss) < 1e-5
    if sizes[0] != sizes[1]:
        return
    # equal shares: averaging the ranks' gradients (as DDP and DeepSpeed do) gives exactly the
    # gradient of the one-rank loss, for queries and for every gathered candidate
    assert torch.allclose(torch.cat([ranks[0][1], ranks[1][1]]) / 2, q_grad, atol=1e-6)
    assert torch.allclose(torch.cat([ranks[0][2], ranks[1][2]]) / 2, c_grad, atol=1e-6)


def test_symmetric_loss_is_the_mean_of_both_directions():
    q, c = _batch(2, q=3, c=5)
    forward = info_nce(q, c, 0.05)
    reverse = info_nce(c[:3], q, 0.05)
    assert torch.allclose(contrastive_loss(q, c, 0.05, gather=False, symmetric=True), (forward + reverse) / 2)
    # candidate 1 is also relevant to query 0: the reverse row of candidate 1 drops query 0
    positive_ids = torch.tensor([[10, 11], [11, -1], [12, -1]])
    candidate_ids = torch.tensor([10, 11, 12, 13, 14])
    got = contrastive_loss(q, c, 0.05, gather=False, symmetric=True,
                           positive_ids=positive_ids, candidate_ids=candidate_ids)  # fmt: skip
    forward = info_nce(q, c, 0.05, mask=false_negative_mask(positive_ids, candidate_ids))
    reverse_mask = torch.zeros(3, 3, dtype=torch.bool)
    reverse_mask[1, 0] = True
    reverse = info_nce(c[:3], q, 0.05, mask=reverse_mask)
    assert torch.allclose(got, (forward + reverse) / 2, atol=1e-6)
    assert not torch.allclose(got, contrastive_loss(q, c, 0.05, gather=False, symmetric=True))


def _gather_ids_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    # rank 0 holds three rows of width 2, rank 1 none at all (of width 1)
    flat = torch.tensor([5, 6, 7]) if rank == 0 else torch.zeros(0, dtype=torch.long)
    rows = torch.tensor([[1, 2], [3, -1], [4, 9]]) if rank == 0 else torch.zeros(0, 1, dtype=torch.long)
    out[rank] = (gather_ids(flat).tolist(), gather_ids(rows).tolist())
    dist.destroy_process_group()


def test_gather_ids_pads_widths_and_keeps_an_empty_rank(free_port):
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_gather_ids_worker, args=(2, free_port(), out), nprocs=2, join=True)
        results = dict(out)
    for rank in range(2):
        assert results[rank] == ([5, 6, 7], [[1, 2], [3, -1], [4, 9]])


def _token_sets(seed: int, n: int, width: int, d: int = 8) -> TokenVectors:
    """``n`` token sets of 1..``width`` real vectors each, padded to ``width``."""
    g = torch.Generator().manual_seed(seed)
    vectors = F.normalize(torch.randn(n, width, d, generator=g), dim=-1)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    return TokenVectors(vectors * mask[..., None], mask)


def _multi_worker(rank, world, port, queries, candidates, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    q, c = queries[rank], candidates[rank]
    q = TokenVectors(q.vectors.clone().requires_grad_(True), q.mask)
    c = TokenVectors(c.vectors.clone().requires_grad_(True), c.mask)
    loss = contrastive_loss(q, c, 0.05, gather=True)
    loss.backward()
    out[rank] = (float(loss), q.vectors.grad.clone(), c.vectors.grad.clone())
    dist.destroy_process_group()


def test_token_vectors_gathered_across_ranks_of_different_widths(free_port):
    """Each rank pads its token sets to its own widest (5 and 3 tokens); the gather pads them to
    the widest of any rank, and the loss and gradients equal one rank holding the whole batch."""
    queries = [_token_sets(0, 3, 4), _token_sets(1, 3, 6)]
    candidates = [_token_sets(2, 5, 5), _token_sets(3, 5, 3)]  # 3 positives + 2 hard negatives each
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_multi_worker, args=(2, free_port(), queries, candidates, out), nprocs=2, join=True)
        ranks = dict(out)
    q_all = TokenVectors.cat(queries)
    c_all = TokenVectors.cat(candidates)
    q = TokenVectors(q_all.vectors.clone().requires_grad_(True), q_all.mask)
    c = TokenVectors(c_all.vectors.clone().requires_grad_(True), c_all.mask)
    targets = torch.tensor([0, 1, 2, 5, 6, 7])  # rank 1's positives follow rank 0's five candidates
    loss = F.cross_entropy(mean_maxsim(q, c) / 0.05, targets)
    loss.backward()
    assert abs((ranks[0][0] + ranks[1][0]) / 2 - loss.item()) < 1e-5
    for rank, rows in ((0, slice(0, 3)), (1, slice(3, 6))):
        width = queries[rank].vectors.shape[1]
        assert torch.allclose(ranks[rank][1] / 2, q.vectors.grad[rows, :width], atol=1e-6)
    for rank, rows in ((0, slice(0, 5)), (1, slice(5, 10))):
        width = candidates[rank].vectors.shape[1]
        assert torch.allclose(ranks[rank][2] / 2, c.vectors.grad[rows, :width], atol=1e-6)
