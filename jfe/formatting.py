"""The one place where an input becomes the token sequence the model embeds.

Training, ``Embedder.encode``, the export CLI and sentence-transformers all go through
``EMBEDDING_CHAT_TEMPLATE``: jfe installs it on the processor and saves it with the model, so any
client that applies the model's chat template gets exactly the tokens jfe trained on::

    <|im_start|>user
    <|vision_start|><|image_pad|><|vision_end|>{instruction} {text}
    Summarize above image and sentence in one word:<|im_end|>
    <|im_start|>assistant

A system message carries the task instruction: that is how sentence-transformers passes a
``prompt``, and jfe builds the same messages, so both paths render identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from transformers import BatchFeature

# Qwen2-VL, Qwen2.5-VL and Qwen3-VL share ChatML and these vision markers, so one template serves
# the whole family. The assistant turn is always opened (whatever ``add_generation_prompt`` says):
# the embedding is read from its first position, and clients must not be able to forget it.
EMBEDDING_CHAT_TEMPLATE = (
    "{%- set ns = namespace(instruction='', text='', images=0, texts=[]) -%}"
    "{%- for message in messages -%}"
    "{%- set ns.texts = [message['content']] if message['content'] is string else [] -%}"
    # A loop over message['content'] itself: vLLM's server detects from it that the template takes
    # OpenAI-style content parts. Without one it renders each message's content as a single string
    # (image placeholders and text joined), which would put the instruction before the image.
    "{%- if message['content'] is not string -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}"
    "{%- set ns.texts = ns.texts + [part['text']] -%}"
    "{%- elif part['type'] == 'image' -%}"
    "{%- set ns.images = ns.images + 1 -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- for text in ns.texts -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- set ns.instruction = (ns.instruction ~ ' ' ~ text) | trim -%}"
    "{%- else -%}"
    "{%- set ns.text = (ns.text ~ ' ' ~ text) | trim -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endfor -%}"
    "{%- if ns.images and ns.text -%}{%- set what = 'image and sentence' -%}"
    "{%- elif ns.images -%}{%- set what = 'image' -%}"
    "{%- else -%}{%- set what = 'sentence' -%}{%- endif -%}"
    "<|im_start|>user\n"
    "{% for _ in range(ns.images) %}<|vision_start|><|image_pad|><|vision_end|>{% endfor -%}"
    "{{ (ns.instruction ~ ' ' ~ ns.text) | trim }}\n"
    "Summarize above {{ what }} in one word:<|im_end|>\n"
    # Inside an expression: Jinja drops a template's final literal newline.
    "{{ '<|im_start|>assistant\\n' }}"
)


@dataclass
class EmbedInput:
    """One thing to embed: text, an image, or both (never neither: an empty text and no image
    would embed only the prompt, the same vector for every such item)."""

    text: str | None = None
    image: Image.Image | None = None

    def __post_init__(self) -> None:
        if not self.text and self.image is None:
            raise ValueError("an input needs a text or an image; this one has neither (an empty text and no image)")


def build_messages(item: EmbedInput, instruction: str | None = None) -> list[dict]:
    """Chat messages for one input, in the shape sentence-transformers builds too."""
    content: list[dict] = []
    if item.image is not None:
        content.append({"type": "image", "image": item.image})
    if item.text:
        content.append({"type": "text", "text": item.text})
    messages = [{"role": "user", "content": content}]
    if instruction:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": instruction}]})
    return messages


def cut_texts(processor: Any, texts: Sequence[str | None], max_text_tokens: int) -> list[str | None]:
    """``texts`` as jfe embeds them: each cut to its first ``max_text_tokens`` tokens (decoded back
    to a string) before any prompt is added, so the prompt and the pooled token always survive.

    Another client of a saved model (sentence-transformers, vLLM) sees the whole text; give it
    ``cut_texts(its_processor_or_tokenizer, texts, max_text_tokens)`` for texts over the limit and
    it embeds them as jfe does (``jfe encode --engine vllm`` does so itself)."""
    ids = _over_limit(processor, texts, max_text_tokens)
    return [_tokenizer(processor).decode(ids[text][:max_text_tokens]) if text in ids else text for text in texts]


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def _over_limit(processor: Any, texts: Sequence[str | None], max_text_tokens: int) -> dict[str, list[int]]:
    """The token ids of each text of ``texts`` longer than ``max_text_tokens`` tokens."""
    # A byte-level BPE token is at least one byte, so a text of at most max_text_tokens UTF-8 bytes
    # cannot be over the limit: only longer ones are tokenised (most captions never are).
    longer = list({text for text in texts if text and len(text.encode("utf-8")) > max_text_tokens})
    if not longer:
        return {}
    rows = _tokenizer(processor)(longer, add_special_tokens=False)["input_ids"]
    return {text: row for text, row in zip(longer, rows, strict=True) if len(row) > max_text_tokens}


def count_cut(processor: Any, texts: Sequence[str | None], max_text_tokens: int) -> int:
    """How many of ``texts`` :func:`cut_texts` cuts."""
    ids = _over_limit(processor, texts, max_text_tokens)
    return sum(text in ids for text in texts)


def render(processor, items: list[EmbedInput], instructions: list[str | None], max_text_tokens: int) -> list[str]:
    """Prompt strings for a batch (image placeholders not yet expanded)."""
    if not items:
        return []
    # One tokenizer call and one chat-template call for the whole batch: per-row calls cost
    # several times more, and this runs for every training batch.
    texts = cut_texts(processor, [item.text for item in items], max_text_tokens)
    cut = [EmbedInput(text, item.image) for text, item in zip(texts, items, strict=True)]
    template = processor.chat_template
    keys = [(template, i, item.text, item.image is not None) for item, i in zip(cut, instructions, strict=True)]
    missing = {key: item for key, item in zip(keys, cut, strict=True) if key not in _RENDERED}
    if missing:
        conversations = [build_messages(item, key[1]) for key, item in missing.items()]
        if len(_RENDERED) + len(missing) > _RENDER_CACHE_SIZE:
            _RENDERED.clear()
        _RENDERED.update(
            zip(
                missing,
                processor.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True),
                strict=True,
            )
        )
    return [_RENDERED[key] for key in keys]


# A prompt depends only on the template, the instruction, the text and whether there is an image,
# and training repeats the same few instructions and captions every epoch: Jinja rendering was a
# quarter of the time spent collating a training batch.
_RENDERED: dict[tuple, str] = {}
_RENDER_CACHE_SIZE = 200_000


def to_features(processor, prompts: list[str], items: list[EmbedInput]) -> BatchFeature:
    """Model features for prompts :func:`render` made for ``items``: one processor call for the batch,
    which expands each image placeholder and consumes the images in placeholder order."""
    images = [item.image for item in items if item.image is not None]
    return processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
