import numpy as np
import pytest
from PIL import Image
from sentence_transformers import SentenceTransformer

from jfe import Embedder, backbones
from jfe.embedder import EmbedderConfig
from jfe.inputs import BadInputError
from tests.conftest import make_image

TOL = 1e-5


@pytest.fixture(scope="module")
def embedder(tiny_model_dir):
    return Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")


def _mixed_inputs(images):
    return [
        "a handwritten seven",
        {"image": images[0]},
        {"text": "a red three, written quickly and slanted to the right", "image": images[1]},
        {"text": "nine"},
        {"image": images[2]},
        {"text": "inverted", "image": images[3]},
    ]


def test_encode_shape_dtype_and_norm(embedder, images):
    vecs = embedder.encode(_mixed_inputs(images))
    assert vecs.shape == (6, embedder.dimension)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    # distinct inputs give distinct embeddings (the model is random but not degenerate)
    assert np.abs(vecs[0] - vecs[3]).max() > 1e-3


@pytest.mark.parametrize("arch", backbones.names())
@pytest.mark.parametrize("side", ["left", "right"])
def test_embedding_alone_equals_embedding_in_padded_mixed_batch(tiny_model_dirs, arch, images, side):
    embedder = Embedder.from_pretrained(tiny_model_dirs[arch], dtype="float32", device="cpu")
    embedder.tokenizer.padding_side = side
    try:
        inputs = _mixed_inputs(images)
        batch = embedder.encode(inputs, batch_size=len(inputs))
        alone = np.concatenate([embedder.encode([x]) for x in inputs])
        # the batch really was padded: inputs differ in token length
        lengths = [int(m.sum()) for m in embedder.features(inputs)["attention_mask"]]
        assert len(set(lengths)) > 1
    finally:
        embedder.tokenizer.padding_side = "left"
    assert np.abs(batch - alone).max() <= TOL


def test_text_only_and_image_only_batches(embedder, images):
    texts = embedder.encode(["one", "two", "three"])
    imgs = embedder.encode(images[:3])
    assert texts.shape == imgs.shape == (3, embedder.dimension)
    mixed = embedder.encode(["one", images[0]])
    assert np.abs(mixed[0] - texts[0]).max() <= TOL
    assert np.abs(mixed[1] - imgs[0]).max() <= TOL


def test_image_path_equals_pil_image(embedder, tmp_path):
    img = make_image(7)
    img.save(tmp_path / "x.png")
    a = embedder.encode([{"image": str(tmp_path / "x.png"), "text": "seven"}])
    b = embedder.encode([{"image": img, "text": "seven"}])
    assert np.abs(a - b).max() <= TOL


def test_instruction_changes_the_query_embedding(embedder):
    plain = embedder.encode(["a handwritten seven"])
    instructed = embedder.encode(["a handwritten seven"], instruction="Retrieve an image of the digit described.")
    per_input = embedder.encode(
        ["a handwritten seven", "x"], instruction=["Retrieve an image of the digit described.", None]
    )
    assert np.abs(plain - instructed).max() > 1e-3
    assert np.abs(per_input[0] - instructed[0]).max() <= TOL
    with pytest.raises(ValueError, match="2 instructions for 1 inputs"):
        embedder.encode(["x"], instruction=["a", "b"])


def test_truncation_keeps_prompt_and_distinguishes_long_texts(embedder):
    embedder.config.max_text_tokens = 32
    try:
        shared = "seven " * 40  # longer than the limit on its own
        a, b = shared + "red", shared + "blue"
        prefix_a, prefix_b = "red " + shared, "blue " + shared
        features = embedder.features([a])
        assert int(features["attention_mask"].sum()) < 60  # the 241-token text was cut
        decoded = embedder.tokenizer.decode(features["input_ids"][0])
        assert decoded.endswith("seven\nSummarize above sentence in one word:<|im_end|>\n<|im_start|>assistant\n")
        vecs = embedder.encode([a, b, prefix_a, prefix_b])
    finally:
        embedder.config.max_text_tokens = 512
    # the part after the cut is gone: a and b embed the same
    assert np.abs(vecs[0] - vecs[1]).max() <= TOL
    # the part kept before the cut still counts
    assert np.abs(vecs[2] - vecs[3]).max() > 1e-3


