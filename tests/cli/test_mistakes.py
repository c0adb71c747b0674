"""Mistakes and unusual input a user meets, through the real entry points: each is one clear line (or a note),
never a traceback, and nothing is left behind."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import scrcl
from scrcl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--epochs", "2", "--hidden-dim", "16", "--no-umap", "--no-progress"]


def train(tmp_path, data_dir, *args, **environ):
    env = {**os.environ, "SCRCL_DATA_DIR": str(data_dir), "SCRCL_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "disabled",
           "MPLBACKEND": "Agg", **environ}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def evaluate(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("finished")
    proc = train(tmp, data_dir, "--dataset", "pbmc68k", *FAST, "--output", tmp / "runs", "--run-name", "r",
                 WANDB_MODE="offline", HOME=str(tmp / "home"))
    assert proc.returncode == 0, proc.stderr
    return tmp, proc


# -- results files that are damaged ----------------------------------------------------------------------------------
def test_a_truncated_result_h5ad_and_a_corrupt_metrics_json_are_one_line_naming_the_file(tmp_path, finished_run):
    tmp, _ = finished_run
    run = tmp_path / "r"
    run.mkdir()
    for name in ("config.yaml", "metrics.json"):
        (run / name).write_bytes((tmp / "runs" / "r" / name).read_bytes())
    whole = (tmp / "runs" / "r" / "result.h5ad").read_bytes()
    (run / "result.h5ad").write_bytes(whole[: len(whole) // 3])
    line = one_error_line(evaluate(run, cwd=tmp_path))
    assert f"cannot read {run / 'result.h5ad'}" in line and "truncated" in line
    (run / "metrics.json").write_text('{"acc": 0.5, "nmi"')
    line = one_error_line(evaluate("--aggregate", tmp_path, cwd=tmp_path))
    assert f"{run / 'metrics.json'} is not a valid metrics.json" in line


def test_resuming_from_a_truncated_checkpoint_is_one_line_naming_it(tmp_path, finished_run, data_dir):
    """A copy cut short: the line names the checkpoint, quotes torch's reason as a whole sentence and says what to do."""
    import shutil

    tmp, _ = finished_run
    run = tmp_path / "r"
    shutil.copytree(tmp / "runs" / "r", run, ignore=shutil.ignore_patterns("wandb", ".owner", "metrics.json", "result.h5ad"))
    checkpoint = run / "checkpoints" / "last.ckpt"
    whole = checkpoint.read_bytes()
    checkpoint.unlink()  # last.ckpt may be a link to the periodic checkpoint: cut a file of its own
    checkpoint.write_bytes(whole[: len(whole) // 3])
    line = one_error_line(train(tmp_path, data_dir, "--resume", run))
    assert f"checkpoint {checkpoint} cannot be read" in line and "truncated" in line
    assert f"delete {checkpoint.parent} and --resume trains the run again from its first epoch" in line  # nothing beside it
    reason = line.split("cannot be read (", 1)[1].split(");", 1)[0]
    assert reason.endswith(("...", *"abcdefghijklmnopqrstuvwxyz0123456789)")) and not reason.endswith(" If yo"), reason
    import torch

    with pytest.raises(Exception) as caught:  # what torch itself says of the file
        torch.load(checkpoint, map_location="cpu", weights_only=False)
    said = f"{type(caught.value).__name__}: {str(caught.value).strip().splitlines()[0]}"
    assert said.startswith(reason) and said[len(reason):][:2] in ("", ". ", "."), (reason, said)  # a whole sentence


def test_resume_takes_the_newest_requeue_checkpoint_then_last_then_periodic(tmp_path):
    from scrcl.train.rundir import resume_checkpoint
    from scrcl.train.run import _what_to_delete

    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    assert resume_checkpoint(run) is None
    for name in ("checkpoints/periodic.ckpt", "checkpoints/last.ckpt", "hpc_ckpt_2.ckpt", "hpc_ckpt_10.ckpt"):
        (run / name).write_bytes(b"")
    for expected in ("hpc_ckpt_10.ckpt", "hpc_ckpt_2.ckpt", "checkpoints/last.ckpt", "checkpoints/periodic.ckpt"):
        assert resume_checkpoint(run) == run / expected  # 10 after 2: by number, not by name
        (run / expected).unlink()
    assert "continues from the run's previous checkpoint" in _what_to_delete(run / "hpc_ckpt_3.ckpt")  # not: delete the run


def test_a_truncated_last_checkpoint_beside_a_periodic_one_resumes_from_that_as_the_line_says(tmp_path, data_dir):
    """The line said "delete it to resume from the periodic checkpoint beside it", but --resume only looked for
    last.ckpt: following it trained the run again from epoch 0."""
    proc = train(tmp_path, data_dir, "--dataset", "pbmc68k", *FAST, "--checkpoint-every", "1", "--output", tmp_path / "runs",
                 "--run-name", "p", "--logger", "none")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "p"
    (run / "metrics.json").unlink()
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert (run / "checkpoints" / "periodic.ckpt").exists() and not checkpoint.is_symlink()
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    line = one_error_line(train(tmp_path, data_dir, "--resume", run))
    assert "delete it and --resume continues from the periodic checkpoint beside it" in line
    checkpoint.unlink()
    resumed = train(tmp_path, data_dir, "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert "seed 5: ACC" in resumed.stdout and "epoch 2/2:" not in resumed.stdout  # trained again, it evaluates epoch 2


# -- what a run leaves outside its directory --------------------------------------------------------------------------
def test_wandb_logs_stay_in_the_run_directory_and_pyg_leaves_no_generated_modules(tmp_path, finished_run):
    import tempfile

    tmp, _ = finished_run
    home = tmp / "home"
    assert not (home / ".cache" / "wandb").exists()  # wandb-core's debug logs went to the run directory
    assert list((tmp / "runs" / "r" / "wandb" / "cache").rglob("core-debug-*.log"))
    from scrcl.model.encoders import SparseGCNConv

    class FreshLayer(SparseGCNConv):  # a class PyG has not generated code for in this process
        pass

    # PyG names the file it generates "<module>_<class>_propagate_*.py"; only this class's, since another process
    # (a second test worker building PyG's own GCNConv) may write its own meanwhile
    pattern = f"*_{FreshLayer.__name__}_propagate*.py"
    before = set(Path(tempfile.gettempdir()).glob(pattern))
    FreshLayer(4, 3, normalize=False)
    assert set(Path(tempfile.gettempdir()).glob(pattern)) == before


# -- notes instead of silence, .raw when X cannot be used --------------------------------------------------------------
def test_scaled_x_with_raw_runs_on_raw_and_the_summary_says_what_was_changed(tmp_path, data_dir):
    adata = sc.datasets.pbmc68k_reduced()  # X z-scored (negative values), raw log-normalised, 765 genes
    adata.raw.X[5] = 0  # a cell with no expressed gene (in .raw)
    adata.write_h5ad(tmp_path / "scaled.h5ad")
    proc = train(tmp_path, data_dir, "--data", tmp_path / "scaled.h5ad", "--label-key", "bulk_labels", "--hvg", "5000",
                 "--graph-pcs", "900", *FAST, "--output", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note: ")]
    assert any("scaled.h5ad: X has negative values" in n and ".raw is used (765 genes" in n for n in notes), proc.stdout
    assert any(n.startswith("note: 1 cells with no expressed gene were dropped (699 remain)") for n in notes), notes
    assert any("hvg = 5000 asked for, but the data have 765 expressed genes" in n for n in notes), notes
    assert any("graph_pcs = 900 asked for, but the data allow 698 principal components" in n for n in notes), notes


# -- the Python API ---------------------------------------------------------------------------------------------------
def test_api_duplicate_obs_names_work_by_position():
    adata = sc.datasets.pbmc68k_reduced()
    adata.X = adata.raw.X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.obs_names = ["same"] * (adata.n_obs // 2) + [f"c{i}" for i in range(adata.n_obs - adata.n_obs // 2)]
    unique = adata.copy()
    unique.obs_names = [f"u{i}" for i in range(adata.n_obs)]
    for each in (adata, unique):
        scrcl.fit(each, label_key="bulk_labels", epochs=2, hidden_dim=16)
    assert np.isfinite(adata.obsm["X_scrcl"]).all() and adata.obs["scrcl_cluster"].notna().all()
    # each cell's row is its own: the same as with unique names (same seed), not another cell's
    np.testing.assert_allclose(adata.obsm["X_scrcl"], unique.obsm["X_scrcl"], rtol=1e-5, atol=1e-6)
    assert (np.asarray(adata.obs["scrcl_cluster"]) == np.asarray(unique.obs["scrcl_cluster"])).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_clusters": 3.7}, "n_clusters must be a whole number, got 3.7"),
    ({"n_clusters": 3, "lr": float("nan")}, "lr must be a finite number"),
    ({}, "pass n_clusters=C"),
    ({"n_clusters": 3, "k": 0}, "k must be at least 1, got 0"),
])
def test_api_errors_speak_of_arguments(kwargs, message):
    adata = sc.datasets.pbmc68k_reduced()
    with pytest.raises(UserError) as caught:
        scrcl.fit(adata, epochs=1, hidden_dim=8, **kwargs)
    assert message in str(caught.value) and "--" not in str(caught.value)


def test_api_fit_works_with_a_scanpy_users_anndata_and_leaves_the_session_as_it_was():
    """obsm DataFrames (scanpy allows them), a column the data call 'label' (not the labels: none were asked for), a seed
    given as text; twelve clusters listed 0, 1, 2, … 11; and the caller's random streams, deterministic-kernel setting,
    environment and warning filters untouched."""
    import random

    import torch

    adata = sc.datasets.pbmc68k_reduced()
    adata.X = adata.raw.X.copy()
    adata.obsm["meta"] = pd.DataFrame({"q": np.arange(adata.n_obs)}, index=adata.obs_names)
    adata.obsm["spatial"] = np.random.default_rng(0).normal(size=(adata.n_obs, 2))  # no task given: said, not switched
    adata.obs["label"] = "sample1"
    scrcl.fit(adata.copy(), n_clusters=3, epochs=1, hidden_dim=8)  # the libraries' own first-import settings made
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    expected = (np.random.random(), random.random(), torch.rand(1).item())
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    env = dict(os.environ)
    deterministic = torch.are_deterministic_algorithms_enabled()
    levels = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "lightning.fabric")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.var_names = [adata.var_names[1], *adata.var_names[1:]]  # a repeated gene name: warned once, here
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        scrcl.fit(adata, n_clusters=12, seed="5", epochs=1, hidden_dim=8)
        assert warnings.filters == filters
    assert not [w for w in shown if "not unique" in str(w.message)]  # not again for each copy fit makes
    assert any("has a 'label' column; it is not used to score the clusters unless asked for (label_key='label')"
               in str(w.message) for w in shown)
    assert any("adata has spatial coordinates (obsm['spatial']) but runs as scRNA-seq (task='sc'); pass task='st'"
               in str(w.message) for w in shown)
    assert (np.random.random(), random.random(), torch.rand(1).item()) == expected
    assert dict(os.environ) == env
    assert {name: logging.getLogger(name).level for name in levels} == levels
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert adata.uns["scrcl"]["scores"] == {}  # the 'label' column is not scored
    assert list(adata.obs["scrcl_cluster"].cat.categories) == [str(c) for c in range(12)]
    assert adata.uns["scrcl"]["config"]["seed"] == 5 and adata.uns["scrcl"]["config"]["tms"] == [2, 0]  # the generic t₁, t₂, kept as a list


def test_api_refuses_what_it_cannot_do_before_training(tmp_path):
    adata = sc.datasets.pbmc68k_reduced()
    adata.X = adata.raw.X.copy()
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(UserError, match=r"adata is backed by .*a.h5ad .*pass adata.to_memory\(\)"):
        scrcl.fit(backed, n_clusters=3, epochs=1, hidden_dim=8)
    backed.file.close()
    for key, value in (("output", str(tmp_path)), ("seeds", "5,15"), ("data", "x.h5ad")):
        with pytest.raises(UserError, match=f"^{key}= has no effect in scrcl.fit"):
            scrcl.fit(adata, n_clusters=3, epochs=1, hidden_dim=8, **{key: value})
    with pytest.raises(UserError, match="seed must be a whole number .*got None"):
        scrcl.fit(adata, n_clusters=3, seed=None, epochs=1, hidden_dim=8)


def test_a_files_own_label_column_is_not_taken_for_the_labels(tmp_path):
    from datamodules.loading import LABEL, load_file

    adata = sc.datasets.pbmc68k_reduced()
    adata.obs["label"] = adata.obs["bulk_labels"]
    adata.write_h5ad(tmp_path / "a.h5ad")
    loaded = load_file(tmp_path / "a.h5ad")
    assert LABEL not in loaded.adata.obs
    assert [n for n in loaded.provenance["notes"] if "has a 'label'" in n] == [
        f"{tmp_path / 'a.h5ad'} has a 'label' column; it is not used to score the clusters unless asked for (--label-key=label)"]
    assert load_file(tmp_path / "a.h5ad", label_key="label").adata.obs[LABEL].nunique() == 10


def test_api_messages_keep_train_py_help_and_read_values_as_arguments():
    from scrcl.api import _in_api_words

    assert _in_api_words("see python train.py --help") == "see python train.py --help"
    assert _in_api_words("use a smaller --k or more cells; a smaller --radius keeps them") == \
        "use a smaller k or more cells; a smaller radius keeps them"
    assert _in_api_words("leave --devices out; ablate --gpus 0,1,2,3; --lr 1e-3.") == \
        "leave devices out; ablate --gpus 0,1,2,3; lr=1e-3."
    assert _in_api_words("run with --task sc; use a smaller --k, or --radius 0") == "run with task='sc'; use a smaller k, or radius=0"
    assert _in_api_words("(pass --label-key COLUMN, or give --n-clusters C)") == "(pass label_key=COLUMN, or give n_clusters=C)"


def test_ctrl_c_handler_comes_back_when_a_fit_ends_in_an_exception():
    import signal
    from types import SimpleNamespace

    from scrcl.train.callbacks import GracefulStop

    before = signal.getsignal(signal.SIGINT)
    stop = GracefulStop()
    stop.on_fit_start(SimpleNamespace(_signal_connector=SimpleNamespace(received_sigterm=False)), None)
    assert signal.getsignal(signal.SIGINT) is not before
    stop.on_exception(None, None, RuntimeError("a second Ctrl-C"))
    assert signal.getsignal(signal.SIGINT) is before


def test_api_refuses_an_array_with_a_type_error():
    with pytest.raises(TypeError, match="takes an AnnData .* got numpy.ndarray"):
        scrcl.fit(np.ones((10, 5)), n_clusters=2)


def test_one_class_labels_with_n_clusters_are_scored_honestly():
    adata = sc.datasets.pbmc68k_reduced()
    adata.obs["one"] = pd.Categorical(["T"] * adata.n_obs)
    with pytest.raises(UserError, match="single class"):
        scrcl.fit(adata, label_key="one", epochs=1, hidden_dim=8)
    scrcl.fit(adata, n_clusters=3, label_key="one", epochs=1, hidden_dim=8)
    scores = adata.uns["scrcl"]["scores"]
    assert scores["ari"] == 0.0 and scores["acc"] < 1.0  # three clusters against one class: no perfect score


def test_a_per_cell_numeric_column_is_not_taken_for_cell_types():
    """A numeric column (here each cell's total count) made one class per cell: n_clusters near N and scores near
    1.0 for any model."""
    adata = sc.datasets.pbmc68k_reduced()
    with pytest.raises(UserError, match=r"the labels 'n_counts' have \d+ classes for 700 labelled cells.*choose a cell-type column"):
        scrcl.fit(adata, label_key="n_counts", epochs=1, hidden_dim=8)


def test_metrics_json_of_a_finished_run_is_valid(finished_run):
    """What the run printed last is what metrics.json holds; the scores are scores; the counts add up."""
    tmp, proc = finished_run
    metrics = json.loads((tmp / "runs" / "r" / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and metrics["dataset"] == "pbmc68k" and metrics["seed"] == 5
    printed = dict(zip(*[iter(proc.stdout.strip().splitlines()[-1].split())] * 2))
    for key in ("acc", "nmi", "ari", "f1"):
        assert f"{metrics[key]:.4f}" == printed[key.upper()], (key, printed)
        assert -1 <= metrics[key] <= 1 and -1 <= metrics[f"oracle_{key}"] <= 1
    assert metrics["oracle_ari"] >= metrics["ari"]  # the best by labels over the evaluations: an analysis figure only
    assert sum(metrics["cluster_sizes"]) == metrics["n_cells"] and len(metrics["cluster_sizes"]) == metrics["n_clusters"]
    assert metrics["train_seconds"] > 0 and metrics["seconds"] >= metrics["train_seconds"]
    from scrcl.train.results import code_version

    assert metrics["code"] == code_version() != "unknown"  # the commit the run was made with (this checkout's)
    assert code_version(ROOT / "scrcl") == "unknown"  # inside another checkout (a venv in a user's repo): not its commit


def test_resuming_a_run_that_another_process_is_running_is_refused(tmp_path, finished_run, data_dir):
    """Two --resume of one directory would write into each other; the second is one line naming who runs it."""
    import shutil
    import socket

    tmp, _ = finished_run
    run = tmp_path / "r"
    shutil.copytree(tmp / "runs" / "r", run)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".owner").write_text(f"{socket.gethostname()} {sleeper.pid}\n")
        line = one_error_line(train(tmp_path, data_dir, "--resume", run, "--no-progress"))
        assert f"{run} is being run by pid {sleeper.pid}" in line
    finally:
        sleeper.kill()
        sleeper.wait()
    (run / ".owner").write_text(f"{socket.gethostname()} {sleeper.pid}\n")  # its process has exited: taken over
    proc = train(tmp_path, data_dir, "--resume", run, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert not (run / ".owner").exists()  # released when the run returned


# -- mistakes found before any data is read --------------------------------------------------------------------------
@pytest.mark.parametrize("case, args, message", [
    ("unknown flag", ["--dataset", "pollen", "--bogus", "3"], "unrecognized arguments: --bogus 3 (see python train.py --help)"),
    ("flag without its value", ["--dataset", "pollen", "--lr"], "argument --lr: expected one argument"),
    ("config not text", ["--dataset", "pollen", "--config", "BINARY"], "is not a text file (not UTF-8)"),
    ("resume with a broken config.yaml", ["--resume", "BROKEN_RUN"], "config.yaml is not valid YAML"),
    ("resume of a folder that is not there", ["--resume", "MISSING"],
     "is not a directory; --resume takes a run directory written by train.py"),
    ("accelerator Lightning cannot start here", ["--dataset", "pollen", "--accelerator", "tpu"],
     "accelerator must be one of auto, cpu, gpu, cuda, mps, got 'tpu'"),
    ("precision checked only by Lightning, after preprocessing", ["--dataset", "pollen", "--precision", "bogus"],
     "precision must be one of 32-true, bf16-mixed, 16-mixed, got 'bogus'"),
    ("a folder named like a file", ["--data", "FOLDER", "--n-clusters", "3"], "is a folder, not a file; --data takes an .h5ad"),
    ("--seed beside --seeds (it was ignored)", ["--dataset", "pollen", "--seed", "7", "--seeds", "5,15"],
     "give --seed 7 (one run) or --seeds 5,15 (one run each), not both"),
    ("--seed beside seeds from --config", ["--dataset", "pollen", "--seed", "7", "--config", "SEEDS"],
     "--seed 7 is one run, but the config lists seeds [5, 15] (from --config)"),
])
def test_a_mistake_in_the_command_line_is_one_line_before_any_data_is_read(case, args, message, tmp_path, data_dir):
    """Each was a traceback: the flags were parsed outside the one-line handler, a non-UTF-8 file and a run's broken
    config.yaml were read without it, and an accelerator whose backend is missing failed inside Lightning (a precision
    it does not know did too, after the data were preprocessed and cached); a folder
    named ``.h5ad`` was read as a Space Ranger folder and the line spoke of spatial/tissue_positions_list.csv."""
    (tmp_path / "binary.yaml").write_bytes(b"\x00\x01\xff\xfe")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text("seed: [5\n")
    (tmp_path / "mine.h5ad").mkdir()
    (tmp_path / "seeds.yaml").write_text("seeds: 5,15\n")
    args = [{"BINARY": tmp_path / "binary.yaml", "BROKEN_RUN": tmp_path / "broken", "FOLDER": tmp_path / "mine.h5ad",
             "MISSING": tmp_path / "missing", "SEEDS": tmp_path / "seeds.yaml"}.get(a, a)
            for a in args]
    line = one_error_line(train(tmp_path, data_dir, *args, "--output", tmp_path / "runs"))
    assert message in line, line
    assert not (tmp_path / "runs").exists()
    assert not [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]  # stopped before any data were read or cached


def test_a_config_file_that_names_the_dataset_or_the_data_is_obeyed(tmp_path, data_dir):
    """``dataset:`` in --config was overridden by the embedded default (the run trained PBMC 68k and exited 0), and
    ``data:`` was refused as if neither had been given."""
    named = tmp_path / "pollen.yaml"
    named.write_text("dataset: pollen\nepochs: 1\nhidden_dim: 16\n")
    proc = train(tmp_path, data_dir, "--config", named, "--no-umap", "--no-progress", "--logger", "none",
                 "--output", tmp_path / "runs", "--run-name", "p")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "runs" / "p" / "metrics.json").read_text())["dataset"] == "pollen"
    bundled = sc.datasets.pbmc68k_reduced()
    mine = tmp_path / "mine.h5ad"
    sc.AnnData(bundled.raw.X[:200].copy(), obs=bundled.obs[["bulk_labels"]].iloc[:200].copy()).write_h5ad(mine)
    by_file = tmp_path / "mine.yaml"
    by_file.write_text(f"data: {mine}\nlabel_key: bulk_labels\nepochs: 1\nhidden_dim: 16\n")
    proc = train(tmp_path, data_dir, "--config", by_file, "--no-umap", "--no-progress", "--logger", "none",
                 "--output", tmp_path / "runs", "--run-name", "m")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "runs" / "m" / "metrics.json").read_text())["n_cells"] == 200


