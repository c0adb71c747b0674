"""No network, no data: the tests that need none still run; the others fail as one report, never a skip.

A test run in a subprocess (tests/datamodules/test_registry.py: ten tests that read no data, the others real data)
with an empty data directory and downloads sent to a closed port on 127.0.0.1, so no download can succeed.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from datamodules.prefetch import plan, read_list

ROOT = Path(__file__).resolve().parent.parent
SUBJECT = "tests/datamodules/test_registry.py"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_run(tmp_path, *options, **environ) -> subprocess.CompletedProcess:
    # CI only where a test sets it: under CI=true pytest repeats each failure's text in its summary
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCRCL_DATA") and key != "CI"}
    env.update({"OMP_NUM_THREADS": "1", **environ})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", *options, SUBJECT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def counts(stdout: str) -> dict:
    last = stdout.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|deselected|skipped|error)", last)}


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "two-xdist-workers"])
def test_without_network_the_run_fails_with_one_line_per_missing_source(tmp_path, workers):
    """With pytest-xdist (as `make test` runs) the controller fetches once and announces it; the workers report."""
    empty = tmp_path / "data"
    empty.mkdir()
    mirror = f"http://127.0.0.1:{closed_port()}"
    sources = plan(read_list(ROOT / "tests/real_data.txt"), empty).to_download
    proc = pytest_run(tmp_path, "-n", str(workers), SCRCL_DATA_DIR=str(empty), SCRCL_DATA_MIRROR=mirror)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out + proc.stderr
    assert len(re.findall(rf"real data for the tests: fetching {len(sources)} files \(\d+\.\d MB\)", out)) == 1
    result = counts(out)
    assert result["failed"] == 1 and result["passed"] >= 10 and "skipped" not in result
    what_to_do = [line for line in out.splitlines() if "tests that read real data did not run" in line]
    assert what_to_do and all(word in what_to_do[0] for word in ("SCRCL_DATA_DIR", "make data", "SCRCL_DATA_MIRROR"))
    not_run = int(re.search(r"(\d+) tests that read real data did not run", what_to_do[0]).group(1))
    assert not_run > 0
    if not workers:  # xdist's controller does not count the deselections its workers make
        assert result["deselected"] == not_run
    missing = [line for line in out.splitlines() if "could not be downloaded" in line]
    assert len(missing) == len(sources)  # one line per missing source: a derived file's originals are not repeated
    for f in sources:
        assert sum(str(empty / f.path) in line for line in missing) == 1, f.path
    assert not list(empty.iterdir())  # neither a file nor a folder made for one


def test_in_ci_a_missing_data_directory_is_a_failure_not_a_skip(tmp_path):
    proc = pytest_run(tmp_path, SCRCL_DATA_DIR=str(tmp_path / "nowhere"), CI="true")
    assert proc.returncode == 1
    result = counts(proc.stdout)
    assert result["failed"] == 1 and "skipped" not in result and result["passed"] >= 10
    assert f"SCRCL_DATA_DIR={tmp_path / 'nowhere'} does not exist" in proc.stdout
    assert not (tmp_path / "nowhere").exists()  # a mistyped directory is reported, not created
