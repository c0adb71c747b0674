"""The paper's post-hoc analyses of a finished run: UMAPs (Fig. 5), marker genes, PAGA.

``python evaluate.py RUN_DIR --analyses`` writes into ``RUN_DIR/analyses/``:

- ``umap_input_vs_embedding.png``: UMAP of the model input (PCA(30) of the preprocessed matrix)
  beside UMAP of the learned embedding ``obsm['X_scrcl']``, coloured by predicted cluster and, when
  the run had labels, by annotation; ``umap_coordinates.csv`` holds the plotted coordinates;
- ``markers_top.csv`` (top genes per predicted cluster: score, log fold change, adjusted p-value),
  ``markers_dotplot.png`` and ``markers_heatmap.png``: scanpy ``rank_genes_groups`` (Wilcoxon,
  each cluster against the rest) on the log-normalised HVG expression;
- ``paga.png`` and ``paga_connectivities.csv``: PAGA of the predicted clusters over a kNN graph of
  the learned embedding.

Labels only colour a panel; no analysis uses them to choose anything. Every file is written to a
temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ANALYSES_DIR = "analyses"
CLUSTER = "scrcl_cluster"
EMBEDDING = "X_scrcl"
N_PCS = 30  # the input UMAP's PCA width, the same as the PCA(30) + k-means baseline
N_MARKERS_CSV = 25  # genes per cluster in markers_top.csv
N_MARKERS_PLOT = 5  # genes per cluster in the dot plot and heatmap
N_NEIGHBORS = 15


def cluster_categories(values) -> "pd.Categorical":
    """Predicted clusters as a categorical in numeric order (0, 1, …, 10), not string order."""
    import pandas as pd

    values = np.asarray(values).astype(str)
    names = sorted(set(values.tolist()), key=lambda v: (len(v), v))
    return pd.Categorical(values, categories=names)


def expression_anndata(run: FinishedRun):
    """Log-normalised HVG expression (N, h) with the predicted clusters and the learned embedding."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    prepared = run.datamodule.prepared
    lognorm = prepared.layers["lognorm"]
    x = sp.csr_matrix(lognorm, dtype=np.float32) if sp.issparse(lognorm) else np.asarray(lognorm, dtype=np.float32)
    obs = pd.DataFrame({CLUSTER: cluster_categories(run.result.obs[CLUSTER])}, index=prepared.obs_names.copy())
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=prepared.var_names.copy()))
    adata.obsm[EMBEDDING] = np.asarray(run.result.obsm[EMBEDDING], dtype=np.float32)
    return adata


def input_pcs(x, seed: int, n_components: int = N_PCS) -> np.ndarray:
    """PCA of the model input (N, h) → (N, min(n_components, …)), seeded."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    x = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    n = min(n_components, min(x.shape) - 1)
    return PCA(n_components=n, random_state=seed).fit_transform(x).astype(np.float32)


def umap_comparison(pcs: np.ndarray, embedding: np.ndarray, pred, truth, cells, out_dir: Path, seed: int) -> list[Path]:
    """Fig. 5: UMAP of the input beside UMAP of the embedding (rows: colouring; columns: space)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from scrcl.eval.plots import _scatter, save_figure, umap_coordinates
    from scrcl.atomic import atomic_write_text

    idx, xy_input = umap_coordinates(pcs, seed)
    _, xy_emb = umap_coordinates(embedding, seed)  # same cell count and seed: the same subsample, if any
    colourings = [("predicted cluster", np.asarray(pred))] + ([("annotation", np.asarray(truth))] if truth is not None else [])
    fig, axes = plt.subplots(len(colourings), 2, figsize=(14, 4.5 * len(colourings)), squeeze=False)
    fig.subplots_adjust(wspace=0.75)  # room for the legends on the right of each panel
    for row, (name, values) in enumerate(colourings):
        _scatter(axes[row, 0], xy_input, values[idx], f"input (PCA {pcs.shape[1]}) — {name}")
        _scatter(axes[row, 1], xy_emb, values[idx], f"scRCL embedding — {name}")
    fig.suptitle("UMAP of the input vs the learned embedding")
    png = out_dir / "umap_input_vs_embedding.png"
    save_figure(fig, png)
    plt.close(fig)
    table = pd.DataFrame({"cell": np.asarray(cells)[idx], "input_umap1": xy_input[:, 0], "input_umap2": xy_input[:, 1],
                          "embedding_umap1": xy_emb[:, 0], "embedding_umap2": xy_emb[:, 1], "cluster": np.asarray(pred)[idx]})
    if truth is not None:
        table["label"] = np.asarray(truth)[idx]
    csv = out_dir / "umap_coordinates.csv"
    atomic_write_text(csv, table.to_csv(index=False))
    return [png, csv]


def comparable_clusters(clusters) -> list[str]:
    """Clusters a one-vs-rest test can score: at least two cells in the group and two in the rest."""
    counts = clusters.value_counts()
    n = int(counts.sum())
    return [str(c) for c, size in counts.items() if size >= 2 and n - size >= 2]


