"""benchmarks/records.py: finished runs' small files go to the records and come back as finished trials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scrcl.experiments import ablate
from scrcl.experiments import launcher
from test_sweep import fake_train  # pytest puts this directory on sys.path (no __init__.py)

ROOT = Path(__file__).resolve().parents[2]

from benchmarks import records


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "records.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def run_grid(out_dir: Path, monkeypatch, execute) -> int:
    monkeypatch.setattr(launcher, "execute", execute)
    return ablate.main(["--dataset", "pbmc68k", "--seeds", "5,15", "--variants", "full,no_ndc", "--workers", "1",
                        "--output", str(out_dir), "--epochs", "2"])


def test_saved_records_restore_as_finished_trials_and_nothing_runs_again(tmp_path, monkeypatch, capsys):
    runs, recs = tmp_path / "runs", tmp_path / "records"
    batch = runs / "ablations" / "grid"
    assert run_grid(batch, monkeypatch, fake_train(fail={"no_ndc-seed15"})) == 1
    # what train.py also leaves in a run directory, and must not go into the records
    (batch / "full-seed5" / "checkpoints").mkdir()
    (batch / "full-seed5" / "checkpoints" / "last.ckpt").write_bytes(b"\0" * 100)
    (batch / "full-seed5" / "result.h5ad").write_bytes(b"\0" * 100)
    (batch / "full-seed5" / "history.csv").write_text("epoch,ari\n2,0.5\n")
    (runs / "paper_table" / "pbmc68k").mkdir(parents=True)
    (runs / "paper_table" / "pbmc68k" / "baselines_seed5.json").write_text('{"pca_kmeans": {"ari": 0.6}}')

    assert records.main(["save", "--runs", str(runs), "--records", str(recs)]) == 0
    assert "save: 8 file(s) copied" in capsys.readouterr().out
    saved = sorted(str(p.relative_to(recs)) for p in recs.rglob("*") if p.is_file())
    finished = [f"ablations/grid/{t}/{f}" for t in ("full-seed15", "full-seed5", "no_ndc-seed5")
                for f in ("config.yaml", "metrics.json")]
    assert saved == sorted([*finished, "ablations/grid/full-seed5/history.csv", "paper_table/pbmc68k/baselines_seed5.json"])
    # the failed trial (config.yaml, no metrics.json) is not a record
    assert not (recs / "ablations" / "grid" / "no_ndc-seed15").exists()

    # on another machine: restore, then the same command runs only the trial that never finished
    runs2 = tmp_path / "elsewhere"
    assert records.main(["restore", "--runs", str(runs2), "--records", str(recs)]) == 0
    calls = []
    assert run_grid(runs2 / "ablations" / "grid", monkeypatch, fake_train(calls=calls)) == 0
    assert [c["name"] for c in calls] == ["no_ndc-seed15"]
    metrics = json.loads((runs2 / "ablations" / "grid" / "full-seed15" / "metrics.json").read_text())
    assert metrics == json.loads((batch / "full-seed15" / "metrics.json").read_text())
    # a second save copies nothing new from the first machine, and only the new run from the second
    capsys.readouterr()
    assert records.main(["save", "--runs", str(runs), "--records", str(recs)]) == 0
    assert "0 file(s) copied to" in capsys.readouterr().out
    assert records.main(["save", "--runs", str(runs2), "--records", str(recs)]) == 0
    assert "save: 2 file(s) copied" in capsys.readouterr().out


def test_a_differing_file_or_an_unfinished_run_stops_the_copy_with_one_line_and_changes_nothing(tmp_path):
    runs, recs = tmp_path / "runs", tmp_path / "records"
    for name, ari in (("a", 0.5), ("b", 0.6)):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text("seed: 5\n")
        (runs / name / "metrics.json").write_text(json.dumps({"ari": ari}))
    assert cli("save", "--runs", runs, "--records", recs).returncode == 0
    (runs / "b" / "metrics.json").write_text(json.dumps({"ari": 0.7}))  # b redone, other result
    (runs / "c").mkdir()
    (runs / "c" / "config.yaml").write_text("seed: 5\n")
    (runs / "c" / "metrics.json").write_text("{}")
    proc = cli("save", "--runs", runs, "--records", recs)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {recs / 'b' / 'metrics.json'} differs from {runs / 'b' / 'metrics.json'}; "
        "compare them, then move one away and run again"]
    assert not (recs / "c").exists()  # nothing copied when one file clashes
    assert json.loads((recs / "b" / "metrics.json").read_text()) == {"ari": 0.6}

    other = tmp_path / "other"
    (other / "a" / "checkpoints").mkdir(parents=True)
    (other / "a" / "checkpoints" / "last.ckpt").write_bytes(b"\0")
    proc = cli("restore", "--runs", other, "--records", recs)
    assert proc.returncode == 2 and "holds an unfinished run" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (other / "a" / "metrics.json").exists() and not (other / "b").exists()


@pytest.mark.parametrize("args, message", [
    (["save", "--runs", "{tmp}/missing"], "does not exist; nothing to save"),
    (["save", "--runs", "{tmp}", "--only", "../x"], "--only takes a folder relative to"),
    (["copy"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    proc = cli(*[a.format(tmp=tmp_path) for a in args], "--records", tmp_path / "recs")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "recs").exists()


def test_saved_records_name_no_path_of_this_machine_and_a_second_save_finds_them_the_same(tmp_path, capsys, monkeypatch):
    data_dir, runs, recs = tmp_path / "data", tmp_path / "runs", tmp_path / "records"
    run = runs / "paper_table" / "pollen" / "seed5"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"output: {records.ROOT / 'runs' / 'paper_table'}\ndata_dir: {data_dir}\n")
    (run / "metrics.json").write_text(json.dumps({"data": {"files": {"data": f"{data_dir}/derived/Pollen_SIMLR.h5ad"}}}))
    args = ["save", "--runs", str(runs), "--records", str(recs)]
    monkeypatch.setenv("SCRCL_DATA_DIR", str(data_dir))
    assert records.main(args) == 0
    assert records.main(args) == 0  # compared in the saved form: the same, nothing copied
    assert "save: 0 file(s) copied" in capsys.readouterr().out.splitlines()[-1]
    saved = recs / "paper_table" / "pollen" / "seed5"
    assert (saved / "config.yaml").read_text() == "output: runs/paper_table\ndata_dir: $SCRCL_DATA_DIR\n"
    assert json.loads((saved / "metrics.json").read_text())["data"]["files"]["data"] == "$SCRCL_DATA_DIR/derived/Pollen_SIMLR.h5ad"
    assert str(tmp_path) not in (saved / "config.yaml").read_text() + (saved / "metrics.json").read_text()
