"""Training on real data (scanpy's bundled PBMC 68k subset): determinism, learning, the Python API."""

import os

import numpy as np
import pytest
import scanpy as sc
import torch

from scrcl.train import rundir
import scrcl
from scrcl.train import run as runner
from scrcl.train.config import resolve_config
from scrcl.errors import UserError

FAST = {"hidden_dim": 64, "epochs": 6, "eval_every": 3, "logger": "none", "progress": False, "lr": 1e-3}


def test_same_seed_same_result(pbmc):
    config, datamodule = pbmc
    first = runner.train_one(config, datamodule, seed=7, run_dir=None)
    second = runner.train_one(config, datamodule, seed=7, run_dir=None)
    assert first["final"]["scores"] == second["final"]["scores"]
    np.testing.assert_array_equal(first["final"]["embedding"], second["final"]["embedding"])
    other = runner.train_one(config, datamodule, seed=8, run_dir=None)
    assert not np.array_equal(first["final"]["embedding"], other["final"]["embedding"])


def test_evaluation_frequency_does_not_change_the_result(pbmc):
    """The same seed ends with the same embedding and scores whether k-means ran after every epoch or only at the
    end: an evaluation leaves the training's random streams (dropout) where it found them."""
    config, datamodule = pbmc
    every = runner.train_one({**config, "eval_every": 1}, datamodule, seed=5, run_dir=None)
    end_only = runner.train_one({**config, "eval_every": 50}, datamodule, seed=5, run_dir=None)
    assert len(every["history"]) == config["epochs"] and len(end_only["history"]) == 1
    assert every["last"]["scores"] == end_only["last"]["scores"]  # the last epoch's (the generic config reports a
    np.testing.assert_array_equal(every["last"]["embedding"], end_only["last"]["embedding"])  # selected one)


def test_an_evaluation_that_draws_random_numbers_leaves_the_training_streams_alone():
    import random

    from scrcl.train.callbacks import training_streams_kept

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    with training_streams_kept(torch.device("cpu")):
        torch.rand(10), np.random.rand(10), random.random()  # what an evaluation might draw (UMAP, a plot, k-means)
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1]) and after[2] == expected[2]


def test_training_learns_cell_types(pbmc):
    """The loss falls and the final clustering recovers the FACS labels far above chance."""
    config, datamodule = pbmc
    outcome = runner.train_one({**config, "epochs": 20, "eval_every": 4}, datamodule, seed=5, run_dir=None)
    history = outcome["history"]
    assert [h["epoch"] for h in history] == [4, 8, 12, 16, 20]
    assert history[-1]["loss"] < history[0]["loss"]
    final = outcome["last"]["scores"]
    assert final["ari"] > 0.25 and final["nmi"] > 0.4, final
    assert history[-1]["ari"] == final["ari"]
    reported = outcome["final"]  # the generic config reports the best-silhouette evaluation: no label picks it
    assert reported["epoch"] == max(history, key=lambda h: h["silhouette"])["epoch"]
    assert reported["scores"]["ari"] > 0.25, reported["scores"]
    # one time per epoch, within the training's time; the evaluations (k-means) fall inside their epochs
    seconds = outcome["epoch_seconds"]
    assert len(seconds) == 20 and min(seconds) > 0 and sum(seconds) <= outcome["train_seconds"]
    evaluated = [s for epoch, s in enumerate(seconds, start=1) if epoch % 4 == 0]
    assert np.median(evaluated) > np.median([s for epoch, s in enumerate(seconds, start=1) if epoch % 4])


