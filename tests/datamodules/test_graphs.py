"""The graphs of METHOD.md §2 against brute-force searches on real data and dense algebra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from datamodules import graphs
from datamodules.graphs import (
    expression_graph,
    gene_graph,
    normalized_adjacency,
    smooth,
    spatial_graph,
)
from scrcl.errors import UserError


def dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def assert_valid_graph(g, k_min: int):
    """Binary, symmetric, no self loops, every node with at least ``k_min`` neighbours."""
    g = sp.csr_matrix(g)
    assert g.shape[0] == g.shape[1]
    assert np.all(g.data == 1.0)
    assert (g != g.T).nnz == 0
    assert g.diagonal().sum() == 0
    assert np.diff(g.indptr).min() >= k_min


def assert_is_knn_union(g, dist: np.ndarray, k: int, tol: float = 1e-9):
    """``g`` is max(A, Aᵀ) of a k-nearest-neighbour graph under ``dist``, up to ties at the k-th distance.

    Per node i with r_i its k-th smallest distance to another node: every j closer than r_i is a
    neighbour; every neighbour j lies within r_i or within r_j (it chose i); and the k smallest
    distances to i's neighbours are the k smallest distances overall.
    """
    g = sp.csr_matrix(g)
    d = dist.astype(np.float64).copy()
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, :k]
    r = kth[:, -1]
    for i in range(d.shape[0]):
        nbrs = g.indices[g.indptr[i] : g.indptr[i + 1]]
        must = np.flatnonzero(d[i] < r[i] - tol)
        assert set(must) <= set(nbrs), f"node {i}: a closer node is missing"
        ok = (d[i, nbrs] <= r[i] + tol) | (d[nbrs, i] <= r[nbrs] + tol)
        assert ok.all(), f"node {i}: neighbour {nbrs[~ok]} is in neither kNN list"
        np.testing.assert_allclose(np.sort(d[i, nbrs])[:k], kth[i], rtol=0, atol=tol * max(1.0, r[i]))


def pairwise_euclidean(x):
    x = np.asarray(x, dtype=np.float64)
    sq = (x**2).sum(axis=1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))


def pairwise_cosine(x):
    x = np.asarray(x, dtype=np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return 1.0 - unit @ unit.T


# -- the graphs of the real datasets -------------------------------------------------------------------
def assert_valid_directed_knn(g, k_others: int):
    """Binary, no self loops, each row with its k nearest others (k + 1 where a duplicate pushed the node itself
    out of its own list)."""
    g = sp.csr_matrix(g)
    assert np.all(g.data == 1.0) and g.diagonal().sum() == 0
    assert set(np.unique(np.diff(g.indptr))) <= {k_others, k_others + 1}


@pytest.mark.parametrize("name", ["pbmc10x", "pollen", "dlpfc_151673", "dlpfc_151510"])
def test_real_graphs_are_binary_symmetric_loop_free_with_k_neighbours(built, name):
    """scRNA-seq: k counts the cell itself (scanpy's n_neighbors), so k − 1 others; spatial: k other spots.
    The gene graph is directed: each gene's k_g − 1 nearest others."""
    dm = built(name)
    assert_valid_graph(dm.prepared.obsp["cell_graph"], dm.params["k"] - (dm.task == "sc"))
    assert_valid_directed_knn(dm.prepared.varp["gene_graph"], dm.params["gene_k"] - 1)
    assert dm.prepared.obsp["cell_graph"].shape == (dm.n_cells, dm.n_cells)
    assert dm.prepared.varp["gene_graph"].shape == (dm.n_genes, dm.n_genes)


def test_spatial_graph_is_the_brute_force_nearest_spots_on_a_real_slice(built):
    """DLPFC 151673: Visium's hexagonal grid has many exact ties, hence the tie-aware comparison."""
    dm = built("dlpfc_151673")
    coords = np.asarray(dm.prepared.obsm["spatial"], dtype=np.float64)
    g = dm.prepared.obsp["cell_graph"]
    assert_is_knn_union(g, pairwise_euclidean(coords), dm.params["k"], tol=1e-6)
    # and it is the graph spatial_graph builds from the coordinates (not the expression)
    assert (spatial_graph(coords, dm.params["k"]) != g).nnz == 0


def test_spatial_neighbours_sort_each_distance_row_as_the_reference_and_a_kd_tree_above_the_limit(monkeypatch, built):
    """Up to SORTED_NEIGHBOURS_MAX spots each row of distances is sorted with numpy's default argsort and the spot
    itself dropped (the reference's order, which decides ties on the Visium grid); above it a kd-tree finds the
    same distances, ties going to the lower index."""
    from scipy.spatial.distance import cdist

    dm = built("dlpfc_151673")
    coords = np.asarray(dm.prepared.obsm["spatial"], dtype=np.float64)[:700]
    ours = graphs.spatial_neighbours(coords, 6)
    np.testing.assert_array_equal(ours, np.argsort(cdist(coords, coords), axis=1)[:, 1:7])
    monkeypatch.setattr(graphs, "SORTED_NEIGHBOURS_MAX", 100)
    tree = graphs.spatial_neighbours(coords, 6)
    d = cdist(coords, coords)
    np.testing.assert_allclose(np.take_along_axis(d, tree, 1), np.take_along_axis(d, ours, 1), rtol=0, atol=1e-9)
    assert (np.sort(tree, axis=1) != np.sort(ours, axis=1)).any()  # the grid's ties are kept differently


def test_spatial_graph_equals_the_neighbour_sets_where_there_are_no_ties():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 1000, size=(200, 2))  # continuous: no ties
    k = 6
    d = pairwise_euclidean(coords)
    np.fill_diagonal(d, np.inf)
    directed = np.argsort(d, axis=1)[:, :k]
    a = np.zeros((200, 200))
    a[np.repeat(np.arange(200), k), directed.ravel()] = 1
    expected = np.maximum(a, a.T)
    np.testing.assert_array_equal(dense(spatial_graph(coords, k)), expected)


