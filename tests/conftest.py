"""Shared fixtures: the real data directory, and a private preprocessing cache per test session."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _data_dir() -> Path:
    return Path(os.environ.get("SCRCL_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real labelled data (../shared/data in CI). Missing data is a failure, never a skip."""
    path = _data_dir()
    assert path.is_dir(), f"data directory {path} not found: set SCRCL_DATA_DIR (CI points it at ../shared/data)"
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """Tests never write to ~/.cache and never talk to W&B; subprocesses inherit this."""
    os.environ["SCRCL_CACHE_DIR"] = str(tmp_path_factory.mktemp("scrcl-cache"))
    os.environ["SCRCL_DATA_DIR"] = str(_data_dir())
    os.environ["WANDB_MODE"] = "disabled"
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield
