"""studies/per_type.py: the graph's type-to-type edge mix and each type's recovered fraction, by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[2]

from studies import per_type


def test_edge_mix_rows_are_shares_of_each_types_edges_without_self_loops_or_unlabelled_cells():
    # directed edges: 0→1 (a→a), 0→2 (a→b), 1→0 (a→a), 2→0 (b→a), 2→3 (b→b), 3→4 (4 unlabelled), 1→1 (self loop)
    rows, cols = [0, 0, 1, 2, 2, 3, 1], [1, 2, 0, 0, 3, 4, 1]
    graph = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(5, 5))
    y = np.array([0, 0, 1, 1, -1])
    mix = per_type.edge_mix(graph, y, 2)
    np.testing.assert_allclose(mix, [[2 / 3, 1 / 3], [1 / 2, 1 / 2]])


def test_matched_recall_uses_the_one_to_one_matching_and_leaves_a_merged_type_at_zero():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    # cluster 5 holds types 0 (3 cells) and 1 (2 cells): matched to type 0; cluster 7 holds type 2 and one 0
    pred = np.array([5, 5, 5, 7, 5, 5, 7, 7])
    recall = per_type.matched_recall(y, pred, 3)
    np.testing.assert_allclose(recall, [3 / 4, 0.0, 1.0])
    assert pred.tolist() == [5, 5, 5, 7, 5, 5, 7, 7]  # input untouched


def test_bad_run_directory_is_one_line_and_exit_2(tmp_path, capsys):
    from scrcl.errors import run_entry

    assert run_entry(per_type.main, [str(tmp_path / "missing"), "--output", str(tmp_path / "t.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a directory" in err[0]
    assert not (tmp_path / "t.md").exists()


@pytest.mark.slow
def test_table_of_a_finished_run_matches_its_metrics(tmp_path, data_dir):
    """Train a short real run, then the table's scRCL ARI is the run's own metrics.json ARI."""
    import json
    import subprocess

    out = tmp_path / "runs"
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset", "pollen", "--epochs", "3", "--hidden-dim", "32",
                    "--no-progress", "--no-umap", "--logger", "none", "--output", str(out), "--run-name", "r",
                    "--data-dir", str(data_dir)], check=True, capture_output=True, cwd=tmp_path)
    table = tmp_path / "t.md"
    assert per_type.main([str(out / "r"), "--data-dir", str(data_dir), "--output", str(table)]) == 0
    metrics = json.loads((out / "r" / "metrics.json").read_text())
    text = table.read_text()
    assert f"ARI / NMI: scRCL {metrics['ari']:.3f}" in text
    assert text.count("\n| ") == 1 + metrics["n_clusters"]  # header + one row per annotated type


def test_a_spatial_runs_baseline_gets_the_same_spot_vote(monkeypatch):
    """radius > 0 on a spatial run: PCA + k-means is refined by the vote before it is scored, as scrcl_cluster is."""
    from types import SimpleNamespace

    import pandas as pd
    import torch

    from scrcl.experiments.tables import pca_kmeans
    from scrcl.eval import analyses
    from scrcl.train import results
    from scrcl.eval.clustering import refine_spatial
    from scrcl.eval.metrics import clustering_scores

    rng = np.random.default_rng(0)
    n = 60
    y = np.repeat([0, 1, 2], n // 3)
    x = (rng.normal(size=(n, 40)) + 0.3 * y[:, None]).astype(np.float32)  # k-means errs; the vote mends part
    coords = np.c_[np.arange(n) % 10, np.arange(n) // 10].astype(np.float32)
    batch = SimpleNamespace(x=torch.from_numpy(x), y=torch.from_numpy(y), coords=torch.from_numpy(coords))
    graph = sp.csr_matrix(np.eye(n, k=1) + np.eye(n, k=-1))
    datamodule = SimpleNamespace(batch=batch, label_names=["L1", "L2", "WM"], n_clusters=3, task="st",
                                 prepared=SimpleNamespace(obsp={"cell_graph": graph}))
    result = SimpleNamespace(obs=pd.DataFrame({analyses.CLUSTER: y.astype(str)}))
    run = SimpleNamespace(result=result, config={"dataset": "fake", "radius": 4, "k": 2}, datamodule=datamodule, seed=5)
    monkeypatch.setattr(results, "load_run", lambda run_dir, data_dir=None: run)
    out = per_type.run_rows(Path("fake"), None)
    raw = pca_kmeans(x, 3, seed=5)
    voted = refine_spatial(raw, coords, 4)
    assert (voted != raw).any()  # else this test could not tell the two apart
    assert out["radius"] == 4 and out["baseline"] == clustering_scores(y, voted)
    run.config["radius"] = 0
    assert per_type.run_rows(Path("fake"), None)["baseline"] == clustering_scores(y, raw)
