"""studies/ablation_trajectory.py: per-epoch means over seeds read back from an ablation batch's history files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from studies import ablation_trajectory as traj
from scrcl.errors import run_entry  # noqa: E402


def _trial(batch: Path, name: str, aris: dict[int, float], final_epoch: int | None = None, finished: bool = True) -> None:
    run = batch / name
    run.mkdir(parents=True)
    rows = "".join(f"{epoch},0.5,0.5,{ari},0.5,0.1,1.0\n" for epoch, ari in aris.items())
    (run / "history.csv").write_text("epoch,acc,nmi,ari,f1,kmeans_s,loss\n" + rows)
    if finished:
        last = max(aris) if final_epoch is None else final_epoch
        (run / "metrics.json").write_text(json.dumps({"ari": aris[last], "nmi": 0.5, "acc": 0.5, "f1": 0.5, "epoch": last}))


@pytest.fixture
def batch(tmp_path):
    batch = tmp_path / "components-toy"
    _trial(batch, "full-seed5", {10: 0.60, 20: 0.70, 30: 0.72})
    _trial(batch, "full-seed15", {10: 0.50, 20: 0.80, 30: 0.72})
    _trial(batch, "no_cvc-seed5", {10: 0.40, 30: 0.30})            # no evaluation at epoch 20
    _trial(batch, "no_cvc-seed15", {10: 0.20, 20: 0.90}, finished=False)  # still running: left out
    (batch / "logs").mkdir()                                        # not a trial
    (batch / "ablation.md").write_text("table\n")
    return batch


def _variants(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "variants.yaml"
    path.write_text("variants:\n" + "".join(f"  {n}:\n    set: {{}}\n" for n in names))
    return path


def test_means_over_seeds_final_and_best_against_hand_values(batch, tmp_path, capsys):
    order = _variants(tmp_path, ["no_cvc", "full"])
    assert traj.main([str(batch), "--epochs", "20,10", "--file", str(order)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| variant"))
    assert header == "| variant | seeds | epoch 10 | epoch 20 | final | reported | best (labels pick) |"
    rows = [line for line in lines if line.startswith("| no_cvc") or line.startswith("| full")]
    # the ablation file's order, not the alphabet; the unfinished seed 15 of no_cvc is not counted
    assert rows == [
        "| no_cvc | 5 | 0.400 | – | 0.300 | 0.300 | 0.400 |",
        "| full | 5, 15 | 0.550 | 0.750 | 0.720 | 0.720 | 0.760 |",  # best: mean of 0.72 (epoch 30) and 0.80 (epoch 20), each run's own
    ]
    assert "`select` chose (epoch 30)" in "\n".join(lines)


def test_final_is_the_last_evaluation_reported_the_metrics_json_figure_and_unlisted_variants_come_last(tmp_path, capsys):
    batch = tmp_path / "b"
    _trial(batch, "full-seed5", {10: 0.6, 20: 0.7})
    _trial(batch, "custom-seed5", {10: 0.1, 20: 0.2}, final_epoch=10)
    assert traj.main([str(batch), "--epochs", "10", "--file", str(_variants(tmp_path, ["full"])), "--metric", "ari"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| full") or line.startswith("| custom")]
    # custom's metrics.json reports epoch 10 (a label-free select's choice): reported 0.1, its last evaluation 0.2
    assert rows == ["| full | 5 | 0.600 | 0.700 | 0.700 | 0.700 |", "| custom | 5 | 0.100 | 0.200 | 0.100 | 0.200 |"]


def test_output_file_is_written_whole(batch, tmp_path, capsys):
    out = tmp_path / "res" / "trajectory.md"
    assert traj.main([str(batch), "--epochs", "10", "--output", str(out), "--file", str(_variants(tmp_path, ["full"]))]) == 0
    assert out.read_text().startswith("# ARI over training, per ablation variant")
    assert capsys.readouterr().out.strip() == f"written: {out}"
    assert [p.name for p in out.parent.iterdir()] == ["trajectory.md"]


@pytest.mark.parametrize("make, args, message", [
    (lambda p: None, ["--epochs", "10"], "is not a directory"),
    (lambda p: (p / "b").mkdir(), ["--epochs", "10"], "holds no finished trial"),
    (lambda p: _trial(p / "b", "full-seed5", {10: 0.5}), ["--epochs", "ten"], "--epochs must be integers like"),  # scrcl.train.config.parse_int_list's message
    (lambda p: _trial(p / "b", "full-seed5", {10: 0.5}), ["--epochs", "0,10"], "epoch numbers of 1 or more"),
    (lambda p: (_trial(p / "b", "full-seed5", {10: 0.5}), (p / "b" / "full-seed5" / "metrics.json").write_text("{}")),
     ["--epochs", "10"], "had no labels"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, args, message):
    make(tmp_path)
    assert run_entry(traj.main, [str(tmp_path / "b"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
