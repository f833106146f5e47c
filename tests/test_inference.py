import numpy as np
import pytest

from jfe import Embedder
from jfe.formatting import EmbedInput
from jfe.inference import embed_windows
from tests.conftest import make_image


@pytest.fixture(scope="module")
def embedder(tiny_model_dir):
    return Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")


def test_windows_and_batches_change_no_embedding_and_skipped_rows_stay_unset(embedder):
    inputs = [
        EmbedInput(text="a red seven"),
        EmbedInput(image=make_image(0, (16, 16))),
        EmbedInput(text="rotated " * 30, image=make_image(1, (32, 24))),
        EmbedInput(text="x"),
        EmbedInput(image=make_image(2, (8, 8)), text="three"),
    ]
    instructions = ["Find it.", None, None, "Find it.", None]
    rows = [(i, x, t) for i, (x, t) in enumerate(zip(inputs, instructions, strict=True))]
    whole, ok = embed_windows(embedder, [rows], len(rows), batch_size=5)
    assert ok.all()
    # each input alone, in its own batch, is the reference
    alone = np.stack(
        [embed_windows(embedder, [[(0, x, t)]], 1)[0][0] for x, t in zip(inputs, instructions, strict=True)]
    )
    np.testing.assert_allclose(whole, alone, atol=1e-5)
    # other windows and batch sizes, one row unreadable and one window empty: same vectors where embedded
    windows = [[rows[4], (1, None, None)], [], [rows[0], rows[2], rows[3]]]
    split, split_ok = embed_windows(embedder, windows, len(rows), batch_size=2)
    assert split_ok.tolist() == [True, False, True, True, True]
    assert not split[1].any()
    np.testing.assert_allclose(split[split_ok], whole[split_ok], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