def test_bf16_mixed_precision_trains_on_cpu(pbmc):
    """``--precision bf16-mixed`` on the CPU (about 1.8x faster per epoch at pbmc10x's size, README): it
    trains through the real Trainer, the logged loss keeps float32's digits, and it learns the cell types
    as the float32 run does."""
    config, datamodule = pbmc
    outcome = runner.train_one({**config, "epochs": 20, "eval_every": 4, "precision": "bf16-mixed"}, datamodule,
                               seed=5, run_dir=None)
    history = outcome["history"]
    losses = [h["loss"] for h in history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # float32 values, not bfloat16 ones (~3 digits: the log showed 95.0, 79.5): a float32 loss is almost never
    # exactly representable in bfloat16, a bfloat16 one always is
    assert any(torch.tensor(v, dtype=torch.float32).to(torch.bfloat16).item() != v for v in losses)
    final = outcome["final"]["scores"]
    assert final["ari"] > 0.25 and final["nmi"] > 0.4, final


def test_api_fit_without_labels_fills_adata():
    adata = sc.datasets.pbmc68k_reduced()
    adata.X = adata.raw.X.copy()  # the model takes counts or log-normalised values, not z-scores
    before = adata.obs.columns.tolist()
    out = scrcl.fit(adata, n_clusters=6, epochs=3, hidden_dim=32)
    assert out is adata
    assert adata.obsm["X_scrcl"].shape == (700, 12)
    assert np.isfinite(adata.obsm["X_scrcl"]).all()
    assert adata.obs["scrcl_cluster"].nunique() == 6
    assert adata.uns["scrcl"]["scores"] == {}
    assert adata.obs.columns.tolist() == before + ["scrcl_cluster"]


def test_api_fit_with_labels_scores_and_needs_clusters_otherwise():
    adata = sc.datasets.pbmc68k_reduced()
    adata.X = adata.raw.X.copy()
    scrcl.fit(adata, label_key="bulk_labels", epochs=3, hidden_dim=32)
    scores = adata.uns["scrcl"]["scores"]
    assert set(scores) == {"acc", "nmi", "ari", "f1"} and 0 < scores["nmi"] <= 1
    unlabelled = sc.datasets.pbmc68k_reduced()
    unlabelled.X = unlabelled.raw.X.copy()
    with pytest.raises(UserError, match="n_clusters="):  # the API's words, not the CLI's --n-clusters
        scrcl.fit(unlabelled, epochs=1, hidden_dim=16)


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    """Two W&B agents (or sweep workers) starting together compute the same automatic name; the
    exclusive claim gives the second NAME-2 instead of letting both write into one directory."""
    root = tmp_path / "runs" / "pbmc68k-20261124-120000"
    first = rundir.claim_run_dir(root, named=False)
    (first / "config.yaml").write_text("seed: 5\n")
    second = rundir.claim_run_dir(root, named=False)
    third = rundir.claim_run_dir(root, named=False)
    assert [first.name, second.name, third.name] == [root.name, root.name + "-2", root.name + "-3"]
    assert (first / "config.yaml").read_text() == "seed: 5\n"
    assert [f.name for f in second.iterdir()] == ["config.yaml"]
    assert (second / "config.yaml").read_text().startswith("# claimed by host ")  # the claim, until the config is written
    # a name the user chose is used as it is, once: a second claimant is refused with one line
    assert rundir.claim_run_dir(tmp_path / "mine", named=True) == tmp_path / "mine"
    with pytest.raises(UserError, match="taken by another run"):
        rundir.claim_run_dir(tmp_path / "mine", named=True)


@pytest.mark.parametrize("name", ["../outside", "/tmp/abs", "a/../../b"])
def test_run_name_cannot_leave_the_output_directory(tmp_path, name):
    with pytest.raises(UserError, match="inside --output"):
        rundir.run_dir_for({"output": str(tmp_path), "run_name": name})
    assert rundir.run_dir_for({"output": str(tmp_path), "run_name": "batch/seed5"}) == tmp_path / "batch" / "seed5"


def test_evaluation_line_with_and_without_labels():
    from scrcl.train.callbacks import evaluation_line

    labelled = {"epoch": 200, "acc": 0.79676, "nmi": 0.76, "ari": 0.731149, "f1": 0.69293, "kmeans_s": 5.64, "loss": 1.39124}
    assert evaluation_line(labelled, 500) == "epoch 200/500: loss 1.3912; ACC 0.7968 NMI 0.7600 ARI 0.7311 F1 0.6929; k-means 5.6 s"
    assert evaluation_line({"epoch": 3, "kmeans_s": 0.04}, 10) == "epoch 3/10: k-means 0.0 s"


def test_no_umap_draws_no_umap_and_leaves_the_scores_alone(pbmc, tmp_path, monkeypatch):
    """``umap: false`` (--no-umap) skips every UMAP, the final one included; the run is otherwise the same."""
    from scrcl.eval import plots

    config, datamodule = pbmc

    def no_umap_allowed(*args, **kwargs):
        raise AssertionError("a UMAP was fit although umap is false")

    monkeypatch.setattr(plots, "umap_coordinates", no_umap_allowed)
    settings = {**config, "epochs": 3, "eval_every": 1, "umap_every": 1, "umap": False}
    without = runner.train_one(settings, datamodule, seed=7, run_dir=tmp_path / "a")
    assert not list((tmp_path / "a").rglob("*.png"))
    monkeypatch.undo()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a launcher's CPU lane sets it; umap-learn's fit resets it to all cores
    try:
        plotted = runner.train_one({**settings, "umap": True}, datamodule, seed=7, run_dir=tmp_path / "b")
        assert torch.get_num_threads() == 1, "the UMAPs changed torch's thread count"
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "b" / "umap_final.png").exists() and len(list((tmp_path / "b" / "umap").glob("*.png"))) == 2
    assert without["final"]["scores"] == plotted["final"]["scores"]


