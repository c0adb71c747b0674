"""Atomic writes: normal permissions, and nothing half-written on an error."""

import os
import stat

import pytest

from scrcl.atomic import atomic_path, atomic_write_text


def test_written_file_gets_the_umask_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}\n")
        os.umask(0o027)
        with atomic_path(tmp_path / "result.h5ad", suffix=".h5ad") as tmp:
            open(tmp, "wb").write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "result.h5ad").stat().st_mode) == 0o640


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_checkpoints_are_written_beside_their_target_not_in_the_system_temp_dir(tmp_path, monkeypatch):
    """Lightning's own checkpoint IO stages the file in $TMPDIR and moves it (a copy onto the target when
    the run directory is on another filesystem); ours never touches $TMPDIR."""
    import tempfile

    import torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from scrcl.train.checkpoint_io import AtomicCheckpointIO

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))
    target = tmp_path / "checkpoints" / "periodic.ckpt"
    with pytest.raises(FileNotFoundError):  # what the test tells apart: Lightning's IO needs $TMPDIR
        TorchCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "lightning.ckpt")
    AtomicCheckpointIO().save_checkpoint({"w": torch.arange(3.0)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3.0))
    assert sorted(p.name for p in target.parent.iterdir()) == ["periodic.ckpt"]


def test_a_checkpoint_write_killed_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    import torch

    from scrcl.train.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "periodic.ckpt"
    io.save_checkpoint({"epoch": 50}, target)
    (tmp_path / "last.ckpt").symlink_to("periodic.ckpt")  # as ModelCheckpoint(save_last="link") lays them out
    real_save = torch.save

    def killed_half_way(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the job is stopped while the bytes go out

    monkeypatch.setattr(torch, "save", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 100}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"epoch": 50}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "periodic.ckpt"]
    io.save_checkpoint({"epoch": 100}, target)  # the next save replaces it, and the link follows
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"epoch": 100}


def test_a_report_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    """paper_table.py ended hours of runs in a PermissionError traceback for an --output its check let through (a
    place root may open but whose file system refuses files); every report now fails as one line naming the file."""
    from scrcl.errors import UserError

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for path in (blocker / "table.md", "/sys/scrcl_table.md"):
        with pytest.raises(UserError, match=f"cannot write {path} "):
            atomic_write_text(path, "| a |\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
