"""Every script in studies/ and benchmarks/ answers ``--help`` (studies/README.md tells readers to start there)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(f"{p.parent.name}.{p.stem}" for folder in ("studies", "benchmarks") for p in (ROOT / folder).glob("*.py")
                 if p.stem != "__init__")


def test_the_scripts_are_found():
    assert "studies.trajectory" in SCRIPTS and "benchmarks.paper_table" in SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_prints_its_help_and_exits_0(name, capsys):
    module = importlib.import_module(name)
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--help" in out
