"""Scoring a finished clustering against cell annotations.

Labels only ever score a result; nothing here feeds back into training.

Cluster ids are arbitrary, so ACC and F1 first match predicted clusters to true labels one-to-one
with the Hungarian algorithm on the contingency table (maximising the number of cells that agree).
When there are more predicted clusters than true labels, the surplus clusters stay unmatched; a
matched pair with zero overlap is also treated as unmatched (it agrees on no cell, and dropping it
keeps the mapping independent of how the solver breaks ties between zero-weight pairs). Cells in
an unmatched cluster are always counted as wrong.

Inputs may be lists, numpy arrays, pandas Series or Categoricals, holding ints or strings. They
are never modified.
"""

from __future__ import annotations

import numpy as np

#: The scores every table and log reports, in this order (the keys of ``clustering_scores``).
SCORES = ("acc", "nmi", "ari", "f1")

__all__ = ["SCORES", "match_clusters", "cluster_acc", "macro_f1", "clustering_scores", "mean_std_text"]

# scipy and scikit-learn are imported where they are used, so that the launchers and evaluate.py can take
# SCORES and mean_std_text from here without loading them.


def _encode(y, name: str) -> tuple[list, np.ndarray]:
    """Return (distinct labels, integer code of each cell); sorted labels when they are orderable."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    try:
        uniques, codes = np.unique(arr, return_inverse=True)
        return uniques.tolist(), codes.reshape(-1).astype(np.int64, copy=False)
    except TypeError:  # mixed, unorderable labels (e.g. ints and strings): order of first appearance
        index: dict = {}
        codes = np.fromiter((index.setdefault(v, len(index)) for v in arr.tolist()), np.int64, arr.size)
        return list(index), codes


def _prepare(y_true, y_pred):
    true_labels, t = _encode(y_true, "y_true")
    pred_labels, p = _encode(y_pred, "y_pred")
    if t.size != p.size:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.size} and {p.size}")
    if t.size == 0:
        raise ValueError("cannot score an empty clustering: y_true and y_pred have no cells")
    return true_labels, t, pred_labels, p


def _match_codes(t: np.ndarray, p: np.ndarray, n_true: int, n_pred: int):
    """Hungarian matching on codes: (pred code -> true code or -1, number of agreeing cells)."""
    from scipy.optimize import linear_sum_assignment

    table = np.bincount(t * n_pred + p, minlength=n_true * n_pred).reshape(n_true, n_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = np.full(n_pred, -1, dtype=np.int64)
    overlap = table[rows, cols]
    keep = overlap > 0
    mapping[cols[keep]] = rows[keep]
    return mapping, int(overlap.sum())


def _macro_f1_codes(t: np.ndarray, p: np.ndarray, mapping: np.ndarray, n_true: int) -> float:
    from sklearn.metrics import f1_score

    matched = mapping[p]
    matched[matched < 0] = n_true  # sentinel class, outside the true classes
    return float(
        f1_score(t, matched, labels=np.arange(n_true), average="macro", zero_division=0.0)
    )


def match_clusters(y_true, y_pred) -> dict:
    """Best one-to-one map from predicted cluster to true label (Hungarian, maximum agreement).

    Every predicted cluster is a key; clusters left unmatched (surplus clusters, or matches that
    share no cell) map to ``None``.
    """
    true_labels, t, pred_labels, p = _prepare(y_true, y_pred)
    mapping, _ = _match_codes(t, p, len(true_labels), len(pred_labels))
    return {
        pred_labels[j]: (true_labels[i] if i >= 0 else None) for j, i in enumerate(mapping.tolist())
    }


def cluster_acc(y_true, y_pred) -> float:
    """Clustering accuracy: fraction of cells whose matched cluster label equals the truth.

    Cells in unmatched clusters count as wrong.
    """
    true_labels, t, pred_labels, p = _prepare(y_true, y_pred)
    _, agree = _match_codes(t, p, len(true_labels), len(pred_labels))
    return agree / t.size


def macro_f1(y_true, y_pred) -> float:
    """Macro F1 of the matched predictions, averaged over the true classes only.

    Each predicted cluster is relabelled with its matched true label; cells of unmatched clusters
    get a label that is not among the true ones (false negatives for their true class, never a
    positive for any class). The unweighted mean of per-class F1 runs over the true classes;
    a true class that no cluster matched scores 0.
    """
    true_labels, t, pred_labels, p = _prepare(y_true, y_pred)
    n_true = len(true_labels)
    mapping, _ = _match_codes(t, p, n_true, len(pred_labels))
    return _macro_f1_codes(t, p, mapping, n_true)


def clustering_scores(y_true, y_pred) -> dict[str, float]:
    """All four scores: ``acc``, ``nmi`` (arithmetic normalisation), ``ari`` and macro ``f1``."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    true_labels, t, pred_labels, p = _prepare(y_true, y_pred)
    n_true = len(true_labels)
    mapping, agree = _match_codes(t, p, n_true, len(pred_labels))
    return {
        "acc": agree / t.size,
        "nmi": float(normalized_mutual_info_score(t, p, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(t, p)),
        "f1": _macro_f1_codes(t, p, mapping, n_true),
    }


def interval95(values) -> tuple[float, float] | None:
    """95% confidence interval of the mean of ``values`` (Student's t over the seeds, scipy's); None below 2 values."""
    from scipy import stats

    arr = np.asarray(list(values), dtype=float)
    if arr.size < 2:
        return None
    if np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0])
    low, high = stats.t.interval(0.95, df=arr.size - 1, loc=arr.mean(), scale=stats.sem(arr))
    return float(low), float(high)


