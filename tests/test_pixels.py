import numpy as np
import pytest
from PIL import Image
from sentence_transformers import SentenceTransformer

from jfe import Embedder, backbones
from jfe.pixels import image_token_budget, image_tokens, placeholder_image, set_pixel_budget
from tests.conftest import make_image


def _image_tokens(embedder, image) -> int:
    features = embedder.features([{"image": image}])
    pad = embedder.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return int((features["input_ids"] == pad).sum())


@pytest.mark.parametrize("max_pixels", [64 * 64, 128 * 128])
def test_the_budget_caps_a_large_photo(tiny_model_dir, max_pixels):
    photo = make_image(0, (3000, 4000))  # 4000 x 3000: 12 M pixels
    embedder = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu", max_pixels=max_pixels)
    budget = image_token_budget(embedder.processor)
    assert budget == max_pixels // (4 * 2) ** 2  # the tiny tower: patch 4, merge 2
    tokens = _image_tokens(embedder, photo)
    assert budget // 2 < tokens <= budget  # the photo fills the budget without passing it


def test_the_budget_is_saved_with_the_model_and_sentence_transformers_follows_it(tiny_model_dir, tmp_path):
    photo = make_image(1, (300, 400))
    capped = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu", max_pixels=48 * 48)
    capped.save(tmp_path / "capped")
    again = Embedder.from_pretrained(tmp_path / "capped", dtype="float32", device="cpu")
    assert _image_tokens(again, photo) == _image_tokens(capped, photo) < 48 * 48 // 64 + 1
    st = SentenceTransformer(str(tmp_path / "capped"), device="cpu")
    diff = np.abs(st.encode([{"image": photo}]) - again.encode([{"image": photo}])).max()
    assert diff <= 1e-5
    default = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    assert _image_tokens(default, photo) != _image_tokens(capped, photo)


def test_bad_bounds_and_the_training_option(tiny_model_dir):
    embedder = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    with pytest.raises(ValueError, match="min_pixels 5000 is above max_pixels 4096"):
        set_pixel_budget(embedder.processor, min_pixels=5000, max_pixels=4096)
    from jfe.train.config import TrainConfig
    from jfe.train.model import load_embedder

    config = TrainConfig(model=str(tiny_model_dir), output_dir="unused", trainable="none", max_pixels=96 * 96)
    trained = load_embedder(config, str(tiny_model_dir))
    assert image_token_budget(trained.processor) == 96 * 96 // 64
    assert _image_tokens(trained, Image.new("RGB", (1000, 1000))) <= 144


@pytest.mark.parametrize("arch", backbones.names())
def test_image_tokens_is_the_processors_own_count_for_every_family(tiny_model_dirs, arch):
    embedder = Embedder.from_pretrained(tiny_model_dirs[arch], dtype="float32", device="cpu", max_pixels=64 * 64)
    for height, width in [(16, 16), (8, 64), (37, 23), (3000, 4000)]:
        image = make_image(height + width, (height, width))
        assert image_tokens(embedder.processor, height, width) == _image_tokens(embedder, image), (height, width)
    # the collator's placeholder image is the cheapest one: a single visual token at the tiny model's min_pixels
    side = placeholder_image(embedder.processor).size
    assert (
        image_tokens(embedder.processor, *side) == _image_tokens(embedder, placeholder_image(embedder.processor)) == 1
    )


def test_a_processor_that_cannot_count_is_an_error_not_zero(tiny_model_dir):
    class NoCount:
        merge_size = 2

    embedder = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    embedder.processor.image_processor = NoCount()
    with pytest.raises(TypeError, match="NoCount cannot count the patches of an image"):
        image_tokens(embedder.processor, 16, 16)
