"""The graphs of docs/method.md §2 (Algorithm 1, step 1), as the reference builds them; all sparse.

- cell graph A (scRNA-seq): scanpy's cosine neighbours on the log-normalised HVGs (PCA-50 first when N ≥ 10 000),
  where ``k`` counts the cell itself as scanpy's ``n_neighbors`` does: each cell gets its k − 1
  nearest others (``neighbours="exact"``: an exact search, k others);
- cell graph A (spatial): each spot's k nearest *other* spots by Euclidean distance on
  ``obsm['spatial']``, ties broken as the reference breaks them (:func:`spatial_neighbours`);
- gene graph G: k_g nearest genes (self included) by Euclidean distance on Xᵀ, **directed** as
  scikit-learn returns it (i → j when j is among i's nearest); ``symmetric=True`` gives max(G, Gᵀ);
- the low-pass filter F = D̃^{-1/2} (A + I) D̃^{-1/2} and the smoothed view inputs F^t X.

Every graph is binary and stores no self loops (the GCN and the losses add I themselves); the cell
graphs are symmetric (A = max(A, Aᵀ)).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scrcl.errors import UserError

PCA_MIN_CELLS = 10_000
# Up to this many spots, spatial neighbours come from sorting each spot's whole distance row, as the reference
# does (its tie order on a regular grid decides which of several equidistant spots is kept); above it, a kd-tree.
SORTED_NEIGHBOURS_MAX = 20_000


def expression_graph(lognorm, k: int, seed: int = 0, n_pcs: int | None = None, neighbours: str = "scanpy") -> sp.csr_matrix:
    """scRNA-seq cell graph (N, N) on the log-normalised HVGs by cosine distance, binary, symmetric, no self loops.

    ``neighbours="scanpy"`` (the reference): scanpy's ``neighbors(n_neighbors=k, method='gauss', metric='cosine')``,
    its connectivities binarised. ``k`` counts the cell itself, as scanpy's ``n_neighbors`` does, so a cell gets its
    k − 1 nearest others; up to 4 095 cells scanpy's search is exact, from 4 096 it is pynndescent's approximate one
    (``random_state`` = ``seed``, 0 as the reference leaves it), reproduced by calling scanpy rather than searching
    here. ``neighbours="exact"`` (the project's earlier graph): each cell's k nearest others, found exactly.
    Either way A = max(A, Aᵀ). ``n_pcs`` None: the reference's rule, scanpy's PCA-50 first only when N ≥
    ``PCA_MIN_CELLS``; 0: always on the HVGs themselves; P > 0: always on the first P principal components."""
    import anndata as ad
    import scanpy as sc

    n = lognorm.shape[0]
    least = 2 if neighbours == "scanpy" else 1
    if k < least:
        raise UserError(f"k = {k}: on scRNA-seq data k counts the cell itself (as scanpy's n_neighbors), so it must be at least 2"
                        if neighbours == "scanpy" else f"the number of neighbours must be at least 1, got {k}")
    if n < k + (least == 1):
        raise UserError(f"only {n} cells but k = {k} neighbours were asked for; use a smaller --k or more cells")
    if n_pcs is None:
        n_pcs = 50 if n >= PCA_MIN_CELLS else 0
    cells = ad.AnnData(sp.csr_matrix(lognorm, dtype=np.float32) if sp.issparse(lognorm) else np.asarray(lognorm, dtype=np.float32))
    rep = "X"
    if n_pcs > 0:
        sc.pp.pca(cells, n_comps=min(n_pcs, min(cells.shape) - 1), random_state=seed)
        rep = "X_pca"
    if neighbours == "exact":
        features = cells.obsm["X_pca"] if rep == "X_pca" else cells.X
        features = np.asarray(features.toarray() if sp.issparse(features) else features, dtype=np.float32)
        return _exact_knn_graph(features, k, metric="cosine")
    sc.pp.neighbors(cells, n_neighbors=k, method="gauss", metric="cosine", use_rep=rep, random_state=seed)
    edges = sp.coo_matrix(cells.obsp["connectivities"])
    return _symmetric_binary(n, edges.row, edges.col)


def _exact_knn_graph(features: np.ndarray, k: int, metric: str) -> sp.csr_matrix:
    """Each row's k nearest other rows, by a brute-force search (scikit-learn), as max(A, Aᵀ)."""
    from sklearn.neighbors import NearestNeighbors

    n = features.shape[0]
    search = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute").fit(features)
    neighbours = search.kneighbors(features, return_distance=False)
    # Drop each row's own index; with duplicate points it need not come first, so mask it and keep k.
    not_self = neighbours != np.arange(n)[:, None]
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    return _symmetric_binary(n, np.repeat(np.arange(n), k), np.take_along_axis(neighbours, order, axis=1).ravel())


def spatial_neighbours(coords, k: int) -> np.ndarray:
    """(N, k) indices of each spot's ``k`` nearest other spots, nearest first, in the reference's order.

    The reference sorts each spot's row of Euclidean distances with numpy's default ``argsort`` and drops the
    first entry (the spot itself). On a Visium grid many spots are equidistant, and that sort's order among
    them decides which are kept at the k-th place (and, in the vote, which label is met first), so it is
    reproduced here: row blocks of the distance matrix (about 128 MB each), each row sorted the same way.
    Above ``SORTED_NEIGHBOURS_MAX`` spots a kd-tree gives the same neighbour sets except at such ties, which
    go to the lower index.
    """
    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    if k < 1:
        raise UserError(f"the number of neighbours must be at least 1, got {k}")
    if n < k + 1:
        raise UserError(f"only {n} spots but k = {k} neighbours were asked for; use a smaller --k or more spots")
    if n > SORTED_NEIGHBOURS_MAX:
        return _nearest_others_kdtree(coords, k)
    from scipy.spatial.distance import cdist

    out = np.empty((n, k), dtype=np.int64)
    step = max(1, (1 << 24) // n)
    for r0 in range(0, n, step):
        order = np.argsort(cdist(coords[r0 : r0 + step], coords), axis=1)  # numpy's default sort, as the reference
        out[r0 : r0 + step] = order[:, 1 : k + 1]
    return out


def _nearest_others_kdtree(coords: np.ndarray, k: int) -> np.ndarray:
    """(N, k) nearest other spots ordered by (distance, index), with O(N·k) memory: the (k+1)-th smallest
    distance from a spot (itself included) bounds a radius query, so ties at the edge are all seen."""
    from sklearn.neighbors import KDTree

    n = coords.shape[0]
    tree = KDTree(coords)
    kth = tree.query(coords, k=k + 1, return_distance=True)[0][:, -1]
    # A hair of slack so rounding never drops an edge spot; the sort below keeps exactly the k nearest.
    found, dist = tree.query_radius(coords, r=kth * (1 + 1e-9) + 1e-12, return_distance=True)
    sizes = np.fromiter((len(f) for f in found), np.int64, n)
    row = np.repeat(np.arange(n, dtype=np.int64), sizes)
    idx = np.concatenate(found).astype(np.int64, copy=False)
    dist = np.concatenate(dist)
    other = idx != row
    row, idx, dist = row[other], idx[other], dist[other]
    order = np.lexsort((idx, dist, row))  # by spot, then distance, then index
    row, idx = row[order], idx[order]
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    rank = np.arange(row.size) - np.repeat(starts, np.diff(np.r_[starts, row.size]))
    return idx[rank < k].reshape(n, k)


def _symmetric_binary(n: int, rows: np.ndarray, cols: np.ndarray) -> sp.csr_matrix:
    graph = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n))
    graph = graph.maximum(graph.T).tocsr()
    graph.setdiag(0)
    graph.eliminate_zeros()
    graph.data[:] = 1.0
    graph.sort_indices()
    return graph


