"""train.py and evaluate.py through a subprocess, as users run them. Each config key's flag is made from its
declaration (tests/train/test_config_schema.py checks how); the flags of a run's method and bookkeeping are passed
here together, the keep-what-training-found ones in tests/train/test_keep_found.py."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^ACC \d\.\d{4} NMI \d\.\d{4} ARI -?\d\.\d{4} F1 \d\.\d{4}$")
# --no-umap: umap-learn compiles its kernels in every new process (10-20 s); the UMAP is checked once, below
FAST = ["--hidden-dim", "32", "--no-progress", "--no-umap"]


def run(args, tmp_path, *, env=None, timeout=600, check=True):
    full_env = {**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, args)], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def last_line(proc) -> str:
    return proc.stdout.strip().splitlines()[-1]


def test_every_method_and_run_flag(tmp_path, data_dir):
    out = tmp_path / "runs"
    proc = run(["--dataset", "PBMC68K", "--data-dir", data_dir, "--epochs", "2", "--lr", "1e-3", "--weight-decay", "0.01",
                "--dropout", "0.1", "--hvg", "300", "--k", "10", "--gene-k", "4", "--graph-pcs", "20", "--alpha", "10", "--beta", "0.5",
                "--hea-weight", "1", "--tau", "0.5", "--tms", "1,0", "--gene-dim", "12", "--seed", "3", "--eval-every", "1",
                "--checkpoint-every", "1", "--accelerator", "cpu", "--devices", "1", "--precision", "32-true",
                "--logger", "csv", "--output", out, "--run-name", "r1", "--input", "lognorm", "--loss-impl", "dense",
                "--views", "both", "--gene-graph", "knn", "--radius", "0", "--task", "sc", "--hidden-dim", "32", "--no-progress",
                "--umap-every", "0", "--select", "final", "--weight-averaging", "none", "--lr-schedule", "constant"],
               tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert LINE.match(last_line(proc)), proc.stdout
    assert "cell graph" in proc.stdout + proc.stderr and "(k=10, on PCA-20)" in proc.stdout + proc.stderr
    # --no-progress: one line per evaluation instead of the bar (what a launcher's log shows)
    evals = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in evals] == ["epoch 1/2", "epoch 2/2"], proc.stdout
    assert all(re.search(r"loss \d+\.\d{4}; ACC [01]\.\d{4} NMI [01]\.\d{4} ARI -?[01]\.\d{4} F1 [01]\.\d{4}; k-means", line)
               for line in evals), evals
    run_dir = out / "r1"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    expected = {"dataset": "pbmc68k", "epochs": 2, "lr": 1e-3, "weight_decay": 0.01, "dropout": 0.1, "hvg": 300, "k": 10,
                "gene_k": 4, "graph_pcs": 20, "alpha": 10.0, "beta": 0.5, "tau": 0.5, "tms": [1, 0], "gene_dim": 12, "seed": 3,
                "eval_every": 1, "checkpoint_every": 1, "accelerator": "cpu", "input": "lognorm", "loss_impl": "dense",
                "hidden_dim": 32, "logger": "csv", "select": "final", "weight_averaging": "none", "lr_schedule": "constant"}
    assert {k: config[k] for k in expected} == expected
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("acc", "nmi", "ari", "f1", "oracle_ari", "oracle_epoch", "seconds", "peak_memory_mb", "n_cells", "n_genes", "n_clusters", "versions"):
        assert key in metrics, key
    assert (metrics["n_cells"], metrics["n_genes"], metrics["n_clusters"]) == (700, 300, 10)
    assert metrics["epoch"] == 2 and metrics["seed"] == 3
    assert metrics["torch_threads"] == 1  # the CPU thread count is part of what makes a run reproducible
    assert last_line(proc) == f"ACC {metrics['acc']:.4f} NMI {metrics['nmi']:.4f} ARI {metrics['ari']:.4f} F1 {metrics['f1']:.4f}"
    result = ad.read_h5ad(run_dir / "result.h5ad")
    assert result.obsm["X_scrcl"].shape == (700, 24)
    assert result.obs["scrcl_cluster"].nunique() <= 10
    assert (run_dir / "umap_final.png").stat().st_size > 10_000
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    csv = (run_dir / "csv" / "metrics.csv").read_text()
    assert "train/loss" in csv and "val/ari" in csv
    logged = pd.read_csv(run_dir / "csv" / "metrics.csv")["weights/rms_view_m.linear"].dropna()
    weight = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]["model.view_m.linear.weight"]
    assert len(logged) == 2 and logged.iloc[-1] == pytest.approx(weight.pow(2).mean().sqrt().item(), rel=1e-5)
    assert "weights/rms_refinement.projector" in csv
    # evaluate.py re-scores the run directory to the same figures
    ev = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), str(run_dir)], capture_output=True, text=True, cwd=tmp_path)
    assert ev.returncode == 0 and ev.stdout.strip() == last_line(proc)


def test_equals_form_seeds_summary_and_aggregate(tmp_path, data_dir):
    """W&B agents pass --key=value; several seeds give one run each plus a mean ± std summary."""
    out = tmp_path / "runs"
    proc = run([f"--data-dir={data_dir}", "--dataset=pbmc68k", "--epochs=1", "--seeds=5,15", f"--output={out}",
                "--run-name=multi", "--logger=none", "--hidden-dim=32", "--no-progress", "--no-umap"], tmp_path)
    root = out / "multi"
    summary = json.loads((root / "summary.json").read_text())
    per_seed = [json.loads((root / f"seed{s}" / "metrics.json").read_text()) for s in (5, 15)]
    assert summary["seeds"] == [5, 15]
    assert summary["ari"]["mean"] == pytest.approx(np.mean([m["ari"] for m in per_seed]))
    assert summary["ari"]["std"] == pytest.approx(np.std([m["ari"] for m in per_seed]))
    assert LINE.match(last_line(proc))
    spread = proc.stdout.strip().splitlines()[-2]  # the spread over the seeds, before the means' line
    assert spread.startswith("mean ± std (population) over seeds 5, 15: ACC ")
    assert f"ARI {summary['ari']['mean']:.4f} ± {summary['ari']['std']:.4f}" in spread
    table = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--aggregate", str(out), "--table", str(tmp_path / "t.md")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert table.returncode == 0
    assert "| pbmc68k | 2 | 5, 15 |" in (tmp_path / "t.md").read_text()


def test_config_file_precedence(tmp_path, data_dir):
    """generic < dataset YAML < --config < flags."""
    cfg = tmp_path / "my.yaml"
    cfg.write_text("lr: 0.002\nepochs: 3\ntau: 0.7\nhidden_dim: 16\n")
    run(["--dataset", "pbmc68k", "--data-dir", data_dir, "--config", cfg, "--epochs", "1", "--output", tmp_path / "o",
         "--run-name", "c", "--logger", "none", "--no-progress", "--no-umap"], tmp_path)
    config = yaml.safe_load((tmp_path / "o" / "c" / "config.yaml").read_text())
    assert (config["lr"], config["epochs"], config["tau"], config["hidden_dim"]) == (0.002, 1, 0.7, 16)
    assert config["umap"] is False and not list((tmp_path / "o" / "c").rglob("*.png"))  # --no-umap
    assert config["alpha"] == 100.0  # untouched keys keep the generic default


def test_dataset_yaml_overrides_generic(tmp_path, data_dir):
    """A paper dataset gets its published settings (dlpfc_151510: alpha 200, beta 0.5, tms 10,8, radius 50)."""
    out = tmp_path / "o"
    proc = run(["--dataset", "dlpfc_151510", "--data-dir", data_dir, "--epochs", "1", "--output", out, "--run-name", "st",
                "--logger", "none", *FAST], tmp_path)
    config = yaml.safe_load((out / "st" / "config.yaml").read_text())
    assert (config["task"], config["alpha"], config["beta"], config["tms"], config["radius"], config["k"]) == ("st", 200.0, 0.5, [10, 8], 50, 15)
    metrics = json.loads((out / "st" / "metrics.json").read_text())
    assert metrics["n_cells"] == 4595 and "ari_unrefined" in metrics
    assert LINE.match(last_line(proc))


def test_own_file_with_and_without_labels(tmp_path, data_dir):
    import scanpy as sc

    bundled = sc.datasets.pbmc68k_reduced()
    adata = ad.AnnData(bundled.raw.X.copy(), obs=bundled.obs[["bulk_labels"]].copy())
    adata.var_names = bundled.raw.var_names
    path = tmp_path / "mine.h5ad"
    adata.write_h5ad(path)
    with_labels = run(["--data", "mine.h5ad", "--label-key", "bulk_labels", "--epochs", "1", "--output", tmp_path / "o",
                       "--run-name", "a", "--logger", "none", *FAST], tmp_path)
    assert LINE.match(last_line(with_labels))
    # a relative path is recorded absolute: --resume and evaluate.py --analyses work from any directory
    assert yaml.safe_load((tmp_path / "o" / "a" / "config.yaml").read_text())["data"] == str(path)
    without = run(["--data", path, "--n-clusters", "4", "--epochs", "1", "--output", tmp_path / "o", "--run-name", "b",
                   "--logger", "none", *FAST], tmp_path)
    line = last_line(without)
    assert line.startswith("clusters ") and len(line.split()) == 5
    sizes = [int(part.split(":")[1]) for part in line.split()[1:]]
    assert sum(sizes) == 700
    metrics = json.loads((tmp_path / "o" / "b" / "metrics.json").read_text())
    assert "ari" not in metrics and metrics["cluster_sizes"] == sizes


def test_wandb_offline_run_is_written(tmp_path, data_dir):
    out = tmp_path / "o"
    proc = run(["--dataset", "pbmc68k", "--data-dir", data_dir, "--epochs", "1", "--output", out, "--run-name", "w",
                "--logger", "wandb", *FAST], tmp_path, env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    runs = list((out / "w" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert LINE.match(last_line(proc))  # W&B signs off before the result line, not after it


def test_missing_paper_dataset_is_one_line(tmp_path):
    proc = run(["--dataset", "lung", "--data-dir", tmp_path / "empty", "--output", tmp_path / "o"], tmp_path, check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "Quake_Smart-seq2_Lung" in err[0] and "zenodo" in err[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "o").exists()


def test_no_gpu_is_one_line_before_the_data_and_leaves_nothing(tmp_path, data_dir):
    """Checked before the data are read (preprocessing a large file takes minutes); the GPU is hidden from the run, so
    the path is reached on a machine with one too."""
    proc = run(["--dataset", "pbmc68k", "--data-dir", data_dir, "--accelerator", "gpu", "--epochs", "1",
                "--output", tmp_path / "o", "--run-name", "g", *FAST], tmp_path, env={"CUDA_VISIBLE_DEVICES": ""}, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --accelerator gpu but torch sees no GPU on this machine; use "
                                                "--accelerator cpu or auto"]
    assert proc.stdout.strip() == ""  # no dataset summary: nothing was read
    assert not (tmp_path / "o").exists()


def test_list_datasets(tmp_path):
    proc = run(["--list-datasets"], tmp_path)
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert {"lung", "pbmc10x", "dlpfc_151673", "mouse_embryo_e9_5"} <= set(names)


def test_resume_after_a_real_kill_ends_like_an_uninterrupted_run(tmp_path, data_dir):
    # Enough epochs that the run is still training half a second after its first checkpoint: at d = 32 an epoch
    # of PBMC 68k takes a few hundredths of a second, and with 12 epochs a fast machine finished before the kill.
    epochs = 100
    args = ["--dataset", "pbmc68k", "--data-dir", data_dir, "--epochs", epochs, "--checkpoint-every", "2", "--eval-every", "5",
            "--logger", "none", "--lr", "1e-3", *FAST]
    straight = run([*args, "--output", tmp_path / "a", "--run-name", "r"], tmp_path)
    run_dir = tmp_path / "b" / "r"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, [*args, "--output", tmp_path / "b", "--run-name", "r"])],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.05)
    time.sleep(0.5)  # let it get past the checkpoint, into the following epochs
    assert proc.poll() is None, "the run finished before it could be killed; give it more epochs"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists()
    ckpt_state = torch.load(ckpt, map_location="cpu", weights_only=False)
    seconds_at_checkpoint = ckpt_state["callbacks"]["TrainClock"]["seconds"]
    assert seconds_at_checkpoint > 0
    resumed = run(["--resume", run_dir, "--no-progress"], tmp_path)
    a = json.loads((tmp_path / "a" / "r" / "metrics.json").read_text())
    b = json.loads((run_dir / "metrics.json").read_text())
    assert {k: a[k] for k in ("acc", "nmi", "ari", "f1", "epoch")} == {k: b[k] for k in ("acc", "nmi", "ari", "f1", "epoch")}
    assert last_line(resumed) == last_line(straight)
    # The training time counts the epochs before the checkpoint too.
    assert b["train_seconds"] > seconds_at_checkpoint
    # The CSV log continues across the resume: every epoch once, with the same losses as the straight run.
    rows = {name: list(csv.DictReader(open(d / "csv" / "metrics.csv"))) for name, d in (("a", tmp_path / "a" / "r"), ("b", run_dir))}
    assert [int(r["epoch"]) for r in rows["b"]] == [int(r["epoch"]) for r in rows["a"]] == list(range(epochs))
    assert [float(r["train/loss"]) for r in rows["b"]] == pytest.approx([float(r["train/loss"]) for r in rows["a"]], rel=1e-6)
    assert "exists and is not empty" not in resumed.stderr


def test_resume_refuses_flags_that_would_change_the_run(tmp_path):
    """--resume RUN --epochs 1000 used to continue with the run's own 500 epochs, saying nothing."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("dataset: pbmc68k\nepochs: 2\n")
    proc = run(["--resume", run_dir, "--epochs", "1000", "--lr", "1e-3", "--no-refine", "--no-progress"], tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: --resume continues {run_dir} with the settings in its config.yaml; --lr, --epochs, --no-refine cannot change them "
        "(start a new run for other settings)"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
    # the seeds and the run's place are what --resume names: --seeds trained new runs inside a finished one and
    # --output / --run-name were written into its config.yaml, though nothing moved
    for flags, named in ((["--seeds", "5,15"], "--seeds"), (["--output", tmp_path / "elsewhere"], "--output"),
                         (["--run-name", "other"], "--run-name")):
        proc = run(["--resume", run_dir, *flags], tmp_path, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: --resume continues {run_dir} with the settings in its config.yaml; {named} cannot change them "
            "(start a new run for other settings)"]
        assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
        assert (run_dir / "config.yaml").read_text() == "dataset: pbmc68k\nepochs: 2\n"
    # a requeued job repeats its command line: the same --data (relative, recorded absolute), --output however spelled
    # and --run-name pass the check (--accelerator gpu then stops it, as this machine's torch sees no GPU)
    (tmp_path / "mine.h5ad").write_bytes(b"")
    (run_dir / "config.yaml").write_text(f"data: {tmp_path / 'mine.h5ad'}\nepochs: 2\nrun_name: r\noutput: {tmp_path}\n")
    for output in (".", "./", str(tmp_path)):
        proc = run(["--resume", run_dir, "--data", "mine.h5ad", "--output", output, "--run-name", "r", "--accelerator", "gpu"],
                   tmp_path, check=False, env={"CUDA_VISIBLE_DEVICES": ""})
        assert proc.returncode == 2 and "cannot change them" not in proc.stderr and "sees no GPU" in proc.stderr, proc.stderr
