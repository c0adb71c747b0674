"""studies/run_trace.py: per-evaluation rows and CVC spikes read back from a run's CSV log."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from studies import run_trace

HEADER = "epoch,step,train/cvc,train/loss,train/ndc,val/ari,val/ari_unrefined,weights/rms_refinement.projector,weights/rms_view_m.linear\n"


def _run(tmp_path: Path, cvc: list[float]) -> Path:
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    (run / "config.yaml").write_text("dataset: dlpfc_151673\nseed: 5\noptimizer: adam\nlr: 0.0001\nweight_decay: 0.1\nhidden_dim: 8\n")
    rows = []
    for epoch, value in enumerate(cvc):
        rows.append(f"{epoch},{epoch},{value},1.0,0.5,,,0.01,0.02\n")
        if epoch % 2 == 1:  # Lightning writes the evaluation's scores on a row of their own for the same epoch
            rows.append(f"{epoch},{epoch},,,,{0.1 * epoch:.1f},{0.1 * epoch + 0.05:.2f},,\n")
    (run / "csv" / "metrics.csv").write_text(HEADER + "".join(rows))
    return run


def test_spikes_are_epochs_above_twice_the_median_as_one_based_ranges(tmp_path):
    run = run_trace.read_run(_run(tmp_path, [0.1, 0.1, 0.5, 0.6, 0.1, 0.1, 0.3, 0.1]))
    assert run_trace.cvc_spikes(run) == [2, 3, 6]  # median 0.1
    assert run_trace._ranges([2, 3, 6]) == "3-4, 7"
    assert run_trace._ranges([]) == "none"


def test_main_writes_one_row_per_evaluation_with_merged_columns(tmp_path, capsys):
    out = tmp_path / "trace.md"
    assert run_trace.main([str(_run(tmp_path, [0.1, 0.1, 0.5, 0.1])), "--output", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 2 |") or line.startswith("| 4 |")]
    assert rows == ["| 2 | 0.1 | 0.15 | 1 | 0.5 | 0.1 | 0.01 | 0.02 |", "| 4 | 0.3 | 0.35 | 1 | 0.5 | 0.1 | 0.01 | 0.02 |"]
    assert "CVC spikes at epochs: 3." in text and "optimizer adam" in text
    from scrcl.errors import run_entry

    capsys.readouterr()
    assert run_entry(run_trace.main, [str(tmp_path / "missing"), "--output", str(tmp_path / "bad.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0] and not (tmp_path / "bad.md").exists()


def test_a_damaged_log_or_config_is_one_line_and_writes_nothing(tmp_path, capsys):
    """A CSV that is not train.py's log (it was read as an empty table, exit 0) and a config.yaml that is not YAML (it
    was a parser traceback)."""
    from scrcl.errors import run_entry

    out = tmp_path / "trace.md"
    run = _run(tmp_path, [0.1, 0.2])
    (run / "csv" / "metrics.csv").write_text("epoch,step,train/cvc\nten,0,zero\n")
    capsys.readouterr()
    assert run_entry(run_trace.main, [str(run), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a CSV log written by train.py" in err[0] and not out.exists()
    (run / "csv" / "metrics.csv").write_text("something,else\n1,2\n")
    assert run_entry(run_trace.main, [str(run), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no finished epoch" in err[0] and not out.exists()
    run = _run(tmp_path / "second", [0.1, 0.2])
    (run / "config.yaml").write_text("seed: [5\n")
    assert run_entry(run_trace.main, [str(run), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not valid YAML" in err[0] and not out.exists()
