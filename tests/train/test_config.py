import pytest

from jfe.train.config import TrainConfig, describe, load_config


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: base\noutput_dir: out\nlearning_rate: 1.0e-4\ndatasets: [a, b]\nlearn_temperature: false\n"
    )
    config = load_config(str(recipe), ["learning_rate=3e-4", "learn_temperature=true", "datasets=[c]", "max_steps=7"])
    assert config.learning_rate == 3e-4
    assert config.learn_temperature is True
    assert config.datasets == ["c"]
    assert config.max_steps == 7
    assert config.model == "base"


def test_unknown_and_badly_typed_options_name_the_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: base\nlerning_rate: 1\n")
    with pytest.raises(ValueError, match=r"unknown option\(s\) in .*r\.yaml: lerning_rate"):
        load_config(str(recipe))
    with pytest.raises(ValueError, match="option max_steps: cannot read 'ten' as int"):
        load_config(None, ["max_steps=ten"])
    with pytest.raises(ValueError, match="option resume: expected true or false"):
        load_config(None, ["resume=maybe"])
    with pytest.raises(ValueError, match="override 'oops' is not key=value"):
        load_config(None, ["oops"])


def test_validation_messages(tmp_path):
    with pytest.raises(ValueError, match="model is not set"):
        TrainConfig().validate()
    with pytest.raises(ValueError, match=r"trainable='adapters' is not one of"):
        TrainConfig(model="m", output_dir="o", mbeir_root="r", trainable="adapters").validate()
    with pytest.raises(ValueError, match="set trainable=lora"):
        TrainConfig(model="m", output_dir="o", mbeir_root="r", trainable="full", quantization="nf4").validate()


def test_qlora_with_zero3_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"QLoRA \(nf4\) cannot run under ZeRO-3"):
        TrainConfig(
            model="m", output_dir="o", mbeir_root="r", quantization="nf4", deepspeed="deepspeed_configs/zero3.json"
        ).validate()
    TrainConfig(
        model="m", output_dir="o", mbeir_root="r", quantization="nf4", deepspeed="deepspeed_configs/zero2.json"
    ).validate()


def test_every_option_is_documented():
    text = describe()
    for name in TrainConfig.__dataclass_fields__:
        assert f"  {name} " in text
    assert all(f.metadata.get("help") for f in TrainConfig.__dataclass_fields__.values())


def test_gradcache_with_zero3_is_refused():
    with pytest.raises(ValueError, match=r"GradCache \(gradcache_chunk_size=4\) cannot run under ZeRO-3"):
        TrainConfig(
            model="m", output_dir="o", mbeir_root="r", gradcache_chunk_size=4, deepspeed="deepspeed_configs/zero3.json"
        ).validate()


def test_query_file_replaces_the_per_dataset_files_of_a_global_pool(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: m\noutput_dir: o\nmbeir_root: r\nquery_file: query/union_train/mbeir_union_up_train.jsonl\n"
    )
    config = load_config(str(recipe))
    assert config.query_file == "query/union_train/mbeir_union_up_train.jsonl" and config.pool == "global"
    config.validate()
    base = {"model": "m", "output_dir": "o", "mbeir_root": "r", "query_file": "q.jsonl"}
    with pytest.raises(ValueError, match=r"query_file='q\.jsonl' needs pool=global"):
        TrainConfig(**base, pool="local").validate()
    with pytest.raises(ValueError, match=r"give query_file='q\.jsonl' or datasets=\['a'\], not both"):
        TrainConfig(**base, datasets=["a"]).validate()
    with pytest.raises(ValueError, match="set data_format=mbeir"):
        TrainConfig(**base, data_format="pairs", pairs_files=["p.jsonl"]).validate()
    assert TrainConfig().query_file == ""  # off by default: one file per dataset, as before
