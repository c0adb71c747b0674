"""evaluate.py in a subprocess: scoring predicted-label files against real annotations."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from scrcl.eval.metrics import mean_std_text

ROOT = Path(__file__).resolve().parents[2]


def evaluate(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_reference_prediction_for_151507_reproduces_the_published_check(tmp_path, data_dir):
    """The official scRCL output for DLPFC 151507 against SEDR's layer_guess: ARI 0.689, NMI 0.756 (SOURCES.md §2.4)."""
    proc = evaluate("--pred", data_dir / "reference_outputs/scRCL/ST/pred_label_dict_151507.mat",
                    "--labels", data_dir / "spatial/DLPFC/SEDR_analyses/151507/metadata.tsv", "--label-key", "layer_guess", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    fields = proc.stdout.split()
    scores = dict(zip(fields[::2], map(float, fields[1::2])))
    assert round(scores["ARI"], 3) == 0.689 and round(scores["NMI"], 3) == 0.756


def test_prediction_file_against_a_registry_dataset(tmp_path, data_dir):
    """A text file of predictions, one per labelled cell, scored against pbmc10x's labels: the truth scores 1."""
    import h5py

    with h5py.File(data_dir / "scrna/scDCC/10X_PBMC_top2000.h5") as f:
        y = f["Y"][()]
    (tmp_path / "truth.txt").write_text("\n".join(f"c{v}" for v in y))
    proc = evaluate("--pred", tmp_path / "truth.txt", "--dataset", "pbmc10x", "--data-dir", data_dir, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ACC 1.0000 NMI 1.0000 ARI 1.0000 F1 1.0000"
    shuffled = np.random.default_rng(0).permutation(y)
    (tmp_path / "random.txt").write_text("\n".join(map(str, shuffled)))
    proc = evaluate("--pred", tmp_path / "random.txt", "--dataset", "pbmc10x", "--data-dir", data_dir, cwd=tmp_path)
    ari = float(proc.stdout.split()[5])
    assert abs(ari) < 0.02


def test_wrong_length_is_one_line(tmp_path, data_dir):
    (tmp_path / "short.txt").write_text("1\n2\n3\n")
    proc = evaluate("--pred", tmp_path / "short.txt", "--dataset", "pbmc10x", "--data-dir", data_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "3 predictions" in proc.stderr


def test_aggregate_never_averages_runs_with_other_settings(tmp_path):
    """An ablation or sweep directory holds one dataset under several settings: each gets its own row."""
    import json

    import yaml

    def run(name, seed, ari, **settings):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        config = {"dataset": "pbmc10x", "seed": seed, "alpha": 100.0, "beta": 1.0, "tms": [2, 0], "output": str(d.parent),
                  "run_name": name, "umap": True, **settings}
        (d / "config.yaml").write_text(yaml.safe_dump(config))
        (d / "metrics.json").write_text(json.dumps({"dataset": "pbmc10x", "seed": seed, "acc": ari, "nmi": ari, "ari": ari, "f1": ari}))

    run("full-seed5", 5, 0.70)
    run("full-seed15", 15, 0.80, umap=False, output="/elsewhere")  # bookkeeping keys do not split a row
    run("full-seed5-again", 5, 0.70)  # the same seed twice: shown, not taken for seed noise
    run("no_cvc-seed5", 5, 0.40, beta=0.0)
    # a multi-seed batch: config.yaml once, in the batch folder above its seed folders (its own row: beta=2.0)
    run("multi/seed5", 5, 0.30)
    run("multi/seed25", 25, 0.20)
    for seed in (5, 25):
        (tmp_path / "runs" / "multi" / f"seed{seed}" / "config.yaml").rename(tmp_path / "runs" / "multi" / "config.yaml")
    config = yaml.safe_load((tmp_path / "runs" / "multi" / "config.yaml").read_text())
    (tmp_path / "runs" / "multi" / "config.yaml").write_text(yaml.safe_dump({**config, "beta": 2.0, "seeds": "5,25"}))
    (tmp_path / "runs" / "loose").mkdir()
    (tmp_path / "runs" / "loose" / "metrics.json").write_text(json.dumps({"dataset": "pollen", "acc": 0.5, "nmi": 0.5, "ari": 0.5,
                                                                          "f1": 0.5, "selected_by": "silhouette"}))
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--aggregate", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Scores of the evaluation each run reports (chosen by: final epoch, silhouette; ")
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| pbmc10x") or line.startswith("| pollen")]
    assert rows == [
        "| pbmc10x | 1 | 5 | 0.4000 | 0.4000 | 0.4000 | 0.4000 | beta=0.0 |",
        "| pbmc10x | 3 | 5 ×2, 15 | " + " | ".join([mean_std_text([0.7, 0.8, 0.7])] * 4) + " | beta=1.0 |",
        "| pbmc10x | 2 | 5, 25 | " + " | ".join([mean_std_text([0.3, 0.2])] * 4) + " | beta=2.0 |",
        "| pollen | 1 | – | 0.5000 | 0.5000 | 0.5000 | 0.5000 | no config.yaml |",
    ], proc.stdout


def test_wrong_files_and_flags_of_another_task_are_one_line(tmp_path):
    """Each of these ended in a traceback (a binary or empty file, a folder, an empty label table, a --table that
    cannot be written) or was silently ignored (flags of another of evaluate.py's tasks; a .mat file of five seeds'
    predictions scored its alphabetically first key, seed 15)."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "binary.txt").write_bytes(b"\x89HDF\x00\xff\xfe")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "p.txt").write_text("a\nb\n")
    (tmp_path / "labels.csv").write_text("")
    (tmp_path / "run").mkdir()
    from scipy.io import savemat

    five_seeds = tmp_path / "five_seeds.mat"  # as the reference's SC outputs: one prediction per seed
    savemat(five_seeds, {str(seed): np.arange(6) % 3 for seed in (5, 15, 25, 35, 45)})
    labels = ["--labels", "labels.csv", "--label-key", "ct"]
    cases = [
        (["--pred", "binary.txt", *labels], "binary.txt is not a text file"),
        (["--pred", "folder", *labels], "folder is a directory"),
        (["--pred", "empty.txt", *labels], "empty.txt is empty"),
        (["--pred", "p.txt", "--labels", "folder", "--label-key", "ct"], "folder is a directory"),
        (["--pred", "p.txt", *labels], "cannot read labels.csv as a label table"),
        (["--aggregate", "run", "--table", "folder"], "folder is a directory"),
        (["--aggregate", "run", "--table", "binary.txt/t.md"], "cannot be written"),
        (["run", "--table", "t.md"], "--table writes the --aggregate table"),
        (["run", "--pred", "p.txt", *labels], "--pred scores a predictions file"),
        (["--aggregate", "run", "--analyses"], "--aggregate tabulates run directories"),
        (["--aggregate", "no_such_dir"], "no_such_dir does not exist; --aggregate takes run directories"),
        (["--aggregate"], "--aggregate needs run directories"),
        (["run", "--dataset", "pbmc10x"], "--dataset goes with --pred"),
        (["--pred", five_seeds, *labels], "holds 5 predictions (keys: 5, 15, 25, 35, 45); name one with --pred-key"),
    ]
    for args, message in cases:
        proc = evaluate(*args, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr[-1500:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary.txt", "empty.txt", "five_seeds.mat", "folder", "labels.csv",
                                                           "p.txt", "run"]
