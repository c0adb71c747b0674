"""benchmarks/startup.py through its command line on real data: a cold then a warm cache, and one row per run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_startup_times_a_cold_and_a_warm_start(data_dir, tmp_path):
    out = tmp_path / "startup.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--dataset", "pollen", "--repeats", "1",
           "--set", "hidden_dim=16", "--data-dir", str(data_dir), "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = result["runs"]
    assert (first["cache"], second["cache"]) == ("miss", "hit")  # a fresh cache directory, then the same one
    for run in result["runs"]:
        assert 0 < run["train_s"] < run["wall_s"] and run["startup_s"] == pytest.approx(run["wall_s"] - run["train_s"])
    imports = result["import_s"]
    assert 0 < result["help_s"] and 0 < imports["torch"] < imports["lightning"] < imports["run"]  # each includes torch
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 20")]
    assert [row.split(" | ")[8] for row in rows] == ["first", "second"] and "--dataset pollen" in rows[-1]


def test_startup_refuses_bad_input_in_one_line(tmp_path):
    for args, fragment in ((["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
                           (["--threads", "-1"], "argument --threads: must be at least 1, got -1"), (["--set", "hidden_dim"], "key=value"),
                           (["--dataset", "no_such_set"], "unknown dataset"), (["--set", "no_such_key=1"], "unknown config key"),
                           (["--dataset", "pollen", "--data-dir", str(tmp_path)], "is not in")):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup.py"), *args, "--output", str(tmp_path / "s.md")],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr and fragment in done.stderr, done.stderr
        assert not (tmp_path / "s.md").exists()