def mean_std_text(values) -> str:
    """A table cell for scores over seeds: ``mean ± std [95% interval of the mean]`` (population std; the interval
    from Student's t, :func:`interval95`; 4 decimals).

    One value is shown alone (a std over one seed is not a zero spread, it is no spread measured);
    no value gives ``–``."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return "–"
    if arr.size == 1:
        return f"{arr[0]:.4f}"
    low, high = interval95(arr)
    return f"{arr.mean():.4f} ± {arr.std():.4f} [{low:.4f}, {high:.4f}]"


def paired_difference_text(values, baseline) -> str:
    """``values − baseline`` paired by seed (two equal-length sequences): the mean difference with its 95% interval
    (:func:`interval95`), ``within noise`` when the interval contains 0; ``+0.012 (1 seed)`` for one pair."""
    diffs = np.asarray(list(values), dtype=float) - np.asarray(list(baseline), dtype=float)
    if diffs.size == 0:
        return "–"
    if diffs.size == 1:
        return f"{diffs[0]:+.3f} (1 seed)"
    low, high = interval95(diffs)
    verdict = "within noise" if low <= 0 <= high else "beyond noise"
    return f"{diffs.mean():+.3f} [{low:+.3f}, {high:+.3f}] ({diffs.size} seeds; {verdict})"


INTERNAL = ("silhouette", "calinski_harabasz")  # label-free: how well the embedding separates its own clusters
SILHOUETTE_SAMPLE = 5000  # above this many cells the silhouette is that of a seeded sample of them (scikit-learn's draw)


def cosine_silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's ``silhouette_score(x, labels, metric="cosine")``, computed in O(N·k·D) instead of O(N²·D).

    The cosine distance 1 − x̂ᵢ·x̂ⱼ (x̂: the row scaled to unit length; a zero row stays zero, as scikit-learn's
    ``normalize`` leaves it) is linear in x̂ⱼ, so the mean distance from cell i to a cluster C is one dot product
    with the cluster's sum Σ_C = Σ_{j∈C} x̂ⱼ: Σ_{j∈C, j≠i} (1 − x̂ᵢ·x̂ⱼ) = |C| − 1 − x̂ᵢ·Σ_C + x̂ᵢ·x̂ᵢ for i's own
    cluster, |C| − x̂ᵢ·Σ_C for another. Then, as scikit-learn: a(i) the mean over i's own cluster without i, b(i)
    the least mean over another cluster, s(i) = (b − a)/max(a, b), 0 for a cell alone in its cluster; the mean of
    s. Equal to scikit-learn's up to rounding (tested). Where the distances themselves are at rounding level (cells
    that share one direction) both results are rounding noise and may differ, each within [−1, 1]."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"the silhouette needs an (N, D) embedding and N labels, got {x.shape} and {labels.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the silhouette needs a finite embedding (it holds NaN or inf)")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    _, code = np.unique(labels, return_inverse=True)
    code = code.ravel()
    sizes = np.bincount(code).astype(np.float64)
    if not 2 <= sizes.size <= code.size - 1:  # as scikit-learn: the silhouette needs 2 .. N-1 clusters
        raise ValueError(f"the silhouette needs 2 to {code.size - 1} clusters, got {sizes.size}")
    sums = np.zeros((sizes.size, x.shape[1]))
    np.add.at(sums, code, unit)
    dots = unit @ sums.T  # (N, k): x̂ᵢ·Σ_C
    rows = np.arange(code.size)
    own_size = sizes[code]
    totals = sizes[None, :] - dots  # Σ_{j∈C} distances for every other cluster C
    totals[rows, code] += np.einsum("ij,ij->i", unit, unit) - 1.0  # own cluster: without i itself
    means = totals / np.maximum(sizes[None, :] - (np.arange(sizes.size)[None, :] == code[:, None]), 1)
    a = np.maximum(means[rows, code], 0.0)  # a mean of distances in [0, 2] (scikit-learn clips each one): rounding
    means[rows, code] = np.inf              # can take |C| − x̂ᵢ·Σ_C just below 0 when the cells share a direction
    b = np.maximum(means.min(axis=1), 0.0)
    top = np.maximum(a, b)
    s = np.where(top > 0, (b - a) / np.where(top > 0, top, 1.0), 0.0)  # 0 where a = b = 0, as scikit-learn's 0/0
    return float(np.where(own_size > 1, s, 0.0).mean())


def internal_scores(embedding: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Label-free scores of a clustering of an embedding: the mean silhouette (cosine, the geometry of the unit-norm
    embedding: scikit-learn's, computed in linear time by :func:`cosine_silhouette`; above ``SILHOUETTE_SAMPLE`` cells
    on the seeded sample of them that scikit-learn's ``sample_size`` draws) and scikit-learn's Calinski–Harabasz
    index. Higher is better for both; NaN when the clustering has fewer than two clusters."""
    from sklearn.metrics import calinski_harabasz_score
    from sklearn.utils import check_random_state

    x = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels)
    n_clusters = np.unique(labels).size
    if n_clusters < 2 or n_clusters >= len(labels):  # both scores are defined for 2 .. N-1 clusters
        return {name: float("nan") for name in INTERNAL}
    silhouette = float("nan")  # where a sample misses every cluster but one: NaN, not a failed evaluation
    keep = slice(None)
    if len(labels) > SILHOUETTE_SAMPLE:  # the cells silhouette_score(..., sample_size, random_state=seed) would take
        keep = check_random_state(seed).permutation(len(labels))[:SILHOUETTE_SAMPLE]
    if np.unique(labels[keep]).size >= 2:
        silhouette = cosine_silhouette(x[keep], labels[keep])
    return {"silhouette": silhouette, "calinski_harabasz": float(calinski_harabasz_score(x, labels))}