def test_save_then_load_gives_identical_embeddings(embedder, images, tmp_path):
    inputs = _mixed_inputs(images)
    before = embedder.encode(inputs)
    embedder.save(tmp_path / "saved")
    reloaded = Embedder.from_pretrained(tmp_path / "saved", dtype="float32", device="cpu")
    assert np.abs(reloaded.encode(inputs) - before).max() == 0.0
    assert not list(tmp_path.glob(".saved.*")), "temporary folder left behind"


@pytest.mark.parametrize("arch", backbones.names())
def test_sentence_transformers_parity(tiny_model_dirs, arch, images, tmp_path):
    jfe_model = Embedder.from_pretrained(tiny_model_dirs[arch], dtype="float32", device="cpu")
    jfe_model.config.prompts = {"query": "Retrieve an image of the digit described."}
    folder = jfe_model.save(tmp_path / arch)
    st = SentenceTransformer(str(folder), device="cpu")
    cases = {
        "text": [{"text": "a handwritten seven"}, {"text": "nine"}],
        "image": [{"image": images[0]}, {"image": images[1]}],
        "image+text": [{"text": "inverted", "image": images[2]}, {"text": "red", "image": images[3]}],
    }
    for name, inputs in cases.items():
        diff = np.abs(st.encode(inputs) - jfe_model.encode(inputs)).max()
        assert diff <= TOL, f"{arch} {name}: max abs diff {diff}"
    query = ["a handwritten seven", "a handwritten nine"]
    via_st = st.encode(query, prompt_name="query")
    via_jfe = jfe_model.encode(query, instruction="Retrieve an image of the digit described.")
    assert np.abs(via_st - via_jfe).max() <= TOL
    assert np.abs(via_st - st.encode(query)).max() > 1e-3  # the prompt really was applied


def test_bad_inputs_name_the_input(embedder, tmp_path):
    with pytest.raises(BadInputError, match=r"input 1: image file not found: .*missing\.png"):
        embedder.encode(["fine", {"image": str(tmp_path / "missing.png")}])
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not a png")
    with pytest.raises(BadInputError, match=r"input 0: not a readable image: .*notes\.png"):
        embedder.encode([{"image": str(not_image), "text": "x"}])
    with pytest.raises(BadInputError, match="input 2: has neither text nor image"):
        embedder.encode(["a", "b", {"text": None, "image": None}])
    with pytest.raises(BadInputError, match="input 0: has neither text nor image"):
        embedder.encode([""])
    with pytest.raises(BadInputError, match=r"input 0: unknown keys \['caption'\]"):
        embedder.encode([{"caption": "x"}])
    with pytest.raises(BadInputError, match=r"input 0: expected str, PIL\.Image or dict, got int"):
        embedder.encode([3])


def test_grayscale_image_is_converted(embedder):
    gray = Image.fromarray(np.full((16, 16), 128, dtype=np.uint8), mode="L")
    rgb = gray.convert("RGB")
    assert np.abs(embedder.encode([gray]) - embedder.encode([rgb])).max() <= TOL


