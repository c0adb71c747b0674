"""Label-free ways to keep what training found (config keys lr_schedule, weight_averaging, select): each does what it
says, on real data through the real training path; labels only score; the published settings keep them off."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import calinski_harabasz_score, silhouette_score

from scrcl.eval.metrics import internal_scores
from scrcl.train import run as runner
from scrcl.train.callbacks import AveragedWeights
from scrcl.train.config import CONFIG_DIR, resolve_config
from scrcl.train.module import build_module

FAST = {"hidden_dim": 32, "epochs": 8, "eval_every": 2, "logger": "none", "progress": False, "lr": 1e-3, "umap": False}


def test_internal_scores_are_scikit_learns_and_nan_for_one_cluster():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    labels = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0)
    got = internal_scores(x, labels, seed=3)
    assert got["silhouette"] == pytest.approx(silhouette_score(x, labels, metric="cosine"))
    assert got["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(x, labels))
    assert all(np.isnan(v) for v in internal_scores(x, np.zeros(300, int)).values())


def test_cosine_schedule_ends_at_zero_and_constant_keeps_lr():
    config = resolve_config(dataset="pbmc68k", overrides={**FAST, "lr_schedule": "cosine", "epochs": 10})
    module = build_module(config, n_cells=20, n_genes=8, n_clusters=3)
    configured = module.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "epoch"
    lrs = []
    for _ in range(10):
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[4] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 5 / 10)))
    constant = build_module({**config, "lr_schedule": "constant"}, 20, 8, 3).configure_optimizers()
    assert isinstance(constant, torch.optim.Optimizer)


def test_ema_is_the_exponential_average_of_the_weights_after_each_step():
    """AveragedWeights(ema) holds avg₁ = w₁, avgₜ = d·avgₜ₋₁ + (1 − d)·wₜ (torch's AveragedModel), per step."""
    net = torch.nn.Linear(3, 2)
    callback = AveragedWeights("ema", decay=0.9)
    trainer, module = SimpleNamespace(current_epoch=0, max_epochs=10), SimpleNamespace(model=net)
    callback.on_fit_start(trainer, module)
    expected = None
    for step in range(4):
        with torch.no_grad():
            net.weight.add_(float(step + 1))
        callback.on_train_batch_end(trainer, module, None, None, 0)
        w = net.weight.detach().clone()
        expected = w if expected is None else 0.9 * expected + 0.1 * w
    torch.testing.assert_close(callback.network().weight, expected)


def test_swa_is_the_equal_average_from_its_start_and_the_live_weights_before():
    """AveragedWeights(swa, start=0.5) over 6 epochs averages the weights after epochs 3..6 equally; before the first
    of them the evaluations cluster the live weights, not the copy of the initial ones the average starts from."""
    net = torch.nn.Linear(3, 2)
    callback = AveragedWeights("swa", start=0.5)
    trainer, module = SimpleNamespace(current_epoch=0, max_epochs=6), SimpleNamespace(model=net)
    callback.on_fit_start(trainer, module)
    averaged = []
    for epoch in range(6):
        trainer.current_epoch = epoch
        with torch.no_grad():
            net.weight.mul_(1.5).add_(1.0)
        callback.on_train_batch_end(trainer, module, None, None, 0)
        if epoch >= 3:
            averaged.append(net.weight.detach().clone())
        else:
            assert callback.network() is net  # nothing averaged yet
    torch.testing.assert_close(callback.network().weight, torch.stack(averaged).mean(0))
    assert callback.network() is not net


def test_averaged_weights_selection_and_the_final_epoch_beside_it(pbmc, tmp_path):
    """EMA + cosine + select silhouette on pbmc68k: every evaluation records both criteria and the live weights'
    figures; the reported evaluation is the one with the best silhouette (no label involved); metrics.json keeps the
    final epoch as final_*; the averaged weights give another embedding than the live ones."""
    config, datamodule = pbmc
    config = {**config, "weight_averaging": "ema", "lr_schedule": "cosine", "select": "silhouette", "output": str(tmp_path)}
    outcome = runner.train_one(config, datamodule, seed=5, run_dir=None)
    history = outcome["history"]
    assert [h["epoch"] for h in history] == [2, 4, 6, 8]
    for h in history:
        assert {"silhouette", "calinski_harabasz", "live_silhouette", "live_ari", "ari"} <= set(h)
    best = max(history, key=lambda h: h["silhouette"])
    assert outcome["final"]["epoch"] == best["epoch"] and outcome["last"]["epoch"] == 8
    assert outcome["final"]["scores"]["ari"] == best["ari"]
    assert any(h["ari"] != h["live_ari"] for h in history)

    result = runner.run({**config, "run_name": "r"}, log=lambda *_: None)
    metrics = json.loads((result["run_dir"] / "metrics.json").read_text())
    assert metrics["selected_by"] == "silhouette" and metrics["final_epoch"] == 8
    assert metrics["epoch"] == best["epoch"] and metrics["ari"] == pytest.approx(best["ari"])
    assert metrics["final_ari"] == pytest.approx(history[-1]["ari"])


def test_selection_changes_what_is_reported_not_the_training(pbmc):
    """select only chooses among the evaluations: the same seed with select final gives the same history, epoch for
    epoch (studies/keep_found.py relies on it to read every criterion from one run)."""
    config, datamodule = pbmc
    config = {**config, "weight_averaging": "ema"}
    chosen = runner.train_one({**config, "select": "silhouette"}, datamodule, seed=5, run_dir=None)
    final = runner.train_one({**config, "select": "final"}, datamodule, seed=5, run_dir=None)
    untimed = [[{k: v for k, v in h.items() if not k.endswith("_s")} for h in run["history"]] for run in (chosen, final)]
    assert untimed[0] == untimed[1]  # everything but the seconds each evaluation took
    assert final["final"]["epoch"] == 8 and chosen["final"]["epoch"] == max(chosen["history"], key=lambda h: h["silhouette"])["epoch"]


def averaged_and_plain(config, datamodule, keys) -> list[dict]:
    """Train the same seed with and without EMA; assert that every evaluation's live ``keys`` (and the loss) of the EMA
    run are those of the run without averaging; return the EMA run's history."""
    averaged = runner.train_one({**config, "weight_averaging": "ema"}, datamodule, seed=5, run_dir=None)["history"]
    plain = runner.train_one({**config, "weight_averaging": "none"}, datamodule, seed=5, run_dir=None)["history"]
    assert [h["epoch"] for h in averaged] == [h["epoch"] for h in plain]
    for a, p in zip(averaged, plain):
        for key in (*keys, "loss"):
            assert a[f"live_{key}" if key != "loss" else key] == p[key], (a["epoch"], key)
    return averaged


def test_averaging_leaves_the_live_trajectory_as_a_run_without_it(pbmc):
    """weight_averaging only watches: the live weights of an EMA run give, evaluation for evaluation, what the same seed
    gives without averaging. The results tables rest on it when they show an EMA run's live final epoch as the
    reference's way of training (and the published settings, which average nothing, as the same trajectory)."""
    config, datamodule = pbmc
    averaged = averaged_and_plain(config, datamodule, ("ari", "nmi", "silhouette", "calinski_harabasz"))
    assert [h["epoch"] for h in averaged] == [2, 4, 6, 8]
    assert any(a["ari"] != a["live_ari"] for a in averaged)  # and the averaged weights are another set of weights


def test_averaging_leaves_the_live_trajectory_on_a_published_spatial_slice():
    """The same on DLPFC 151673 at its published settings (Adam + L2, the reference's network, the spatial vote), which
    benchmarks/results/SPATIAL.md reports through an EMA run's live weights."""
    from datamodules.datamodule import ScRCLDataModule

    config = resolve_config(dataset="dlpfc_151673", overrides={**FAST, "hidden_dim": 16, "epochs": 4, "lr": 1e-4})
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    assert config["optimizer"] == "adam" and config["weight_averaging"] == "none" and config["radius"] > 0
    averaged = averaged_and_plain(config, datamodule, ("ari", "ari_unrefined", "nmi", "silhouette"))
    assert [h["epoch"] for h in averaged] == [2, 4]


def test_a_resumed_run_reports_the_evaluation_chosen_before_the_interruption(pbmc):
    """The evaluator keeps the chosen evaluation (its arrays too) in the checkpoint."""
    from scrcl.train.callbacks import ClusteringEvaluator

    config, datamodule = pbmc
    first = ClusteringEvaluator(datamodule.batch, datamodule.n_clusters, seed=5, every=2, select="calinski_harabasz")
    embedding = np.random.default_rng(0).normal(size=(datamodule.n_cells, 4)).astype(np.float32)
    pred = np.arange(datamodule.n_cells) % 3
    first.selected = {"epoch": 4, "scores": {"ari": 0.5}, "criterion": 12.0, "internal": {"calinski_harabasz": 12.0},
                      "embedding": embedding, "pred": pred, "pred_unrefined": pred}
    second = ClusteringEvaluator(datamodule.batch, datamodule.n_clusters, seed=5, every=2, select="calinski_harabasz")
    second.load_state_dict(first.state_dict())
    second.final = {"epoch": 8}
    assert second.reported()["epoch"] == 4 and second.reported()["criterion"] == 12.0
    np.testing.assert_array_equal(second.reported()["embedding"], embedding)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "datasets").glob("*.yaml")))
def test_published_settings_keep_the_reference_behaviour(name):
    config = resolve_config(dataset=name)
    assert (config["lr_schedule"], config["weight_averaging"], config["select"]) == ("constant", "none", "final")
