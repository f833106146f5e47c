import pytest
import torch

from jfe.data.collator import ContrastiveCollator
from jfe.data.dataset import ContrastiveDataset, ExampleOptions
from jfe.data.pairs import load_pairs
from jfe.train.config import TrainConfig
from jfe.train.model import ContrastiveModel, load_embedder


def _grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch)["loss"]
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss), grads


@pytest.mark.parametrize(
    ("trainable", "symmetric", "dims", "embedding"),
    [
        ("full", False, [], "single"),
        ("lora", False, [], "single"),
        ("full", True, [], "single"),
        ("full", False, [32, 16], "single"),
        ("lora", False, [], "multi"),  # token vectors of different widths per chunk
        ("full", True, [32], "both"),
    ],
)
def test_gradcache_gives_the_full_batch_gradients(tiny_model_dir, mixed_pairs, trainable, symmetric, dims, embedding):
    config = TrainConfig(
        model=str(tiny_model_dir),
        output_dir="unused",
        trainable=trainable,
        learn_temperature=True,
        lora_dropout=0.0,
        symmetric_loss=symmetric,
        matryoshka_dims=dims,  # the Matryoshka terms reach GradCache's cached gradients too
        embedding=embedding,
        multi_dim=16,
    )
    torch.manual_seed(0)
    model = ContrastiveModel(load_embedder(config, str(tiny_model_dir)), config)
    model.train()
    queries, pool = load_pairs(mixed_pairs)
    dataset = ContrastiveDataset(queries, pool, options=ExampleOptions(num_negatives=1))
    examples = [dataset[(i, 0)] for i in range(7)]
    processor = model.embedder.processor

    torch.manual_seed(1)
    full_loss, full = _grads(model, ContrastiveCollator(processor)(examples))
    model.chunk_size = 3
    torch.manual_seed(1)
    cached_loss, cached = _grads(model, ContrastiveCollator(processor, chunk_size=3)(examples))

    assert abs(full_loss - cached_loss) < 1e-5
    assert full.keys() == cached.keys()
    assert "temperature.log_value" in full  # the temperature is trained on the GradCache path too
    assert any(n.startswith("embedder.multi_head.") for n in full) == (embedding != "single")
    worst = max(float((full[n] - cached[n]).abs().max()) for n in full)
    print(f"GradCache ({trainable}, symmetric {symmetric}) max abs gradient difference: {worst:.2e}")
    assert worst <= 1e-5
    assert max(float(g.abs().max()) for g in full.values()) > 1e-4  # gradients are not all ~0


def test_replay_reuses_the_random_state_of_the_first_pass(tiny_model_dir, mixed_pairs):
    """With dropout on, a chunk re-embedded for backward must equal its first, graph-free pass."""
    from jfe.train.gradcache import _embed_without_graph, _replayed_rng

    config = TrainConfig(model=str(tiny_model_dir), output_dir="unused", trainable="lora", lora_dropout=0.3)
    model = ContrastiveModel(load_embedder(config, str(tiny_model_dir)), config).train()
    with torch.no_grad():  # LoRA B starts at zero, which would hide the dropout
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    queries, pool = load_pairs(mixed_pairs)
    examples = [ContrastiveDataset(queries, pool)[(i, 0)] for i in range(4)]
    batch = ContrastiveCollator(model.embedder.processor, chunk_size=2)(examples)
    first, states = _embed_without_graph(model.embed, batch["query"], batch["query_rows"])
    with _replayed_rng(states[1]):
        replayed = model.embed(batch["query"][1], batch["query_rows"][1])
    assert torch.equal(replayed.single.detach(), first.single[2:4])
    # without the replay, dropout draws differ: the check above is not vacuous
    again = model.embed(batch["query"][1], batch["query_rows"][1])
    assert not torch.equal(again.single.detach(), first.single[2:4])