def test_expression_graph_is_cosine_knn_on_a_real_subset(built):
    """pbmc10x, 400 cells on the log-normalised HVGs: brute-force cosine kNN, not Euclidean."""
    dm = built("pbmc10x")
    lognorm = dense(dm.prepared.layers["lognorm"][:400])
    k = 15  # counting the cell itself: 14 others
    g = expression_graph(lognorm, k)
    assert_valid_graph(g, k - 1)
    assert_is_knn_union(g, pairwise_cosine(lognorm), k - 1, tol=1e-5)
    assert (g != spatial_graph(lognorm, k - 1)).nnz > 0  # Euclidean neighbours differ: the metric matters here


def test_expression_graph_from_4096_cells_is_scanpys_approximate_search(built):
    """pbmc10x has 4 271 cells: scanpy (the reference's call) then searches with pynndescent, so the graph is
    close to, not equal to, the exact cosine kNN; it is still binary, symmetric and loop-free."""
    from sklearn.neighbors import NearestNeighbors

    dm = built("pbmc10x")
    g = sp.csr_matrix(dm.prepared.obsp["cell_graph"])
    lognorm = dense(dm.prepared.layers["lognorm"])
    assert g.shape[0] >= 4096
    assert (g != g.T).nnz == 0 and g.diagonal().sum() == 0 and np.all(g.data == 1.0)
    nearest = NearestNeighbors(n_neighbors=dm.params["k"], metric="cosine", algorithm="brute").fit(lognorm)
    exact = sp.csr_matrix(nearest.kneighbors_graph(lognorm))
    exact.setdiag(0)
    exact.eliminate_zeros()
    exact = exact.maximum(exact.T)
    shared = g.multiply(exact).nnz
    assert 0.5 < shared / (g.nnz + exact.nnz - shared) < 1.0


def test_real_expression_graph_is_built_on_the_lognorm_hvgs(built):
    dm = built("baron_mouse1")  # counts input: the graph must not be on X (the counts)
    g = dm.prepared.obsp["cell_graph"]
    lognorm = dense(dm.prepared.layers["lognorm"])
    assert (expression_graph(lognorm, dm.params["k"]) != g).nnz == 0
    assert_is_knn_union(g, pairwise_cosine(lognorm), dm.params["k"] - 1, tol=1e-5)


def test_cosine_ignores_magnitude():
    """Cells on three rays through the origin: cosine neighbours are the cells of the same ray."""
    rng = np.random.default_rng(1)
    directions = np.eye(3) + 0.05
    x = np.vstack([d * s for d in directions for s in rng.uniform(0.5, 50, size=6)])
    g = dense(expression_graph(x, 6))  # each cell and its 5 nearest others
    ray = np.repeat(np.arange(3), 6)
    assert (g == (ray[:, None] == ray[None, :]) - np.eye(18)).all()


def test_large_n_uses_pca_first_and_stays_valid(monkeypatch, built):
    monkeypatch.setattr(graphs, "PCA_MIN_CELLS", 100)
    dm = built("pbmc10x")
    lognorm = dense(dm.prepared.layers["lognorm"][:120, :80])
    for features in (lognorm, sp.csr_matrix(lognorm)):
        graph = expression_graph(features, 10)
        assert_valid_graph(graph, 9)
        # at PCA_MIN_CELLS cells and above the default is the reference's PCA-50 first, not the HVGs themselves
        assert (graph != expression_graph(features, 10, n_pcs=50)).nnz == 0
        assert (graph != expression_graph(features, 10, n_pcs=0)).nnz > 0
    assert (expression_graph(lognorm[:99], 10) != expression_graph(lognorm[:99], 10, n_pcs=0)).nnz == 0  # below it


