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
