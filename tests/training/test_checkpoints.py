"""Resuming picks the newest checkpoint the Trainer finished, not one a dead worker left half-written."""

from training.trainers.common import last_complete_checkpoint


def test_a_half_written_checkpoint_is_skipped_and_removed(tmp_path):
    for step, complete in ((5, True), (10, True), (15, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "runs").mkdir()  # not a checkpoint

    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert not (tmp_path / "checkpoint-15").exists()
    assert (tmp_path / "checkpoint-5").exists()


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    (tmp_path / "checkpoint-3").mkdir()
    assert last_complete_checkpoint(tmp_path) is None
