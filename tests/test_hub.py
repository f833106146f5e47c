import pytest

from jfe import Embedder
from jfe.card import write_model_card
from jfe.hub import push


class RecordingApi:
    """Stands in for the network end of huggingface_hub.HfApi: records the calls jfe makes."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def create_branch(self, **kwargs):
        self.calls.append(("create_branch", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "https://hub.example/commit/1"


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "model"
    Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu").save(out)
    write_model_card(out)
    return out


def test_push_makes_the_right_calls(exported, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    api = RecordingApi()
    plan = push(exported, "org/tiny", private=True, revision="v1", create_pr=True, api=api)
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "org/tiny", "repo_type": "model", "private": True, "exist_ok": True}
    upload = api.calls[2][1]
    assert upload["folder_path"] == str(exported) and upload["revision"] == "v1" and upload["create_pr"] is True
    assert "model.safetensors" in plan["files"] and "README.md" in plan["files"]
    assert plan["commit"] == "https://hub.example/commit/1"


def test_dry_run_contacts_nobody_and_lists_files(exported, capsys):
    from jfe.cli import main

    assert main(["push", "--model", str(exported), "--repo-id", "org/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would upload") and "modules.json" in out and "hf_" not in out


def test_push_refuses_bad_folders_and_repo_ids(tiny_model_dir, exported):
    api = RecordingApi()
    with pytest.raises(FileNotFoundError, match=r"not an exported jfe model \(missing modules\.json"):
        push(tiny_model_dir, "org/tiny", api=api)
    with pytest.raises(ValueError, match="repo id 'tiny' must look like ORG/NAME"):
        push(exported, "tiny", api=api)
    assert api.calls == []


def test_offline_mode_is_reported_before_any_call(exported, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    api = RecordingApi()
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=1"):
        push(exported, "org/tiny", api=api)
    assert api.calls == []
