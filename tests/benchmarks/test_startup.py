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
    imports = result["import_s"]
    assert 0 < result["help_s"] and 0 < imports["torch"] < imports["lightning"] < imports["run"]  # each includes torch
    for run in result["runs"]:
        # the run records when its training began: after importing torch at least, before its training and the
        # writing of its results ended
        assert 0 < run["train_s"] < run["wall_s"] and imports["torch"] < run["startup_s"] < run["wall_s"] - run["train_s"]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 20")]
    assert [row.split(" | ")[8] for row in rows] == ["first", "second"] and "--dataset pollen" in rows[-1]


def test_rows_of_another_meaning_get_their_own_section(tmp_path):
    """Rows written before the run recorded its start (wall time less training: an upper bound) keep their table; the
    new rows go under a new header, and a second call adds rows to that one."""
    from benchmarks import startup

    old_header = startup.HEADER.replace("launch to training s", "launch to training, at most s")
    out = tmp_path / "startup.md"
    out.write_text(f"# Start-up\n\n{old_header}\n|---|\n| 2026-12-05 07:24 UTC | pbmc10x | old row |\n")
    result = {"dataset": "pollen", "help_s": 0.1, "import_s": dict.fromkeys(startup.IMPORTS, 1.0), "code": "abc",
              "machine": "here", "runs": [{"run": "first", "cache": "miss", "threads": 2, "wall_s": 9.0, "train_s": 2.0,
                                           "startup_s": 6.3}]}
    startup.append_rows(out, result, "cmd")
    startup.append_rows(out, result, "cmd")
    lines = out.read_text().splitlines()
    assert lines[:5] == ["# Start-up", "", old_header, "|---|", "| 2026-12-05 07:24 UTC | pbmc10x | old row |"]
    assert lines.count(startup.HEADER) == 1 and lines.count(startup.MEANING) == 1
    rows = lines[lines.index(startup.HEADER) + 2:]
    assert len(rows) == 2 and all(row.split(" | ")[12] == "6.3" and row.endswith("<!-- cmd -->") for row in rows)


def test_startup_refuses_bad_input_in_one_line(tmp_path):
    for args, fragment in ((["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
                           (["--threads", "-1"], "argument --threads: must be at least 1, got -1"), (["--set", "hidden_dim"], "key=value"),
                           (["--set", "seeds=[1,2]"], "--set seeds: the benchmark sets this itself"),
                           (["--dataset", "no_such_set"], "unknown dataset"), (["--set", "no_such_key=1"], "unknown config key"),
                           (["--dataset", "pollen", "--data-dir", str(tmp_path)], "is not in")):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup.py"), *args, "--output", str(tmp_path / "s.md")],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr and fragment in done.stderr, done.stderr
        assert not (tmp_path / "s.md").exists()