def spatial_graph(coords, k: int) -> sp.csr_matrix:
    """Spatial cell graph: each spot's k nearest other spots by Euclidean distance (A = max(A, Aᵀ))."""
    neighbours = spatial_neighbours(coords, k)
    n = neighbours.shape[0]
    return _symmetric_binary(n, np.repeat(np.arange(n), k), neighbours.ravel())


def gene_graph(x, k_g: int = 5, symmetric: bool = False, sparse: bool = True) -> sp.csr_matrix:
    """Gene graph G (h, h): each gene's k_g nearest genes, itself included, by Euclidean distance on Xᵀ.

    scikit-learn's ``kneighbors_graph(Xᵀ, k_g, include_self=True)``, as the reference builds it: **directed**,
    G[i, j] = 1 when gene j is among gene i's nearest (the gene GCN sends i → j, degrees counted at the target).
    ``symmetric=True`` (the project's earlier variant) returns max(G, Gᵀ). Self loops are not stored (the GCN
    adds them).

    ``sparse``: search on Xᵀ as a sparse matrix (how the reference holds counts and log-normalised data) or dense
    (its scaled spatial input). Integer counts put many genes at exactly equal distances, and scikit-learn's sparse
    and dense distance computations order such ties differently, so the reference's holding decides which of
    them are kept.
    """
    h = x.shape[1]
    if k_g <= 1:  # each gene's only neighbour is itself: no edges (the GCN adds the self loop)
        return sp.csr_matrix((h, h), dtype=np.float32)
    if h < k_g:
        raise UserError(
            f"only {h} genes left after filtering but the gene graph needs k_g = {k_g} (self included); "
            "use a smaller --gene-k or give more genes"
        )
    from sklearn.neighbors import kneighbors_graph

    genes = sp.csr_matrix(x.T) if sparse else (x.T.toarray() if sp.issparse(x) else np.ascontiguousarray(np.asarray(x).T))
    graph = kneighbors_graph(genes, n_neighbors=k_g, mode="connectivity", include_self=True).tocsr().astype(np.float32)
    if symmetric:
        graph = graph.maximum(graph.T).tocsr()
    graph.setdiag(0)
    graph.eliminate_zeros()
    graph.sort_indices()
    return graph


def normalized_adjacency(graph: sp.spmatrix) -> sp.csr_matrix:
    """F = D̃^{-1/2} (A + I) D̃^{-1/2}, the GCN propagation matrix and low-pass filter (degrees = row sums).

    PyG's ``GCNConv`` over a directed edge list i → j gathers at the target j with degrees counted there;
    that is this matrix of Gᵀ (row j holds j's sources), which is how the gene filter is built."""
    a_tilde = (graph + sp.identity(graph.shape[0], dtype=np.float32, format="csr")).tocsr()
    deg = np.asarray(a_tilde.sum(axis=1)).ravel()
    inv_sqrt = sp.diags(1.0 / np.sqrt(deg)).astype(np.float32)
    out = (inv_sqrt @ a_tilde @ inv_sqrt).tocsr().astype(np.float32)
    out.sort_indices()
    return out


def smooth(filter_matrix: sp.spmatrix, x: np.ndarray, passes: int) -> np.ndarray:
    """Fᵗ X: ``passes`` rounds of low-pass smoothing (0 = the input itself)."""
    if passes < 0:
        raise UserError(f"smoothing passes (tms) must be ≥ 0, got {passes}")
    out = x
    for _ in range(passes):
        out = filter_matrix @ out
    return np.asarray(out, dtype=np.float32)