# -- gene graph ------------------------------------------------------------------------------------------
def test_gene_graph_is_built_on_genes_with_known_neighbours():
    """Four groups of five genes with almost the same profile over the cells: k_g = 5 (self included)
    links each gene to exactly its four group mates."""
    rng = np.random.default_rng(2)
    n_cells = 50
    centres = rng.normal(0, 10, size=(4, n_cells))
    genes = np.vstack([c + rng.normal(0, 0.01, size=(5, n_cells)) for c in centres])  # (20 genes, cells)
    x = genes.T  # cells x genes, as the model input
    g = dense(gene_graph(x, 5))
    group = np.repeat(np.arange(4), 5)
    assert g.shape == (20, 20)
    assert (g == (group[:, None] == group[None, :]) - np.eye(20)).all()
    assert (dense(gene_graph(sp.csr_matrix(x), 5)) == g).all()


def test_gene_graph_is_each_genes_nearest_genes_directed_on_a_real_subset(built):
    """Row i holds gene i's 4 nearest other genes (brute force, up to ties at the 4th distance); it is not
    symmetric, and ``symmetric=True`` gives max(G, Gᵀ)."""
    dm = built("dlpfc_151673")
    x = np.asarray(dm.prepared.X[:500, :300], dtype=np.float64)
    x = x[:, x.std(axis=0) > 0]
    g = sp.csr_matrix(gene_graph(x, 5, sparse=False))
    assert_valid_directed_knn(g, 4)
    d = pairwise_euclidean(x.T)
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, :4]
    for i in range(d.shape[0]):
        np.testing.assert_allclose(np.sort(d[i, g.indices[g.indptr[i] : g.indptr[i + 1]]])[:4], kth[i], rtol=0, atol=1e-6)
    assert (g != g.T).nnz > 0
    sym = gene_graph(x, 5, symmetric=True, sparse=False)
    assert (sym != g.maximum(g.T)).nnz == 0


def test_gene_graph_breaks_count_ties_as_the_sparse_or_dense_search_does():
    """Integer counts put genes at exactly equal distances; scikit-learn's sparse and dense searches keep
    different ones at the edge (the reference holds counts sparse, its scaled input dense)."""
    from sklearn.neighbors import kneighbors_graph

    x = np.random.default_rng(5).poisson(0.7, size=(60, 80)).astype(np.float32)
    for sparse in (True, False):
        expected = kneighbors_graph(sp.csr_matrix(x.T) if sparse else x.T, 5, include_self=True).tolil()
        expected.setdiag(0)
        assert (gene_graph(x, 5, sparse=sparse) != sp.csr_matrix(expected)).nnz == 0
    assert (gene_graph(x, 5, sparse=True) != gene_graph(x, 5, sparse=False)).nnz > 0


# -- edge cases ----------------------------------------------------------------------------------------------
def test_duplicate_positions_give_no_self_loops_and_neighbours_among_the_duplicates():
    x = np.zeros((12, 3))
    x[6:] = 1.0  # two groups of six identical points
    g = sp.csr_matrix(spatial_graph(x, 4))
    assert g.diagonal().sum() == 0 and (g != g.T).nnz == 0
    assert dense(g)[:6, 6:].sum() == 0  # neighbours are found within the duplicates
    assert np.diff(g.indptr).min() >= 3  # the reference's rule may list a spot itself (dropped here) among its 4


def test_too_few_points_or_k_below_the_minimum_are_user_errors():
    with pytest.raises(UserError, match="only 5 spots"):
        spatial_graph(np.random.default_rng(0).normal(size=(5, 2)), 5)
    with pytest.raises(UserError, match="at least 1"):
        spatial_graph(np.zeros((5, 2)), 0)
    with pytest.raises(UserError, match="at least 2"):
        expression_graph(np.random.default_rng(0).random((20, 5)), 1)
    with pytest.raises(UserError, match="only 3 genes"):
        gene_graph(np.random.default_rng(0).normal(size=(10, 3)), 5)


# -- the low-pass filter --------------------------------------------------------------------------------------
def small_graph(n=30, k=4, seed=3):
    return spatial_graph(np.random.default_rng(seed).normal(size=(n, 3)), k)