def test_a_checkpoints_own_template_renders_embeds_saves_and_matches_sentence_transformers(
    tiny_model_dir, images, tmp_path
):
    own = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu", chat_template="checkpoint")
    instruction = "Retrieve an image of the digit described."
    prompt = own.features(["a handwritten seven"], instruction=instruction)["input_ids"][0]
    text = own.tokenizer.decode(prompt)
    # the tiny checkpoint's generative ChatML template, with the assistant turn opened; no jfe prompt
    assert text.startswith(f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\na handwritten seven")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n") and "Summarize" not in text
    jfe_vecs = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").encode(_mixed_inputs(images))
    own_vecs = own.encode(_mixed_inputs(images))
    assert np.abs(own_vecs - jfe_vecs).max() > 1e-3
    own.config.prompts = {"query": instruction}
    folder = own.save(tmp_path / "own")
    again = Embedder.from_pretrained(folder, dtype="float32", device="cpu")
    assert again.config.chat_template == "checkpoint"
    assert np.abs(again.encode(_mixed_inputs(images)) - own_vecs).max() == 0.0
    st = SentenceTransformer(str(folder), device="cpu")
    # a generative template writes parts in message order: sentence-transformers follows the dict's
    # key order, jfe puts the image first (as Qwen, GME and Qwen3-VL-Embedding do)
    inputs = [{"text": "nine"}, {"image": images[0]}, {"image": images[1], "text": "inverted"}]
    assert np.abs(st.encode(inputs) - own.encode(inputs)).max() <= TOL
    query = ["a handwritten seven"]
    assert np.abs(st.encode(query, prompt_name="query") - own.encode(query, instruction=instruction)).max() <= TOL


def test_the_checkpoint_template_needs_one(tiny_model_dir):
    embedder = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    embedder.processor.chat_template = None
    with pytest.raises(ValueError, match=r"chat_template='checkpoint', but .* ships no chat template"):
        Embedder(embedder.model, embedder.processor, EmbedderConfig(chat_template="checkpoint"))
    with pytest.raises(ValueError, match=r"chat_template='gme' is not one of \('jfe', 'checkpoint'\)"):
        Embedder(embedder.model, embedder.processor, EmbedderConfig(chat_template="gme"))


def test_texts_over_the_limit_embed_as_jfe_does_in_sentence_transformers_once_cut(embedder, images, tmp_path):
    from jfe import cut_texts

    folder = embedder.save(tmp_path / "saved")
    st = SentenceTransformer(str(folder), device="cpu")
    long = " ".join(["a red seven written quickly and slanted to the right"] * 60)  # > 512 tokens
    assert len(embedder.tokenizer(long)["input_ids"]) > embedder.config.max_text_tokens
    inputs = [{"text": long}, {"image": images[0], "text": long}]
    ours = embedder.encode(inputs, instruction="Find it.")
    # the whole text reaches sentence-transformers unless it is cut first, as jfe cuts it
    assert np.abs(st.encode(inputs, prompt="Find it.") - ours).max() > 1e-3
    cut = cut_texts(st.tokenizer, [x["text"] for x in inputs], embedder.config.max_text_tokens)
    assert cut[0] != long and long.startswith(cut[0])
    via_st = st.encode([{"text": cut[0]}, {"image": images[0], "text": cut[1]}], prompt="Find it.")
    assert np.abs(via_st - ours).max() <= TOL


@pytest.mark.parametrize("arch", backbones.names())
def test_saved_weights_carry_the_familys_released_layout_and_reload_identically(
    tiny_model_dirs, arch, images, tmp_path
):
    from safetensors import safe_open

    from jfe.embedder import prefix_weight_names

    model = Embedder.from_pretrained(tiny_model_dirs[arch], dtype="float32", device="cpu")
    folder = model.save(tmp_path / arch)
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        names = list(f.keys())
    prefix = backbones.get(arch).saved_prefix
    # vLLM's Qwen3-VL loader reads only "model.language_model.*" / "model.visual.*"
    assert all(n.startswith(prefix) for n in names)
    assert {n.removeprefix(prefix).split(".")[0] for n in names} == {"language_model", "visual"}
    inputs = _mixed_inputs(images)
    expected = model.encode(inputs)

    def reloaded():
        return Embedder.from_pretrained(folder, dtype="float32", device="cpu").encode(inputs)

    assert np.abs(reloaded() - expected).max() == 0.0
    if prefix:  # renaming again changes nothing
        prefix_weight_names(folder, prefix)
        assert np.abs(reloaded() - expected).max() == 0.0
