from transformers import AutoConfig

from jfe.builtins import tiny_model
from jfe.cache import cache_dir
from jfe.tiny import TINY_SHAPE


def test_cache_dir_follows_jfe_cache_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("JFE_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("JFE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "jfe"


def test_tiny_model_is_built_once_with_its_shape_in_the_folder_name(tmp_path, monkeypatch):
    monkeypatch.setenv("JFE_CACHE", str(tmp_path))
    # a checkpoint cached under the old, shapeless name must not be taken for the current shape
    (tmp_path / "tiny-qwen2_vl-seed0").mkdir()
    (tmp_path / "tiny-qwen2_vl-seed0" / "config.json").write_text("{}")
    path = tiny_model("qwen2_vl")
    assert path.parent == tmp_path and path.name == "tiny-qwen2_vl-h64-l2-v64-seed0"
    config = AutoConfig.from_pretrained(path)
    assert config.text_config.hidden_size == TINY_SHAPE["hidden"]
    assert config.text_config.num_hidden_layers == TINY_SHAPE["layers"]
    assert config.vision_config.embed_dim == TINY_SHAPE["vision_hidden"]
    assert config.vision_config.hidden_size == TINY_SHAPE["hidden"]  # the merger feeds the LLM
    built = (path / "model.safetensors").stat().st_mtime_ns
    assert tiny_model("qwen2_vl") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == built