def test_an_h5ad_without_an_expression_matrix_is_one_line(tmp_path, data_dir):
    """An AnnData written with obs and var but no X was a numpy TypeError traceback."""
    import anndata as ad

    path = tmp_path / "nox.h5ad"
    ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(50)]), var=pd.DataFrame(index=[f"g{i}" for i in range(30)])).write_h5ad(path)
    line = one_error_line(train(tmp_path, data_dir, "--data", path, "--n-clusters", "3", *FAST, "--output", tmp_path / "runs"))
    assert "nox.h5ad has no expression matrix (its X is empty); put counts or log-normalised values in X" in line
    assert not (tmp_path / "runs").exists()
    # an empty folder the user made for the run stays, empty (it was removed with what the run had written in it)
    (tmp_path / "mine" / "myrun").mkdir(parents=True)
    line = one_error_line(train(tmp_path, data_dir, "--data", path, "--n-clusters", "3", *FAST, "--output", tmp_path / "mine",
                                "--run-name", "myrun"))
    assert "has no expression matrix" in line and list((tmp_path / "mine").iterdir()) == [tmp_path / "mine" / "myrun"]
    assert not list((tmp_path / "mine" / "myrun").iterdir())


def test_the_resume_line_of_a_run_name_with_a_space_can_be_pasted():
    """"--resume runs/my run" was printed unquoted: pasted, it read as two arguments."""
    from scrcl.errors import Interrupted

    assert str(Interrupted(15, 3, "runs/my run")).endswith("continue with: python train.py --resume 'runs/my run'")
