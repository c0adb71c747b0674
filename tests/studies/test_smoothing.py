"""studies/smoothing.py: PCA + k-means on Fᵗ X and the graph's homophily, against direct computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[2]

from studies import smoothing
from datamodules.datamodule import ScRCLDataModule


def test_homophily_counts_same_label_edges_and_skips_self_loops_and_unlabelled():
    # edges 0-1 (same), 1-2 (differ), 2-3 (same), 3-4 (4 unlabelled: skipped), plus self-loops (skipped)
    rows = [0, 1, 1, 2, 2, 3, 3, 4, 0, 2]
    cols = [1, 0, 2, 1, 3, 2, 4, 3, 0, 2]
    graph = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(5, 5))
    y = np.array([0, 0, 1, 1, -1])
    assert smoothing.homophily(graph, y) == pytest.approx(4 / 6)


def test_rows_equal_pca_kmeans_on_the_datamodules_own_inputs(data_dir):
    """t = 0 is PCA + k-means on the model input X; t = 2 at the config's k is the MLP view's F² X."""
    from scrcl.experiments.tables import table_config
    from scrcl.experiments.tables import pca_kmeans
    from scrcl.eval.metrics import clustering_scores

    rows = smoothing.dataset_rows("pbmc68k", [15], [0, 2], [5], str(data_dir))
    assert [(r["k"], r["t"]) for r in rows] == [(15, 0), (15, 2)]
    dm = ScRCLDataModule.from_config(table_config("pbmc68k", None, {}, str(data_dir)))
    dm.setup("fit")
    y = dm.batch.y.numpy()
    for row, x in zip(rows, (dm.batch.x.numpy(), dm.batch.x_mlp.numpy())):
        direct = clustering_scores(y, pca_kmeans(x, dm.n_clusters, 5))
        assert row["ari"] == pytest.approx(direct["ari"]) and row["nmi"] == pytest.approx(direct["nmi"])
    assert rows[0]["homophily"] == pytest.approx(smoothing.homophily(dm.prepared.obsp["cell_graph"], y))
    assert 0.5 < rows[0]["homophily"] < 1.0
    assert rows[0]["ari"] != rows[1]["ari"]  # the smoothing changes what k-means finds


def test_main_writes_the_table_and_bad_input_is_one_line(tmp_path, data_dir, capsys):
    out = tmp_path / "smoothing.md"
    assert smoothing.main(["--datasets", "pbmc68k", "--ks", "5", "--passes", "0,1", "--seeds", "5",
                           "--graph-pcs", "default,20", "--data-dir", str(data_dir), "--output", str(out)]) == 0
    lines = [line for line in out.read_text().splitlines() if line.startswith("| pbmc68k")]
    assert [(line.split("|")[4].strip(), line.split("|")[7].strip()) for line in lines] == [
        ("default (HVGs)", "0"), ("default (HVGs)", "1"), ("PCA-20", "0"), ("PCA-20", "1")]
    from scrcl.errors import run_entry

    capsys.readouterr()
    for args, fragment in ((["--passes", "-1"], "--passes"), (["--graph-pcs", "pca"], "--graph-pcs")):
        assert run_entry(smoothing.main, [*args, "--output", str(tmp_path / "bad.md")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0] and not (tmp_path / "bad.md").exists()


def test_rows_on_a_pca_graph_use_that_graph(data_dir):
    from scrcl.experiments.tables import table_config
    from datamodules import graphs

    (row,) = smoothing.dataset_rows("pbmc68k", [10], [0], [5], str(data_dir), graph_pcs=(30,))
    dm = ScRCLDataModule.from_config(table_config("pbmc68k", None, {}, str(data_dir)))
    dm.setup("fit")
    graph = graphs.expression_graph(dm.prepared.layers["lognorm"], 10, n_pcs=30)
    assert row["graph"] == "PCA-30" and row["homophily"] == pytest.approx(smoothing.homophily(graph, dm.batch.y.numpy()))


def test_spatial_rows_smooth_over_the_spatial_graph_and_score_the_refined_vote(data_dir):
    """A spatial slice: t = 10 at the published k = 5 is the MLP view's F¹⁰ X; refined = the run's majority vote."""
    from scrcl.experiments.tables import table_config
    from scrcl.experiments.tables import pca_kmeans
    from scrcl.eval.clustering import refine_spatial
    from scrcl.eval.metrics import clustering_scores

    rows = smoothing.dataset_rows("dlpfc_151673", [5], [0, 10], [5], str(data_dir), graph_pcs=(None, 50))
    assert [(r["graph"], r["k"], r["t"]) for r in rows] == [("spatial coordinates", 5, 0), ("spatial coordinates", 5, 10)]
    config = table_config("dlpfc_151673", None, {}, str(data_dir))
    dm = ScRCLDataModule.from_config(config)
    dm.setup("fit")
    y, coords = dm.batch.y.numpy(), dm.batch.coords.numpy()
    for row, x in zip(rows, (dm.batch.x.numpy(), dm.batch.x_mlp.numpy())):
        pred = pca_kmeans(x, dm.n_clusters, 5)
        assert row["ari"] == pytest.approx(clustering_scores(y, pred)["ari"])
        assert row["ari_refined"] == pytest.approx(clustering_scores(y, refine_spatial(pred, coords, config["radius"]))["ari"])
        assert row["radius"] == config["radius"] == 50
    assert rows[0]["homophily"] == pytest.approx(smoothing.homophily(dm.prepared.obsp["cell_graph"], y))
    assert rows[1]["ari"] > rows[0]["ari"]  # layers are spatially coherent: smoothing over the spots helps k-means
    text = smoothing.render(rows, command="c", started="s", seconds=1.0, seeds=[5], config_k=15)
    assert "## Spatial slices" in text and "| dataset | cells |" not in text
    assert sum(line.startswith("| dlpfc_151673 | ") for line in text.splitlines()) == 2
