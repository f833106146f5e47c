import json
import math
import re
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from jfe.train.config import TrainConfig, load_config
from jfe.train.model import load_embedder
from jfe.train.trainer import build_dataset, training_arguments

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
LLM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _load(recipe: Path) -> TrainConfig:
    return load_config(str(recipe))


def _family(recipe: Path) -> str:
    """qwen2vl-2b-stage2-lora -> qwen2vl-2b; tiny-stage2-qlora -> tiny."""
    return recipe.stem.split("-stage")[0]


def test_there_are_recipes_for_each_stage_and_size():
    names = {p.stem for p in RECIPES}
    for size in ("2b", "7b"):
        assert {f"qwen2vl-{size}-stage1", f"qwen2vl-{size}-stage2-lora", f"qwen2vl-{size}-stage2-qlora"} <= names
    assert {"tiny-stage1", "tiny-stage2", "tiny-stage2-qlora"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_validates(recipe):
    config = _load(recipe)  # an unknown or mistyped option would raise here
    config.validate()
    assert config.stage == ("adapt" if "stage1" in recipe.stem else "instruct")
    assert 0.01 <= config.temperature <= 0.1
    assert config.max_steps > 0 and config.learning_rate > 0
    if "qlora" in recipe.stem:
        assert config.quantization == "nf4" and config.trainable == "lora"
    # warm-up below 1 is a fraction of the run (the option was warmup_ratio before): a few percent of it
    warmup = training_arguments(replace(config, output_dir="unused")).get_warmup_steps(config.max_steps)
    if 0 < config.warmup_steps < 1:
        assert warmup == math.ceil(config.max_steps * config.warmup_steps) > 0
    else:
        assert warmup == int(config.warmup_steps)
    assert warmup <= 0.1 * config.max_steps


@pytest.mark.parametrize("recipe", [r for r in RECIPES if "stage2" in r.stem], ids=lambda p: p.stem)
def test_stage2_starts_from_the_stage1_output_of_its_family(recipe):
    config = _load(recipe)
    stage1 = _load(REPO / "recipes" / f"{_family(recipe)}-stage1.yaml")
    assert config.model == f"{stage1.output_dir}/final"
    # instruction tuning: M-BEIR with its instructions and hard negatives
    assert config.data_format == "mbeir" and config.use_instructions and config.num_negatives > 0
    assert config.output_dir != stage1.output_dir


GPU_STAGE2 = [r for r in RECIPES if r.stem.startswith("qwen2vl") and "stage2" in r.stem]


def _uniir_train_layout(root: Path) -> None:
    """UniIR's training files in the sample: the up-sampled union query file (a qid repeated, a
    positive the pool lacks) and the union train pool."""
    files = [root / f"query/test/mbeir_{name}_test.jsonl" for name in ("toy_t2i", "toy_i2t", "toy_it2i")]
    queries = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    queries[0]["pos_cand_list"] = ["1:10", "1:99"]  # 1:99 is in no pool
    rows = [*queries, queries[2], queries[2]]
    union = root / "query/union_train/mbeir_union_up_train.jsonl"
    union.parent.mkdir(parents=True)
    union.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = root / "cand_pool/global/mbeir_union_train_cand_pool.jsonl"
    pool.write_text((root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl").read_text())


@pytest.mark.parametrize("recipe", GPU_STAGE2, ids=lambda p: p.stem)
def test_gpu_stage2_trains_on_uniirs_union_file_and_pool(recipe, mbeir_root):
    config = _load(recipe)
    assert (config.query_file, config.pool, config.split) == (
        "query/union_train/mbeir_union_up_train.jsonl",
        "global",
        "train",
    )
    assert not config.datasets
    _uniir_train_layout(mbeir_root)
    ds = build_dataset(replace(config, mbeir_root=str(mbeir_root)))
    assert [q.id for q in ds.queries] == ["1:1", "1:2", "2:1", "3:1", "2:1", "2:1"]  # repeats are examples
    assert ds.queries[0].positives == ("1:10",) and ds.missing_positives == 1
    # batches stay task-homogeneous although every dataset and task shares one file
    assert ds.groups() == {"toy_t2i": [0, 1], "toy_i2t": [2, 4, 5], "toy_it2i": [3]}
    assert ds[(4, 0)]["positive_id"] == "2:10" and len(ds[(4, 0)]["negative_ids"]) == config.num_negatives - 1


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.stem.startswith("qwen2vl")], ids=lambda p: p.stem)
def test_stated_effective_batch_follows_from_the_options(recipe):
    """The header's arithmetic, per GPU count it names, agrees with the options it summarises."""
    config = _load(recipe)
    text = recipe.read_text()
    per_gpu, gpus, total = map(int, re.search(r"(\d+) per GPU x (\d+) GPUs = (\d+) queries", text).groups())
    assert per_gpu == config.per_device_batch_size and total == per_gpu * gpus
    assert f"--num_gpus {gpus} " in text
    if config.num_negatives:
        stated = re.search(r"(\d+) positives\s*#?\s*\+ (\d+) hard negatives.*?scores (\d+) candidates", text, re.S)
        positives, negatives, scored = map(int, stated.groups())
        assert positives == total and negatives == total * config.num_negatives
        assert scored == positives + negatives  # candidates are gathered across ranks
        assert config.gather_across_ranks


def test_tiny_recipes_in_the_package_are_the_ones_recipes_shows():
    packaged = {p.name: p for p in files("jfe").joinpath("recipes").iterdir() if p.name.endswith(".yaml")}
    shown = {p.name: p for p in RECIPES if p.stem.startswith("tiny-")}
    assert set(packaged) == set(shown) == {"tiny-stage1.yaml", "tiny-stage2.yaml", "tiny-stage2-qlora.yaml"}
    for name, path in shown.items():
        assert path.is_symlink() and path.resolve() == Path(str(packaged[name])).resolve()
        assert path.read_bytes() == packaged[name].read_bytes()


def _what_trains(config: TrainConfig, model_dir: Path) -> tuple[set[str], set[str]]:
    """(modules that got LoRA adapters, parameters left trainable) of the tiny model under ``config``."""
    # the target regex does not depend on quantization; the 4-bit load is QLoRA's own test
    embedder = load_embedder(replace(config, quantization="", dtype="float32"), str(model_dir), device="cpu")
    base = embedder.model.get_base_model() if config.trainable == "lora" else embedder.model
    adapted = {name for name, module in base.named_modules() if hasattr(module, "lora_A")}
    trainable = {name for name, p in base.named_parameters() if p.requires_grad}
    return adapted, trainable


@pytest.fixture(scope="module")
def module_kinds(tiny_model_dir):
    """Names of the tiny model's Linear / Conv modules, by where they sit."""
    from jfe import Embedder

    model = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").model
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d))}
    llm = {n for n in layers if n.startswith("language_model.")}
    assert llm and all(n.rsplit(".", 1)[1] in LLM_PROJECTIONS for n in llm)
    visual = {n for n in layers if n.startswith("visual.")}
    return {"llm": llm, "visual": visual, "parameters": {n for n, _ in model.named_parameters()}}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_trains_what_it_means_to_on_the_tiny_model(recipe, tiny_model_dir, module_kinds):
    config = _load(recipe)
    adapted, trainable = _what_trains(config, tiny_model_dir)
    if config.trainable == "full":
        assert not adapted
        expected = module_kinds["parameters"]
        if not config.train_vision:
            expected = {n for n in expected if not n.startswith("visual.")}
        assert trainable == expected
        return
    assert config.trainable == "lora"
    # only the adapters train
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".lora_")[0] for n in trainable} == adapted
    if recipe.stem.startswith("qwen2vl") or recipe.stem == "tiny-stage2-qlora":
        # every projection of the LLM and nothing of the vision tower
        assert adapted == module_kinds["llm"]
    else:
        # tiny-stage2 also adapts the from-scratch vision tower: its attention, MLP and merger, and
        # never the Conv3d patch embedding (peft cannot wrap it under ZeRO-3)
        assert module_kinds["llm"] <= adapted
        vision = adapted - module_kinds["llm"]
        assert vision and vision <= module_kinds["visual"]
        blocks = {n for n in module_kinds["visual"] if re.search(r"\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)$", n)}
        merger = {n for n in module_kinds["visual"] if n.startswith("visual.merger.")}
        assert blocks | merger <= vision
        assert vision == blocks | merger
