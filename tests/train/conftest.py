"""The training tests' shared data: scanpy's bundled PBMC 68k subset, prepared once per test module with that
module's ``FAST`` settings."""

from __future__ import annotations

import pytest

from datamodules.datamodule import ScRCLDataModule
from scrcl.train.config import resolve_config


@pytest.fixture(scope="module")
def pbmc(request):
    """(config, prepared DataModule) of pbmc68k with the test module's ``FAST`` overrides."""
    config = resolve_config(dataset="pbmc68k", overrides=request.module.FAST)
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    return config, datamodule
