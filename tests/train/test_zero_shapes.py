"""Every stage-2 shape jfe ships, a few steps under the DeepSpeed launcher on 2 CPU ranks (gloo):
LoRA on the LLM, LoRA on the LLM and the vision tower, QLoRA and full training, each under ZeRO-2
and, where allowed, ZeRO-3, on Qwen2-VL; and the LLM + vision LoRA shape of every other family under
ZeRO-2. A recipe or registry change that breaks a ZeRO stage fails here.

Which weights a run may change is checked on the merged final model, against the starting one.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from jfe import Embedder, backbones
from tests.train.launch import deepspeed_losses

STEPS = 2
LANGUAGE = re.compile(r"(.*\.)?language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight")

# name -> (recipe, overrides); every shape starts from the same tiny checkpoint
SHAPES = {
    "lora-language": ("tiny-stage2.yaml", ["lora_target=language"]),
    "lora-language+vision": ("tiny-stage2.yaml", ["lora_target=language+vision"]),
    "qlora": ("tiny-stage2-qlora.yaml", []),
    "full": ("tiny-stage2.yaml", ["trainable=full", "train_vision=true"]),
}
RUNS = [
    (shape, zero, "qwen2_vl") for shape in SHAPES for zero in ("zero2", "zero3") if (shape, zero) != ("qlora", "zero3")
]
RUNS += [("lora-language+vision", "zero2", arch) for arch in backbones.names() if arch != "qwen2_vl"]


@pytest.fixture(scope="module")
def runs(tiny_model_dirs, free_port, tmp_path_factory):
    """(shape, zero, arch) -> losses, launched once each and on demand."""
    done = {}

    def run(shape, zero, arch):
        if (shape, zero, arch) not in done:
            out = tmp_path_factory.mktemp("zero") / f"{arch}-{shape}-{zero}"
            recipe, overrides = SHAPES[shape]
            fixed = [f"model={tiny_model_dirs[arch]}", "per_device_batch_size=4", "num_negatives=1"]
            losses = deepspeed_losses(
                recipe, zero, free_port(), out, STEPS, *fixed, "dataloader_num_workers=0", *overrides
            )
            done[shape, zero, arch] = out, losses
        return done[shape, zero, arch]

    return run


def _weights(path: Path) -> dict:
    # through the embedder: a generative checkpoint and an exported embedder name their weights apart
    return Embedder.from_pretrained(path, dtype="float32", device="cpu").model.state_dict()


def _changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


def _expected_changes(shape: str, arch: str, keys: set[str]) -> set[str] | None:
    """The weights a shape trains (merged LoRA deltas included), or None where it trains nearly all."""
    if shape == "full":
        return None
    family = backbones.get(arch)
    language = {k for k in keys if LANGUAGE.fullmatch(k)}
    if shape != "lora-language+vision":
        return language
    vision = re.compile(rf"(.*\.)?{family.vision_prefix}\.({family.vision_lora})\.weight")
    return language | {k for k in keys if vision.fullmatch(k)}


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "zero", "arch"), RUNS, ids=["-".join(r) for r in RUNS])
def test_stage2_shape_runs_under_zero(shape, zero, arch, runs, tiny_model_dirs):
    out, losses = runs(shape, zero, arch)
    assert len(losses) == STEPS and np.isfinite(losses).all()
    before = _weights(tiny_model_dirs[arch])
    changed = _changed(before, _weights(out / "final"))
    expected = _expected_changes(shape, arch, set(before))
    if expected is None:
        # full training with the tower: the patch embedding and the LLM move
        assert any("patch_embed" in k for k in changed) and any(LANGUAGE.fullmatch(k) for k in changed)
    else:
        assert expected and changed == expected, sorted(changed ^ expected)[:10]
        assert not any("patch_embed" in k for k in changed)
    vecs = Embedder.from_pretrained(out / "final", dtype="float32", device="cpu").encode(["a red seven", "digit 3"])
    assert np.isfinite(vecs).all()
    if zero == "zero3":
        # partitioning the parameters does not change the optimisation
        np.testing.assert_allclose(losses, runs(shape, "zero2", arch)[1], rtol=1e-3, atol=1e-4)
