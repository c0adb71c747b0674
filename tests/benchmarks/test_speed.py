"""benchmarks/speed.py through its command line on real data: one JSON line whose parts add up, and one table row."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_speed_prints_a_split_and_appends_a_row(data_dir, tmp_path):
    out = tmp_path / "speed.md"
    old_table = "# Epoch time\n\n| date | evaluation s |\n|---|---|\n| 2026-01-01 | 0.5 |\n"  # a table of other columns
    out.write_text(old_table)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--dataset", "pollen", "--hidden-dim", "16",
           "--epochs", "3", "--warmup", "1", "--threads", "1", "--data-dir", str(data_dir), "--output", str(out)]
    for _ in range(2):
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n_cells"] == 249 and result["hidden_dim"] == 16 and result["threads"] == 1
    parts = result["encoders_s"] + result["objective_s"] + result["optimiser_s"]
    # medians taken part by part need not add up to the median epoch (a scheduler slice on a loaded machine lands in
    # one part of one epoch), but a part counted twice would exceed it by far
    assert 0 < parts <= result["epoch_s"] * 1.5
    assert result["evaluation_s"] > 0 and math.isfinite(result["trainer_epoch_s"]) and result["code"]
    text = out.read_text()
    assert text.startswith(old_table)  # the older rows stay as they were, under their own header
    new_part = text[len(old_table):]
    assert new_part.count("| date | dataset | cells |") == 1 and "evaluation as a run makes it" in new_part
    table = new_part.splitlines()
    assert sum(line.startswith("| 20") for line in table) == 2  # new header written once, one row per run under it
    assert "python benchmarks/speed.py --dataset pollen" in table[-1]


def test_speed_refuses_bad_numbers(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--epochs", "0", "--output",
                           str(tmp_path / "s.md")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and not (tmp_path / "s.md").exists()
