"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path | str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary file name beside ``path`` to write to; when the block ends without an error
    the file is renamed onto ``path`` with the permissions an ordinary ``open(path, 'w')`` would give
    (mkstemp makes it 0600, which would hide results from a group sharing a run directory). On any
    error, KeyboardInterrupt included, the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # no-op after the rename


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write a text report atomically. A place that refuses it (no permission, a read-only or full file system) is
    one :class:`~scrcl.errors.UserError` line naming the file, not a traceback at the end of a long command."""
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)
    except OSError as err:
        from scrcl.errors import UserError

        raise UserError(f"cannot write {path} ({err.strerror or err}); choose another place for it") from None
