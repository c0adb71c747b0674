"""Turning a learned embedding into cluster labels, and smoothing labels over a spatial layout."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.cluster import KMeans
from sklearn.neighbors import KDTree

__all__ = ["kmeans", "refine_spatial"]


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def kmeans(embedding: np.ndarray, n_clusters: int, seed: int, n_init: int = 10) -> np.ndarray:
    """K-means (k-means++ init, Lloyd iterations, best of ``n_init`` runs) on an (N, D) embedding.

    Returns int64 labels in ``0..n_clusters-1``, shape (N,); the same seed gives the same labels.
    The input is never modified, and exactly one copy of it is made: the float64 array the
    clustering runs on, which sklearn then centres in place. float32 input is clustered in float64
    on purpose: sklearn's k-means++ seeding upcasts float32 distances in small chunks, which made
    it 4-7x slower at N=128k, D=200 than converting once up front.
    """
    x = np.asarray(embedding)
    if x.ndim != 2:
        raise ValueError(f"embedding must be a 2-D (cells, features) array, got shape {x.shape}")
    n_clusters = _check_int(n_clusters, "n_clusters", 1)
    n_init = _check_int(n_init, "n_init", 1)
    seed = _check_int(seed, "seed", 0)
    if n_clusters > x.shape[0]:
        raise ValueError(f"n_clusters={n_clusters} exceeds the number of cells ({x.shape[0]})")
    # sklearn centres the data in place: let it copy the caller's float64 array (copy_x=True), but
    # hand it our own float64 conversion of anything else to centre without a second copy.
    own_copy = x.dtype != np.float64
    if own_copy:
        x = x.astype(np.float64)
    model = KMeans(
        n_clusters=n_clusters,
        init="k-means++",
        n_init=n_init,
        algorithm="lloyd",
        random_state=seed,
        copy_x=not own_copy,
    )
    return model.fit_predict(x).astype(np.int64, copy=False)


def _nearest_others(coords: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each spot's ``k`` nearest other spots, ordered by (distance, index).

    Two kd-tree passes: the (k+1)-th smallest distance from a spot over all spots (itself at 0
    included) is the k-th smallest over the others; every spot within it is then collected, so ties
    at the edge are all seen and the lower indices win. Memory stays O(N * k) (plus equidistant ties).
    """
    coords = np.asarray(coords, dtype=np.float64)
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


def refine_spatial(labels: np.ndarray, coords: np.ndarray, radius: int) -> np.ndarray:
    """Relabel each spot by majority vote over itself and its ``radius`` nearest other spots.

    Neighbours are found by Euclidean distance on ``coords`` (N, 2) with a kd-tree, so the cost is
    O(N log N + N * radius) and no N x N matrix is built. The spot itself always votes, and is
    excluded from its own neighbour list even when other spots share its coordinates. When several
    spots are equally far at the edge of the neighbourhood (common on a regular Visium grid), the
    ones with the lower index are taken, so the result does not depend on the tree's internals.
    ``radius`` is capped at N - 1.

    Ties in the vote keep the spot's own label if it is among the most frequent, otherwise the
    smallest tied label. ``radius=0`` returns an unchanged copy. Returns a new array of the input's
    dtype; the input is never modified.
    """
    labels = np.asarray(labels)
    coords = np.asarray(coords)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if coords.ndim != 2 or coords.shape[0] != labels.shape[0]:
        raise ValueError(
            f"coords must be an (N, 2) array with one row per label (N={labels.shape[0]}), "
            f"got shape {coords.shape}"
        )
    radius = _check_int(radius, "radius", 0)
    n = labels.shape[0]
    k = min(radius, n - 1)
    if k <= 0:
        return labels.copy()

    uniques, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64, copy=False)
    n_labels = uniques.shape[0]

    others = _nearest_others(coords, k)

    # Votes as (spot, label) keys; counting them sparsely keeps memory at O(N * radius).
    votes = np.concatenate([codes[:, None], codes[others]], axis=1)
    keys = np.arange(n, dtype=np.int64)[:, None] * n_labels + votes
    uniq_keys, counts = np.unique(keys.ravel(), return_counts=True)
    spot = uniq_keys // n_labels
    label = uniq_keys % n_labels
    starts = np.flatnonzero(np.r_[True, spot[1:] != spot[:-1]])  # every spot has >= 1 key
    best = np.maximum.reduceat(counts, starts)

    # Smallest tied label: keys are sorted by (spot, label), so the first maximum in each spot.
    is_max = counts == best[spot]
    max_idx = np.flatnonzero(is_max)
    first = max_idx[np.r_[True, spot[max_idx][1:] != spot[max_idx][:-1]]]
    result = label[first]

    own_count = counts[np.searchsorted(uniq_keys, np.arange(n, dtype=np.int64) * n_labels + codes)]
    keep_own = own_count == best
    result[keep_own] = codes[keep_own]
    return uniques[result]
