import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
from PIL import Image

from jfe.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-init tiny Qwen2-VL checkpoint, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-vl", arch="qwen2_vl", seed=0)


@pytest.fixture(scope="session")
def tiny_model_dirs(tiny_model_dir, tmp_path_factory):
    """Both tiny architectures, keyed by arch name."""
    qwen25 = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl", arch="qwen2_5_vl", seed=0)
    return {"qwen2_vl": tiny_model_dir, "qwen2_5_vl": qwen25}


def make_image(seed: int, size: tuple[int, int] = (16, 16)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture
def images():
    return [make_image(i, size) for i, size in enumerate([(16, 16), (8, 24), (32, 32), (12, 12)])]