def test_torch_threads_kept_restores_the_count():
    import torch

    from scrcl.eval.plots import torch_threads_kept

    before = torch.get_num_threads()
    with torch_threads_kept():
        torch.set_num_threads(before + 2)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("key", ["umap", "refine", "cache", "progress"])
def test_switches_must_be_true_or_false(key):
    assert resolve_config(dataset="pbmc68k", overrides={key: False})[key] is False
    assert resolve_config(dataset="pbmc68k", overrides={key: "no"})[key] is False  # a flag's or W&B's word
    with pytest.raises(UserError, match=f"{key} must be true or false, got 'maybe'"):
        resolve_config(dataset="pbmc68k", overrides={key: "maybe"})


@pytest.mark.parametrize("key, value, message", [
    ("checkpoint_every", -3, "checkpoint_every must be ≥ 0, got -3 (checkpoint_every: checkpoint every N epochs (0 = only at the end))"),  # was Lightning's traceback
    ("umap_every", -1, "umap_every must be ≥ 0, got -1 (umap_every: UMAP plot every N evaluations (0 = only at the end))"),  # was taken silently
    ("gene_dim", 0, "gene_dim must be at least 1, got 0"),  # was read as "not given" (the cluster count)
    ("gene_dim", -5, "gene_dim must be at least 1, got -5"),  # was a traceback from torch
    ("gene_dim", "wide", "gene_dim must be a whole number, got 'wide'"),
    ("seed", -1, "seeds must be in 0 … 4294967295 (numpy's range), got -1"),  # was numpy's traceback
    ("seed", 2**32, "seeds must be in 0 … 4294967295 (numpy's range), got 4294967296"),
    ("seeds", "5,-15", "seeds must be in 0 … 4294967295 (numpy's range), got -15"),
    ("seeds", "5,15,5", "seeds lists 5 more than once; each seed is one run"),  # the sweep said "two trials share a run directory"
    ("hidden_dim", "1.5k", "hidden_dim must be a whole number, got '1.5k'"),
    ("lr", "fast", "lr must be a finite number, got 'fast'"),
    ("devices", 2, "devices = 2: scRCL trains on the whole graph in one batch, so a run uses one device; to use several GPUs, "
                   "run trials side by side: python -m scrcl.experiments.sweep / scrcl.experiments.ablate --gpus 0,1,2,3 (or one train.py per GPU with "
                   "CUDA_VISIBLE_DEVICES)"),  # was a hang: DDP's second rank failed on the run directory, rank 0 waited
    ("devices", "0", "devices = 0: a run needs one device; leave --devices out"),  # was the advice for several GPUs
])
def test_out_of_range_settings_are_one_user_error(key, value, message):
    with pytest.raises(UserError) as err:
        resolve_config(dataset="pbmc68k", overrides={key: value})
    assert str(err.value).startswith(message)  # a range error then names what the key is


def test_zero_means_only_at_the_end_for_checkpoints_and_umaps():
    config = resolve_config(dataset="pbmc68k", overrides={"checkpoint_every": 0, "umap_every": 0, "seed": 0, "gene_dim": 1})
    assert (config["checkpoint_every"], config["umap_every"], config["seed"], config["gene_dim"]) == (0, 0, 0, 1)


@pytest.mark.parametrize("eval_every, what, epoch", [(1, "embedding", 1), (5, "loss", 2)])
def test_a_diverging_run_stops_with_one_user_error(pbmc, eval_every, what, epoch):
    """lr = 1e8 turns the weights to NaN in one step: the next evaluation (k-means) or the next loss says so,
    instead of sklearn's 'Input X contains NaN' traceback or 500 epochs of NaN."""
    from scrcl.errors import TrainingDiverged

    config, datamodule = pbmc
    with pytest.raises(TrainingDiverged) as err:
        runner.train_one({**config, "lr": 1e8, "epochs": 3, "eval_every": eval_every}, datamodule, seed=7, run_dir=None)
    assert str(err.value) == (f"training diverged: the {what} is NaN or infinite at epoch {epoch} (lr = 1e+08); "
                              "lower --lr, or check the input for extreme values")


