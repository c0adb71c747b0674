"""The graphs of METHOD.md §2 (Algorithm 1, step 1), all sparse: no dense N×N array anywhere.

- cell graph A (scRNA-seq): k nearest cells by cosine on the log-normalised HVGs (PCA-50 first
  when N ≥ 10 000);
- cell graph A (spatial): k nearest spots by Euclidean distance on ``obsm['spatial']``;
- gene graph G: k_g nearest genes (self included) by Euclidean distance on Xᵀ;
- the low-pass filter F = D̃^{-1/2} (A + I) D̃^{-1/2} and the smoothed view inputs F^t X.

Every graph is binary, symmetric (A = max(A, Aᵀ)) and stores no self loops (the GCN and the losses
add I themselves).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scrcl.errors import UserError

EXACT_KNN_MAX = 50_000  # above this, approximate neighbours (pynndescent): exact search is O(N²)
PCA_MIN_CELLS = 10_000


def knn_graph(features, k: int, metric: str = "euclidean", seed: int = 0) -> sp.csr_matrix:
    """Binary symmetric kNN graph (N, N) over the rows of ``features``; self excluded."""
    n = features.shape[0]
    if k < 1:
        raise UserError(f"the number of neighbours must be at least 1, got {k}")
    if n < k + 1:
        raise UserError(f"only {n} cells (spots) but k = {k} neighbours were asked for; use a smaller --k or more cells")
    if n > EXACT_KNN_MAX:
        from pynndescent import NNDescent

        index = NNDescent(features, n_neighbors=k + 1, metric=metric, random_state=seed, n_jobs=1)
        neighbours, _ = index.neighbor_graph
    else:
        from sklearn.neighbors import NearestNeighbors

        algorithm = "brute" if metric == "cosine" else "auto"
        nn = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm=algorithm).fit(features)
        neighbours = nn.kneighbors(features, return_distance=False)
    rows = np.arange(n)[:, None]
    # Drop each row's own index; with duplicate points it need not come first, so mask it and keep k.
    not_self = neighbours != rows
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    cols = np.take_along_axis(neighbours, order, axis=1)
    graph = sp.csr_matrix((np.ones(n * k, dtype=np.float32), (np.repeat(np.arange(n), k), cols.ravel())), shape=(n, n))
    graph = graph.maximum(graph.T).tocsr()
    graph.setdiag(0)
    graph.eliminate_zeros()
    graph.data[:] = 1.0
    graph.sort_indices()
    return graph


def expression_graph(lognorm, k: int, seed: int = 0, n_pcs: int | None = None) -> sp.csr_matrix:
    """scRNA-seq cell graph: cosine kNN on log-normalised HVGs.

    ``n_pcs`` None: the reference's rule, PCA-50 first only when N ≥ ``PCA_MIN_CELLS``; 0: always on the
    HVGs themselves; P > 0: always on the first P principal components."""
    n = lognorm.shape[0]
    if n_pcs is None:
        n_pcs = 50 if n >= PCA_MIN_CELLS else 0
    if n_pcs > 0:
        from sklearn.decomposition import PCA, TruncatedSVD

        n_comp = min(n_pcs, min(lognorm.shape) - 1)
        if sp.issparse(lognorm):
            features = TruncatedSVD(n_comp, random_state=seed).fit_transform(lognorm)
        else:
            features = PCA(n_comp, random_state=seed).fit_transform(lognorm)
    else:
        features = lognorm.toarray() if sp.issparse(lognorm) else np.asarray(lognorm)
    return knn_graph(np.asarray(features, dtype=np.float32), k, metric="cosine", seed=seed)


def spatial_graph(coords, k: int) -> sp.csr_matrix:
    """Spatial cell graph: k nearest spots by Euclidean distance on the coordinates."""
    return knn_graph(np.asarray(coords, dtype=np.float64), k, metric="euclidean")


def gene_graph(x, k_g: int = 5) -> sp.csr_matrix:
    """Gene graph (h, h): k_g nearest genes, self included, on Xᵀ (each gene a vector over cells)."""
    if k_g <= 1:  # each gene's only neighbour is itself: no edges (the GCN adds the self loop)
        return sp.csr_matrix((x.shape[1], x.shape[1]), dtype=np.float32)
    genes = x.T.toarray() if sp.issparse(x) else np.ascontiguousarray(np.asarray(x).T)
    k = k_g - 1
    if genes.shape[0] < k + 1:
        raise UserError(
            f"only {genes.shape[0]} genes left after filtering but the gene graph needs k_g = {k_g} (self included); "
            "use a smaller --gene-k or give more genes"
        )
    return knn_graph(genes, k, metric="euclidean")


def normalized_adjacency(graph: sp.spmatrix) -> sp.csr_matrix:
    """F = D̃^{-1/2} (A + I) D̃^{-1/2}, the GCN propagation matrix and low-pass filter."""
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
