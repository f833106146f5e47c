"""LoRA targets: the presets of every family, and targets that must be refused."""

import re

import pytest
import torch

from jfe import Embedder, backbones
from jfe.train.model import checked_lora_target


@pytest.mark.parametrize("arch", backbones.names())
def test_presets_adapt_every_linear_layer_of_the_llm_and_tower_and_never_the_patch_embedding(tiny_model_dirs, arch):
    model = Embedder.from_pretrained(tiny_model_dirs[arch], dtype="float32", device="cpu").model
    family = backbones.get(arch)
    kinds = {name: type(module) for name, module in model.named_modules()}
    linear = {n for n, kind in kinds.items() if kind is torch.nn.Linear}
    llm = {n for n in linear if re.match(r"language_model\.layers\.", n)}
    tower = {n for n in linear if n.startswith(family.vision_prefix + ".")}

    def matched(preset):
        regex = checked_lora_target(model, family.lora_target(preset), preset)
        return {n for n in kinds if re.fullmatch(regex, n)}

    assert matched("language") == llm
    # the tower's every linear layer: blocks, merger (and Qwen3-VL's deepstack mergers)
    assert matched("language+vision") == llm | tower
    assert kinds[f"{family.vision_prefix}.patch_embed.proj"] is torch.nn.Conv3d
    # a regex that is not a preset is used as it is
    assert family.lora_target(r".*\.q_proj") == r".*\.q_proj"


def test_a_target_on_the_patch_embedding_or_on_nothing_is_refused(tiny_model_dir):
    model = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").model
    # the pattern tiny-stage2 had before 0.2, which broke ZeRO-3
    old = r".*(language_model.*\.(q_proj|v_proj)|visual.*\.(qkv|proj|fc1|fc2))"
    with pytest.raises(
        ValueError, match=r"matches modules that are not nn\.Linear: visual\.patch_embed\.proj \(Conv3d\)"
    ):
        checked_lora_target(model, old, old)
    with pytest.raises(ValueError, match=r"lora_target='.\*\\\\.qkvo' matches no module of the model"):
        checked_lora_target(model, r".*\.qkvo", r".*\.qkvo")


@pytest.mark.parametrize("arch", backbones.names())
def test_qlora_quantises_the_llm_of_every_family_and_takes_a_step(tiny_model_dirs, arch):
    import bitsandbytes as bnb

    from jfe.train.config import TrainConfig
    from jfe.train.model import load_embedder

    family = backbones.get(arch)
    config = TrainConfig(
        model=str(tiny_model_dirs[arch]), output_dir="unused", quantization="nf4", lora_dropout=0.0, learning_rate=1e-2
    )
    embedder = load_embedder(config, str(tiny_model_dirs[arch]))
    base = embedder.model.get_base_model()
    kinds = {name: type(module) for name, module in base.named_modules()}
    llm = [n for n in kinds if re.fullmatch(r"language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.base_layer", n)]
    assert llm and all(kinds[n] is bnb.nn.Linear4bit for n in llm)
    # the family's skipped modules (the vision tower) stay in full precision
    tower = [n for n, kind in kinds.items() if n.startswith(family.vision_prefix + ".") and kind is torch.nn.Linear]
    assert tower and not any(kind is bnb.nn.Linear4bit for n, kind in kinds.items() if n.startswith("visual."))
    trainable = {n: p for n, p in embedder.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimiser = torch.optim.AdamW(trainable.values(), lr=1e-2)
    vecs = embedder(**embedder.features(["a red seven", "digit 3"]))
    (-(vecs[0] @ vecs[1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable.values())
    optimiser.step()
    # B starts at zero, so the first step moves every B (A's gradient is still zero)
    assert all(not torch.equal(before[n], p) for n, p in trainable.items() if ".lora_B." in n)
