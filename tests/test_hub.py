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


def test_only_what_export_writes_is_uploaded(exported, tmp_path, monkeypatch, capsys):
    import shutil

    from jfe.cli import main

    folder = shutil.copytree(exported, tmp_path / "model")
    strays = {".env": "HF_TOKEN=hf_secret", "token": "hf_secret", ".huggingface/token": "hf_secret",
              "checkpoint-5/optimizer.pt": "x", "checkpoint-5/model.safetensors": "x", "notes.txt": "mine",
              "training_args.bin": "x", "1_Pooling/scratch.json": "{}", "sub/model.safetensors": "x"}  # fmt: skip
    for name, text in strays.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    api = RecordingApi()
    plan = push(folder, "org/tiny", api=api)
    exported_files = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert plan["files"] == exported_files
    assert sorted(plan["left_out"]) == sorted(strays)
    assert api.calls[-1][1]["allow_patterns"] == exported_files
    # asked for, a checkpoint goes too; the dry run says what stays home
    plan = push(folder, "org/tiny", dry_run=True, include=("checkpoint-5/*",))
    assert {"checkpoint-5/optimizer.pt", "checkpoint-5/model.safetensors"} <= set(plan["files"])
    assert main(["push", "--model", str(folder), "--repo-id", "org/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "left out (9, not written by jfe export" in out and "hf_secret" not in out


def test_token_vector_exports_upload_whole(tiny_model_dir, tmp_path):
    import dataclasses

    from jfe.hub import upload_list

    base = Embedder.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")
    for kind in ("multi", "both"):
        config = dataclasses.replace(base.config, embedding=kind, multi_dim=16)
        out = Embedder(base.model, base.processor, config).save(tmp_path / kind)
        write_model_card(out)
        chosen, left = upload_list(out)
        assert left == [] and any(name.startswith("multi_vector_head/") for name in chosen)
