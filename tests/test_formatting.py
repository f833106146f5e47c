import pytest
from transformers import AutoProcessor

from jfe.formatting import EMBEDDING_CHAT_TEMPLATE, EmbedInput, build_messages, render
from tests.conftest import make_image


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    proc.chat_template = EMBEDDING_CHAT_TEMPLATE
    return proc


def _render(processor, item, instruction=None):
    return render(processor, [item], [instruction], max_text_tokens=512)[0]


def test_prompt_names_the_modality_and_puts_the_image_first(processor):
    img = make_image(0)
    assert _render(processor, EmbedInput(text="a red seven")) == (
        "<|im_start|>user\na red seven\nSummarize above sentence in one word:<|im_end|>\n<|im_start|>assistant\n"
    )
    assert _render(processor, EmbedInput(image=img)) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>\n"
        "Summarize above image in one word:<|im_end|>\n<|im_start|>assistant\n"
    )
    assert _render(processor, EmbedInput(text="rotated", image=img), "Find the digit.") == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find the digit. rotated\n"
        "Summarize above image and sentence in one word:<|im_end|>\n<|im_start|>assistant\n"
    )


def test_instruction_is_a_system_message_as_sentence_transformers_sends_it():
    messages = build_messages(EmbedInput(text="q"), "Find it.")
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": "Find it."}]}
    assert messages[1]["content"] == [{"type": "text", "text": "q"}]


def test_flat_string_content_renders_like_structured(processor):
    flat = [{"role": "system", "content": "Find it."}, {"role": "user", "content": "q"}]
    structured = build_messages(EmbedInput(text="q"), "Find it.")
    assert processor.apply_chat_template(flat, tokenize=False) == processor.apply_chat_template(
        structured, tokenize=False
    )


def test_truncation_cuts_content_and_keeps_prompt(processor):
    long_text = "seven " * 400
    items = [EmbedInput(text=long_text), EmbedInput(image=make_image(0)), EmbedInput(text="short")]
    long, image_only, short = render(processor, items, ["Find it.", None, None], max_text_tokens=20)
    content = long.split("Find it. ")[1].split("\nSummarize")[0]
    assert len(processor.tokenizer(content, add_special_tokens=False)["input_ids"]) == 20
    assert long.endswith("Summarize above sentence in one word:<|im_end|>\n<|im_start|>assistant\n")
    assert "<|image_pad|>" in image_only and "\nshort\n" in short
    # the batched rendering equals the chat template applied input by input
    for item, instruction, got in zip(items[1:], [None, None], [image_only, short], strict=True):
        assert processor.apply_chat_template(build_messages(item, instruction), tokenize=False) == got


class _Spy:
    """Wraps a processor's apply_chat_template, recording how many conversations each call renders."""

    def __init__(self, processor):
        self.inner, self.calls = processor.apply_chat_template, []

    def __call__(self, conversations, **kwargs):
        self.calls.append(len(conversations))
        return self.inner(conversations, **kwargs)


def test_rendering_is_remembered_per_template_and_stays_exact(processor, tiny_model_dir, monkeypatch):
    # texts no other test renders, so nothing is remembered from before
    items = [
        EmbedInput(text="cache probe seven", image=make_image(0)),
        EmbedInput(text="cache probe seven"),  # the same text without the image is another prompt
        EmbedInput(text="cache probe x"),
    ]
    instructions = ["Find it.", "Find it.", None]
    pairs = list(zip(items, instructions, strict=True))
    uncached = [processor.apply_chat_template(build_messages(it, i), tokenize=False) for it, i in pairs]
    spy = _Spy(processor)
    monkeypatch.setattr(processor, "apply_chat_template", spy)
    first = render(processor, items, instructions, max_text_tokens=512)
    assert first == uncached and spy.calls == [3]  # one call for the batch, all three new
    assert len(set(first)) == 3
    # a repeat, in another order and with another image of the same text: nothing rendered again
    again = render(
        processor, [items[1], EmbedInput(text="cache probe seven", image=make_image(1))], instructions[:2], 512
    )
    assert again == [first[1], first[0]] and spy.calls == [3]
    # one new row among remembered ones: only it is rendered
    mixed = [*items, EmbedInput(text="cache probe new")]
    assert render(processor, mixed, [*instructions, "Find it."], 512)[:3] == first and spy.calls == [3, 1]
    # another instruction for the same text is another prompt
    other_instruction = render(processor, [items[1]], ["Look it up."], 512)
    assert other_instruction[0] != first[1] and spy.calls == [3, 1, 1]

    # a processor with another template gets its own prompts, not those remembered for the first
    other = AutoProcessor.from_pretrained(tiny_model_dir)
    other.chat_template = EMBEDDING_CHAT_TEMPLATE.replace("in one word", "in a word")
    other_spy = _Spy(other)
    monkeypatch.setattr(other, "apply_chat_template", other_spy)
    swapped = render(other, items, instructions, 512)
    assert other_spy.calls == [3]
    assert all(s == f.replace("in one word", "in a word") != f for s, f in zip(swapped, first, strict=True))
    for item, instruction, got in zip(items, instructions, swapped, strict=True):
        assert other.apply_chat_template(build_messages(item, instruction), tokenize=False) == got
    # and the first template's prompts are still served to the first processor
    assert render(processor, items, instructions, 512) == first and spy.calls == [3, 1, 1]