def rank_markers(adata, n_top: int = N_MARKERS_CSV):
    """scanpy ``rank_genes_groups`` (Wilcoxon, cluster vs rest) on ``adata.X``; returns the top
    ``n_top`` genes per cluster as a DataFrame (cluster, rank, gene, score, logfoldchange, pval,
    pval_adj), or None when fewer than two clusters can be tested."""
    import pandas as pd
    import scanpy as sc

    groups = comparable_clusters(adata.obs[CLUSTER])
    if len(adata.obs[CLUSTER].cat.categories) < 2 or not groups:
        return None
    order = [c for c in adata.obs[CLUSTER].cat.categories if c in groups]
    sc.tl.rank_genes_groups(adata, CLUSTER, groups=order, reference="rest", method="wilcoxon", use_raw=False)
    frames = []
    for cluster in order:
        df = sc.get.rank_genes_groups_df(adata, group=cluster).head(n_top)
        frames.append(pd.DataFrame({
            "cluster": cluster, "rank": np.arange(1, len(df) + 1), "gene": df["names"].to_numpy(),
            "score": df["scores"].to_numpy(), "logfoldchange": df["logfoldchanges"].to_numpy(),
            "pval": df["pvals"].to_numpy(), "pval_adj": df["pvals_adj"].to_numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def marker_plots(adata, out_dir: Path, n_genes: int = N_MARKERS_PLOT) -> list[Path]:
    """Dot plot and heatmap of the top ``n_genes`` markers of each cluster (after :func:`rank_markers`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    from scrcl.eval.plots import save_figure

    dot = sc.pl.rank_genes_groups_dotplot(adata, n_genes=n_genes, groupby=CLUSTER, dendrogram=False, show=False, return_fig=True)
    dot.make_figure()
    save_figure(dot.fig, out_dir / "markers_dotplot.png")
    plt.close(dot.fig)
    axes = sc.pl.rank_genes_groups_heatmap(adata, n_genes=n_genes, groupby=CLUSTER, dendrogram=False, show=False)
    fig = axes["heatmap_ax"].figure
    save_figure(fig, out_dir / "markers_heatmap.png")
    plt.close(fig)
    return [out_dir / "markers_dotplot.png", out_dir / "markers_heatmap.png"]


def paga(adata, out_dir: Path, seed: int, n_neighbors: int = N_NEIGHBORS) -> list[Path]:
    """PAGA of the predicted clusters over a kNN graph of the learned embedding: PNG and the
    (clusters × clusters) connectivities as CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import scanpy as sc

    from scrcl.eval.plots import save_figure
    from scrcl.atomic import atomic_write_text

    sc.pp.neighbors(adata, n_neighbors=min(n_neighbors, adata.n_obs - 1), use_rep=EMBEDDING, random_state=seed)
    sc.tl.paga(adata, groups=CLUSTER)
    names = list(adata.obs[CLUSTER].cat.categories)
    conn = adata.uns["paga"]["connectivities"].toarray()
    table = pd.DataFrame(conn, index=pd.Index(names, name="cluster"), columns=names)
    atomic_write_text(out_dir / "paga_connectivities.csv", table.to_csv())
    ax = sc.pl.paga(adata, threshold=0.03, random_state=seed, show=False, title="PAGA of the predicted clusters (scRCL embedding)")
    fig = ax.figure
    save_figure(fig, out_dir / "paga.png")
    plt.close(fig)
    return [out_dir / "paga.png", out_dir / "paga_connectivities.csv"]


def run_analyses(run, log=print) -> list[Path]:
    """All three analyses of one finished run (``scrcl.train.results.load_run``); returns the files written under
    RUN_DIR/analyses/."""
    from scrcl.atomic import atomic_write_text

    out_dir = run.run_dir / ANALYSES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    adata = expression_anndata(run)
    pred = adata.obs[CLUSTER].to_numpy().astype(str)
    truth = run.result.obs["label"].astype(object).to_numpy() if "label" in run.result.obs else None
    if truth is not None:
        truth = np.array(["(none)" if t is None or t != t else str(t) for t in truth], dtype=object)
    x = run.datamodule.batch.x.numpy()
    written = umap_comparison(input_pcs(x, run.seed), adata.obsm[EMBEDDING], pred, truth, adata.obs_names, out_dir, run.seed)
    markers = rank_markers(adata)
    if markers is None:
        log(f"marker genes skipped: {run.run_dir} has fewer than two predicted clusters to compare")
    else:
        atomic_write_text(out_dir / "markers_top.csv", markers.to_csv(index=False))
        written += [out_dir / "markers_top.csv", *marker_plots(adata, out_dir)]
    if len(adata.obs[CLUSTER].cat.categories) < 2:
        log("PAGA skipped: a single predicted cluster has no graph to abstract")
    else:
        written += paga(adata, out_dir, run.seed)
    return written
