import os
import stat

import pytest

from jfe.atomic import atomic_dir, atomic_write_text


def test_atomic_dir_replaces_the_folder_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()  # nothing is visible before the block ends
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_leaves_the_old_folder_on_error(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "a" / "f.txt", "hello")
    assert (tmp_path / "a" / "f.txt").read_text() == "hello"


def test_atomic_dir_keeps_the_old_folder_until_the_new_one_is_in(tmp_path, monkeypatch):
    """A crash between removing the old folder and renaming the new one in must not lose both:
    the old folder is renamed aside, and restored if the new one cannot be put in place."""
    import jfe.atomic

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace = jfe.atomic.os.replace

    def failing_replace(src, dst):
        if str(src).startswith(str(tmp_path / ".model.")) and ".old." not in str(src):
            raise OSError("disk gone")  # renaming the new folder into place fails
        return real_replace(src, dst)

    monkeypatch.setattr(jfe.atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"), atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_has_normal_permissions(tmp_path):
    """The folder is made with the umask's mode, not mkdtemp's 0700 (other users can read a model)."""
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
