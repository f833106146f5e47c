import random
from collections import Counter

import pytest

from jfe.data.mimic import MimicOptions, augment

N = 20_000


def _outcomes(options):
    rng = random.Random(0)
    counts = Counter()
    for _ in range(N):
        text, image = augment("red", "img", options, rng)
        counts[("text" if text else "") + ("+image" if image else "")] += 1
    return counts


def test_caption_dropout_rate():
    counts = _outcomes(MimicOptions(caption_dropout=0.3))
    assert abs(counts["+image"] / N - 0.3) < 0.015
    assert counts["text"] == 0


def test_modality_mixin_rate_and_split():
    counts = _outcomes(MimicOptions(modality_mixin=0.4))
    assert abs((counts["+image"] + counts["text"]) / N - 0.4) < 0.015
    assert abs(counts["+image"] / N - 0.2) < 0.015
    assert abs(counts["text"] / N - 0.2) < 0.015


def test_off_by_default_and_single_modality_untouched():
    assert not MimicOptions().active
    assert _outcomes(MimicOptions()) == {"text+image": N}
    rng = random.Random(0)
    strong = MimicOptions(caption_dropout=1.0, modality_mixin=1.0)
    assert augment("only text", None, strong, rng) == ("only text", None)
    assert augment(None, "img", strong, rng) == (None, "img")


def test_bad_options():
    with pytest.raises(ValueError, match=r"caption_dropout must be in \[0, 1\], got 1.5"):
        MimicOptions(caption_dropout=1.5)
    with pytest.raises(ValueError, match="apply_to must be"):
        MimicOptions(apply_to="docs")
    assert MimicOptions(caption_dropout=0.1, apply_to="query").applies("query")
    assert not MimicOptions(caption_dropout=0.1, apply_to="query").applies("candidate")