def test_normalized_adjacency_equals_the_dense_formula():
    a = small_graph()
    a_tilde = dense(a) + np.eye(a.shape[0])
    d_inv_sqrt = np.diag(1.0 / np.sqrt(a_tilde.sum(axis=1)))
    expected = d_inv_sqrt @ a_tilde @ d_inv_sqrt
    f = normalized_adjacency(a)
    assert sp.issparse(f) and f.dtype == np.float32
    np.testing.assert_allclose(dense(f), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dense(f), dense(f).T, atol=1e-7)


def test_normalized_adjacency_of_an_empty_graph_is_the_identity():
    f = normalized_adjacency(sp.csr_matrix((5, 5), dtype=np.float32))
    np.testing.assert_array_equal(dense(f), np.eye(5))


@pytest.mark.parametrize("t", [0, 1, 3])
def test_smooth_is_the_matrix_power(t):
    a = small_graph()
    f = normalized_adjacency(a)
    x = np.random.default_rng(4).normal(size=(a.shape[0], 7)).astype(np.float32)
    expected = np.linalg.matrix_power(dense(f).astype(np.float64), t) @ x
    out = smooth(f, x, t)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_negative_smoothing_is_a_user_error():
    with pytest.raises(UserError, match="≥ 0"):
        smooth(normalized_adjacency(small_graph()), np.zeros((30, 2), dtype=np.float32), -1)


def test_batch_filters_and_smoothed_views_match_the_graphs(data_dir):
    """tms = (2, 1): x_mlp = F² X, x_gnn = F X; the batch's sparse tensors equal the scipy matrices."""
    from datamodules.datamodule import ScRCLDataModule

    dm = ScRCLDataModule(dataset="pollen", data_dir=data_dir, tms=(2, 1), k=10, cache=False, progress=False)
    dm.setup()
    b = dm.batch
    f = dense(normalized_adjacency(dm.prepared.obsp["cell_graph"])).astype(np.float64)
    x = b.x.numpy().astype(np.float64)
    np.testing.assert_allclose(b.x_mlp.numpy(), f @ f @ x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.x_gnn.numpy(), f @ x, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(b.cell_graph.to_dense().numpy(), dense(dm.prepared.obsp["cell_graph"]))
    np.testing.assert_allclose(b.cell_filter.to_dense().numpy(), f, rtol=1e-6, atol=1e-7)
    # the directed gene graph G (i → j) propagates at the target, as PyG's GCNConv: the filter of Gᵀ
    np.testing.assert_allclose(
        b.gene_filter.to_dense().numpy(), dense(normalized_adjacency(dm.prepared.varp["gene_graph"].T)), rtol=1e-6, atol=1e-7
    )


def test_gene_graph_with_k_g_one_has_only_self():
    """k_g counts the gene itself, so k_g = 1 leaves no edges to store."""
    from datamodules.graphs import gene_graph

    x = np.random.default_rng(0).poisson(1.0, size=(30, 8)).astype(np.float32)
    graph = gene_graph(x, 1)
    assert graph.shape == (8, 8) and graph.nnz == 0
    assert gene_graph(x, 2).nnz > 0


def test_graph_pcs_chooses_the_features_of_the_cell_graph(built):
    """n_pcs = P: cosine kNN on the first P principal components; 0: on the HVGs; None: the reference's
    rule (HVGs below PCA_MIN_CELLS cells)."""
    import scanpy as sc

    dm = built("pbmc10x")
    lognorm = dense(dm.prepared.layers["lognorm"][:300])
    k = 10
    on_hvgs = expression_graph(lognorm, k, n_pcs=0)
    assert (expression_graph(lognorm, k) != on_hvgs).nnz == 0
    pcs = sc.pp.pca(lognorm, n_comps=20, random_state=0)  # scanpy's PCA, as the reference
    on_pcs = expression_graph(lognorm, k, n_pcs=20)
    assert_valid_graph(on_pcs, k - 1)
    assert_is_knn_union(on_pcs, pairwise_cosine(pcs), k - 1, tol=1e-5)
    assert (on_pcs != on_hvgs).nnz > 0


def test_datamodule_graph_pcs_builds_that_graph_and_keys_the_cache(built):
    dm = built("pollen", graph_pcs=30)
    lognorm = dense(dm.prepared.layers["lognorm"])
    assert (dm.prepared.obsp["cell_graph"] != expression_graph(lognorm, dm.params["k"], n_pcs=30)).nnz == 0
    assert "on PCA-30" in dm.summary()
    capped = built("pollen", graph_pcs=5000)  # pollen: 249 cells, so 248 components at most
    assert "on PCA-248" in capped.summary() and any("the cell graph uses 248" in note for note in capped.notes())
    default = built("pollen")
    assert "graph_pcs" not in default.params and "PCA" not in default.summary()
    files = {"data": Path(__file__)}
    assert dm._cache_key(files, "sc") != default._cache_key(files, "sc")
