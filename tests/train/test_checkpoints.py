"""Which checkpoint a run resumes from: the newest complete one, never a half-written newer one."""

from jfe.train.checkpoints import COMPLETE_FILE, latest_complete, mark_complete


def _checkpoint(root, step, complete=False, state=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir()
    if state:
        (folder / "trainer_state.json").write_text("{}")
    if complete:
        mark_complete(folder, step, 2)
    return folder


def test_the_newest_marked_checkpoint_and_the_unfinished_ones_after_it(tmp_path):
    _checkpoint(tmp_path, 5, complete=True)
    ten = _checkpoint(tmp_path, 10, complete=True)
    twelve, twenty = _checkpoint(tmp_path, 12), _checkpoint(tmp_path, 20, state=False)
    (tmp_path / "checkpoint-30").write_text("a file, not a checkpoint")
    (tmp_path / "final").mkdir()
    assert latest_complete(tmp_path) == (ten, [twelve, twenty])
    assert (ten / COMPLETE_FILE).read_text().strip() == '{"step": 10, "world_size": 2}'


def test_nothing_complete(tmp_path):
    assert latest_complete(tmp_path) == (None, [])
    (tmp_path / "checkpoint-4").mkdir()
    assert latest_complete(tmp_path) == (None, [tmp_path / "checkpoint-4"])


def test_a_run_from_before_the_marks_resumes_from_its_newest_trainer_state(tmp_path):
    eight = _checkpoint(tmp_path, 8)
    nine = _checkpoint(tmp_path, 9, state=False)  # killed before the Trainer's state was written
    assert latest_complete(tmp_path) == (eight, [nine])
