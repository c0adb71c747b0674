"""Scaling (issue 4): training in linear mode never holds an N x N tensor; the scaling benchmark runs.

The probe records the largest dense tensor any torch op produces (TorchDispatchMode) while one epoch
trains on the real pbmc10x cells through the real path (``runner.train_one``: Lightning, the
evaluation callback with k-means, scores and the UMAP plot, the checkpoint). The same probe run with
``loss_impl: dense`` must see an N x N tensor. The numpy side of the evaluation (k-means on N x 2c',
contingency-table scores, UMAP on at most ``UMAP_MAX_CELLS`` cells) holds no N x N array by
construction; the UMAP cap is checked here on the real path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from datamodules.datamodule import ScRCLDataModule
from scrcl.eval import plots
from scrcl.train import run as runner
from scrcl.train.config import resolve_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class LargestDenseTensor(TorchDispatchMode):
    """Records the largest strided (dense) tensor produced by any torch op, and its shape."""

    def __init__(self):
        super().__init__()
        self.largest, self.shape = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.numel() > self.largest:
                self.largest, self.shape = t.numel(), tuple(t.shape)
        return out


@pytest.fixture(scope="module")
def pbmc10x(data_dir):
    """All 4271 real pbmc10x cells, prepared by the DataModule; d = 64 keeps every N x d array far below N²."""
    config = resolve_config(dataset="pbmc10x", overrides={
        "data_dir": str(data_dir), "hidden_dim": 64, "epochs": 1, "eval_every": 1, "logger": "none", "progress": False,
    })
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    return config, datamodule


def probe_one_epoch(config, datamodule, run_dir) -> LargestDenseTensor:
    """Train one epoch through ``runner.train_one`` under the probe."""
    with LargestDenseTensor() as probe:
        runner.train_one(config, datamodule, seed=5, run_dir=run_dir)
    return probe


def test_linear_training_epoch_holds_no_n_by_n(pbmc10x, tmp_path, monkeypatch):
    config, datamodule = pbmc10x
    n = datamodule.n_cells
    assert n == 4271
    # The largest legitimate arrays are N x genes (the input): well below N², so an N x N one stands out.
    assert datamodule.n_genes * n < 0.5 * n * n
    fitted = []
    original = plots.umap_coordinates

    def recording_umap(embedding, seed=0):
        idx, xy = original(embedding, seed)
        fitted.append((embedding.shape[0], idx.size))
        return idx, xy

    monkeypatch.setattr(plots, "umap_coordinates", recording_umap)
    monkeypatch.setattr(plots, "UMAP_MAX_CELLS", 3000)  # the real path's subsample, exercised at this size

    probe = probe_one_epoch({**config, "loss_impl": "linear"}, datamodule, tmp_path / "run")

    assert probe.largest < n * n, f"an N x N tensor appeared: shape {probe.shape}"
    assert (tmp_path / "run" / "umap_final.png").exists()
    assert fitted == [(n, 3000)]  # above the cap the UMAP is fit on a subsample of exactly the cap


def test_probe_sees_the_dense_objective(pbmc10x):
    """The same probe fails the dense form: the check above can fail."""
    config, datamodule = pbmc10x
    n = datamodule.n_cells
    probe = probe_one_epoch({**config, "loss_impl": "dense"}, datamodule, None)
    assert probe.largest >= n * n
    assert probe.shape == (n, n)


def test_scaling_benchmark_rejects_bad_sizes():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--sizes", "2k,8k"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--sizes" in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_scaling_benchmark_quick_prints_its_json_line(tmp_path, data_dir):
    """``--quick`` at a small width: real resampled cells, both forms, the report, the PNG, the JSON line."""
    output = tmp_path / "scaling.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--quick", "--hidden-dim", "32", "--epochs", "2",
         "--threads", "1", "--data-dir", str(data_dir), "--output", str(output)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["n"] == [2000, 8000]
    for key in ("linear_s_per_epoch", "dense_s_per_epoch", "linear_peak_mb", "dense_peak_mb"):
        assert len(line[key]) == 2 and all(v is not None and v > 0 for v in line[key]), (key, line)
    text = output.read_text()
    assert "| 8000 |" in text and "Machine:" in text and "Sparse input" in text
    assert output.with_suffix(".png").stat().st_size > 0
    assert np.isfinite(line["linear_s_per_epoch"]).all()