def test_training_writes_its_checkpoints_without_the_system_temp_dir(pbmc, tmp_path, monkeypatch):
    """train_one saves through AtomicCheckpointIO: checkpoints land whole even with $TMPDIR unusable."""
    import tempfile

    config, datamodule = pbmc
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))
    runner.train_one({**config, "epochs": 2, "eval_every": 2, "checkpoint_every": 1, "umap": False}, datamodule, seed=7,
                     run_dir=tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    periodic = torch.load(ckpts / "periodic.ckpt", map_location="cpu", weights_only=False)  # ModelCheckpoint's
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)  # the end-of-training save
    assert periodic["epoch"] == 1 and last["epoch"] == 2 and "model.view_m.linear.weight" in last["state_dict"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "periodic.ckpt"]


def test_with_wandb_disabled_the_loggers_leave_the_environment_alone(tmp_path, monkeypatch):
    """WANDB_CACHE_DIR points W&B's debug logs at the run only when W&B logs: a disabled W&B must not leave it set for
    the rest of the process and every subprocess it starts (a later run would take it for the user's own)."""
    from scrcl.train.loggers import make_loggers

    monkeypatch.delenv("WANDB_CACHE_DIR", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    loggers = make_loggers({"logger": "wandb"}, tmp_path / "run", seed=5)
    assert [type(logger).__name__ for logger in loggers] == ["CSVLogger"]
    assert "WANDB_CACHE_DIR" not in os.environ


def test_a_resumed_run_keeps_its_wandb_run_and_a_new_run_gets_its_own(tmp_path, monkeypatch):
    """--resume opened a second W&B run of the same name (its steps starting again at 0): the id is kept in the run."""
    from scrcl.train.loggers import make_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))  # as a user's own: left where it is

    def init(**kwargs):
        wandb = [logger for logger in make_loggers({"logger": "wandb"}, tmp_path / "run", seed=5, **kwargs)
                 if type(logger).__name__ == "WandbLogger"]
        return wandb[0]._wandb_init

    first = init()
    assert first["id"] == (tmp_path / "run" / "wandb" / "run_id").read_text().strip()
    again = init(resume_epoch=7)
    assert (again["id"], again["resume"]) == (first["id"], "allow")
    assert init()["id"] != first["id"]  # a new run in the same place (after the old one was removed)


def test_the_wandb_summary_holds_what_the_run_reports_beside_the_final_and_oracle_figures():
    """W&B's summary held the last logged val/* (the final epoch) while the run reported the epoch that select chose."""
    from types import SimpleNamespace

    from scrcl.train.run import _reported_summary

    last = {"epoch": 40, "scores": {"ari": 0.33, "nmi": 0.56}}
    chosen = {"epoch": 15, "scores": {"ari": 0.37, "nmi": 0.58}, "criterion": 0.61}
    evaluator = SimpleNamespace(select="silhouette", final=last, oracle=lambda: {"oracle_epoch": 10, "oracle_ari": 0.4})
    assert _reported_summary(chosen, evaluator) == {
        "reported/ari": 0.37, "reported/nmi": 0.58, "reported/epoch": 15, "reported/selected_by": "silhouette",
        "final/ari": 0.33, "final/nmi": 0.56, "oracle_epoch": 10, "oracle_ari": 0.4}
    assert _reported_summary(last, SimpleNamespace(select="final", final=last, oracle=dict))["reported/selected_by"] == "final epoch"


def test_an_image_goes_to_the_step_of_its_epochs_scores():
    """Lightning logs an epoch's scores at global_step - 1; the UMAP went to global_step, one step later."""
    from types import SimpleNamespace

    from scrcl.train.callbacks import _log_image

    steps = []
    logger = SimpleNamespace(log_image=lambda key, images, step: steps.append((key, step)))
    _log_image(SimpleNamespace(loggers=[logger], global_step=3), "umap", "u.png")
    _log_image(SimpleNamespace(loggers=[SimpleNamespace()], global_step=0), "umap", "u.png")  # a CSV logger: no images
    assert steps == [("umap", 2)]
