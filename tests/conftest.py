"""Shared fixtures: where the real data lives, and a private cache directory for the whole session.

The real data directory is ``$SCRCL_DATA_DIR``, else ``../shared/data`` beside the checkout. CI always
has it, so a missing data directory is a test *failure*, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = (ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("SCRCL_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()
    if not path.is_dir():
        pytest.fail(f"real data directory {path} not found: set SCRCL_DATA_DIR (CI expects ../shared/data)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """No test writes to ~/.cache (a per-session cache directory), none talks to W&B, plots need no
    display; subprocesses inherit all three."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRCL_CACHE_DIR", str(tmp_path_factory.mktemp("scrcl-cache")))
        mp.setenv("WANDB_MODE", "disabled")
        mp.setenv("MPLBACKEND", "Agg")
        yield
