import itertools

import numpy as np
import pytest
import torch

from jfe import Embedder
from jfe.formatting import EmbedInput, render, to_features
from jfe.lengths import in_batch_order, rendered_token_counts, split_by_length
from tests.conftest import make_image


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").processor


def test_token_counts_equal_the_processors_real_lengths(processor):
    items = [
        EmbedInput(text="a handwritten seven"),
        EmbedInput(image=make_image(0, (16, 16))),
        EmbedInput(text="rotated " * 40, image=make_image(1, (32, 24))),
        EmbedInput(image=make_image(2, (8, 64))),
    ]
    instructions = ["Retrieve the digit.", None, "Find it.", None]
    counts = rendered_token_counts(processor, render(processor, items, instructions, max_text_tokens=20), items)
    for item, instruction, count in zip(items, instructions, counts, strict=True):
        alone = to_features(processor, render(processor, [item], [instruction], 20), [item])
        assert int(alone["attention_mask"].sum()) == count
    assert len(set(counts)) == 4  # image size and truncated text both show


def padded_size(lengths: list[int]) -> int:
    return len(lengths) * max(lengths) if lengths else 0


def _brute_force(lengths: list[int], parts: int) -> int:
    ordered = sorted(lengths)
    best = None
    for cuts in itertools.combinations(range(1, len(ordered)), parts - 1):
        bounds = [0, *cuts, len(ordered)]
        cost = sum(padded_size(ordered[a:b]) for a, b in itertools.pairwise(bounds))
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_split_by_length_is_the_least_padded_split(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 300, size=9).tolist()
    for parts in (1, 2, 3, 4):
        groups = split_by_length(lengths, parts)
        assert sorted(i for g in groups for i in g) == list(range(9))
        assert len(groups) == parts and all(groups)
        assert sum(padded_size([lengths[i] for i in g]) for g in groups) == _brute_force(lengths, parts)


def test_split_by_length_with_fewer_rows_than_parts():
    assert split_by_length([7, 3], 4) == [[1], [0]]
    assert split_by_length([], 4) == []


def test_in_batch_order_inverts_the_chunk_order():
    batch = torch.arange(5.0)[:, None] * 10
    order = torch.tensor([3, 0, 4, 1, 2])  # chunk row p holds batch row order[p]
    assert torch.equal(in_batch_order(batch[order], order), batch)
    assert in_batch_order(batch, None) is batch
