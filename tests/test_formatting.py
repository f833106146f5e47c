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


def test_rendering_is_remembered_per_template_and_stays_exact(processor, tiny_model_dir, monkeypatch):
    from jfe import formatting

    monkeypatch.setattr(formatting, "_RENDERED", {})
    items = [EmbedInput(text="a red seven", image=make_image(0)), EmbedInput(text="a red seven"), EmbedInput(text="x")]
    instructions = ["Find it.", "Find it.", None]
    first = render(processor, items, instructions, max_text_tokens=512)
    assert len(formatting._RENDERED) == 3  # the image row and the text row differ though the text is the same
    calls = []
    monkeypatch.setattr(processor, "apply_chat_template", lambda *a, **k: calls.append(a) or [])
    again = render(processor, [items[1], EmbedInput(text="a red seven", image=make_image(1))], instructions[:2], 512)
    assert again == first[1::-1] and not calls  # another image with the same text: same prompt, nothing rendered
    monkeypatch.undo()

    monkeypatch.setattr(formatting, "_RENDERED", {})
    other = AutoProcessor.from_pretrained(tiny_model_dir)
    other.chat_template = EMBEDDING_CHAT_TEMPLATE.replace("in one word", "in a word")
    assert render(processor, items, instructions, 512) == first
    swapped = render(other, items, instructions, 512)
    assert all(s == f.replace("in one word", "in a word") for s, f in zip(swapped, first, strict=True))
    for item, instruction, got in zip(items, instructions, swapped, strict=True):
        assert other.apply_chat_template(build_messages(item, instruction), tokenize=False) == got
