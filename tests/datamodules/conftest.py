"""Fixtures of the data-layer tests: real datasets built once per session, with the generic settings.

``built("pbmc10x")`` returns a set-up :class:`ScRCLDataModule` (cached for the session, so the shape,
preprocessing and graph tests share one build per dataset). scRNA-seq datasets get the generic sc
settings (input counts, 2000 HVGs, k 15), spatial ones the generic st settings (input scaled, 3000
HVGs, k 15): what a user's own file gets; no dataset's labels chose them.
"""

from __future__ import annotations

import pytest

GENERIC = {
    "sc": {"input": "counts", "hvg": 2000, "k": 15},
    "st": {"input": "scaled", "hvg": 3000, "k": 15},
}


def generic_settings(name: str) -> dict:
    from datamodules.registry import get_spec

    return dict(GENERIC[get_spec(name).task])


@pytest.fixture(scope="session")
def built(data_dir):
    from datamodules.datamodule import ScRCLDataModule

    cache: dict = {}

    def get(name: str, **overrides):
        params = {**generic_settings(name), **overrides}
        key = (name, tuple(sorted(params.items())))
        if key not in cache:
            dm = ScRCLDataModule(dataset=name, data_dir=data_dir, cache=False, progress=False, **params)
            dm.setup()
            cache[key] = dm
        return cache[key]

    return get
