import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score

from scrcl.eval.metrics import cluster_acc, clustering_scores, macro_f1, match_clusters


def brute_force_acc(y_true, y_pred):
    """Maximum agreement over every one-to-one assignment of predicted clusters to true labels."""
    true_labels = sorted(set(y_true))
    pred_labels = sorted(set(y_pred))
    size = max(len(true_labels), len(pred_labels))
    # Pad with dummies (None) so every assignment is a permutation of a square table.
    true_padded = true_labels + [None] * (size - len(true_labels))
    best = 0
    for perm in itertools.permutations(true_padded):
        mapping = dict(zip(pred_labels + [object()] * (size - len(pred_labels)), perm))
        agree = sum(mapping[p] == t for t, p in zip(y_true, y_pred))
        best = max(best, agree)
    return best / len(y_true)


def remap(y_true, y_pred, sentinel="__unmatched__"):
    mapping = match_clusters(y_true, y_pred)
    return [sentinel if mapping[p] is None else mapping[p] for p in y_pred]


def test_permuted_perfect_clustering_scores_one():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    y_pred = np.array([7, 7, 4, 4, 4, 9, 9, 5])  # same partition, renamed
    scores = clustering_scores(y_true, y_pred)
    assert set(scores) == {"acc", "nmi", "ari", "f1"}
    for name, value in scores.items():
        assert value == pytest.approx(1.0), name
        assert isinstance(value, float)
    assert match_clusters(y_true, y_pred) == {4: 1, 5: 3, 7: 0, 9: 2}


def test_worked_six_cell_example():
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = [0, 0, 1, 1, 1, 2]
    # Contingency (true x pred):   0  1  2
    #                         a    2  1  0
    #                         b    0  2  0
    #                         c    0  0  1
    # Best one-to-one: 0->a (2), 1->b (2), 2->c (1): 5 of 6 cells agree, ACC = 5/6.
    assert match_clusters(y_true, y_pred) == {0: "a", 1: "b", 2: "c"}
    assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 6)
    # F1 by hand: a: P=2/2, R=2/3 -> 0.8; b: P=2/3, R=2/2 -> 0.8; c: P=R=1 -> 1. Mean = 2.6/3.
    assert macro_f1(y_true, y_pred) == pytest.approx(2.6 / 3)


def test_more_predicted_clusters_than_true_labels():
    y_true = [0, 0, 0, 0, 1, 1, 1, 1]
    y_pred = [0, 0, 0, 2, 1, 1, 3, 3]
    # Contingency (true x pred):   0  1  2  3
    #                         0    3  0  1  0
    #                         1    0  2  0  2
    # Two true labels, so only two clusters match: 0->0 (3) plus 1 or 3 -> 1 (2).
    # 5 of 8 cells agree; clusters 2 and the other of {1, 3} are unmatched and wrong. ACC = 5/8.
    assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 8)
    mapping = match_clusters(y_true, y_pred)
    assert set(mapping) == {0, 1, 2, 3}
    assert mapping[0] == 0 and mapping[2] is None
    assert sorted([mapping[1], mapping[3]], key=str) == [1, None]
    assert cluster_acc(y_true, y_pred) == pytest.approx(brute_force_acc(y_true, y_pred))


def test_fewer_predicted_clusters_than_true_labels():
    y_true = [0, 0, 1, 1, 1, 2, 2, 2, 2]
    y_pred = [5, 5, 5, 5, 5, 6, 6, 6, 6]
    # Contingency (true x pred):   5  6
    #                         0    2  0
    #                         1    3  0
    #                         2    0  4
    # Best: 5->1 (3), 6->2 (4); true label 0 gets no cluster. ACC = 7/9.
    assert match_clusters(y_true, y_pred) == {5: 1, 6: 2}
    assert cluster_acc(y_true, y_pred) == pytest.approx(7 / 9)
    # F1: class 0 never predicted -> 0; class 1: P=3/5, R=1 -> 0.75; class 2: 1. Mean = 1.75/3.
    assert macro_f1(y_true, y_pred) == pytest.approx(1.75 / 3)


def test_unmatched_cluster_counts_against_f1_recall_only():
    y_true = ["x", "x", "x", "y", "y", "y"]
    y_pred = [0, 0, 2, 1, 1, 1]  # cluster 2 is surplus
    # x: P=1, R=2/3 -> 0.8; y: P=R=1 -> 1. The unmatched cell is no class's positive.
    assert match_clusters(y_true, y_pred) == {0: "x", 1: "y", 2: None}
    assert macro_f1(y_true, y_pred) == pytest.approx(0.9)
    assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 6)


def test_zero_overlap_assignment_is_unmatched():
    y_true = ["a", "a", "a", "a", "b"]
    y_pred = [0, 0, 0, 1, 0]
    # Contingency (true x pred):   0  1
    #                         a    3  1
    #                         b    1  0
    # Hungarian picks 0->a (3) + 1->b (0) over 0->b (1) + 1->a (1). Cluster 1 shares no cell
    # with b, so it is reported unmatched. ACC = 3/5; F1: a P=R=3/4 -> 0.75, b -> 0.
    assert match_clusters(y_true, y_pred) == {0: "a", 1: None}
    assert cluster_acc(y_true, y_pred) == pytest.approx(3 / 5)
    assert macro_f1(y_true, y_pred) == pytest.approx(0.375)


def test_string_and_categorical_labels():
    y_true = pd.Categorical(["T cell", "B cell", "T cell", "NK", "NK", "B cell"])
    y_pred = np.array(["c2", "c0", "c2", "c1", "c1", "c1"])
    assert match_clusters(y_true, y_pred) == {"c0": "B cell", "c1": "NK", "c2": "T cell"}
    assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 6)
    assert cluster_acc(pd.Series(np.asarray(y_true)), list(y_pred)) == pytest.approx(5 / 6)


def test_inputs_not_mutated():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 50)
    y_pred = rng.integers(0, 6, 50)
    true_copy, pred_copy = y_true.copy(), y_pred.copy()
    cat = pd.Categorical(rng.choice(["a", "b", "c"], 50))
    cat_copy = cat.copy()
    for fn in (match_clusters, cluster_acc, macro_f1, clustering_scores):
        fn(y_true, y_pred)
        fn(cat, y_pred)
    np.testing.assert_array_equal(y_true, true_copy)
    np.testing.assert_array_equal(y_pred, pred_copy)
    assert cat.equals(cat_copy)


@pytest.mark.parametrize("trial", range(20))
def test_acc_equals_brute_force_over_permutations(trial):
    rng = np.random.default_rng(100 + trial)
    n_pred = int(rng.integers(2, 6))  # fewer, equal and more clusters than the 4 labels
    y_true = rng.integers(0, 4, 30).tolist()
    y_pred = rng.integers(0, n_pred, 30).tolist()
    assert cluster_acc(y_true, y_pred) == pytest.approx(brute_force_acc(y_true, y_pred))


@pytest.mark.parametrize("trial", range(10))
def test_nmi_ari_f1_match_sklearn(trial):
    rng = np.random.default_rng(200 + trial)
    y_true = rng.choice(["a", "b", "c", "d", "e"], 80)
    y_pred = rng.integers(0, int(rng.integers(2, 8)), 80)
    scores = clustering_scores(y_true, y_pred)
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(y_true, y_pred))
    assert scores["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred))
    expected_f1 = f1_score(
        y_true,
        remap(y_true, y_pred),
        labels=sorted(set(y_true)),
        average="macro",
        zero_division=0,
    )
    assert scores["f1"] == pytest.approx(expected_f1)
    assert macro_f1(y_true, y_pred) == pytest.approx(expected_f1)
    assert scores["acc"] == pytest.approx(cluster_acc(y_true, y_pred))


@pytest.mark.parametrize("fn", [match_clusters, cluster_acc, macro_f1, clustering_scores])
def test_length_mismatch_and_empty_raise(fn):
    with pytest.raises(ValueError, match="same length"):
        fn([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


def test_mean_std_text_shows_one_run_alone_and_nothing_as_a_dash():
    from scipy import stats

    from scrcl.eval.metrics import mean_std_text

    low, high = stats.t.interval(0.95, 1, loc=0.6, scale=np.std([0.5, 0.7], ddof=1) / np.sqrt(2))
    assert mean_std_text([0.5, 0.7]) == f"0.6000 ± 0.1000 [{low:.4f}, {high:.4f}]"  # population std; t interval
    assert (low, high) == pytest.approx((0.6 - 12.7062 * 0.1, 0.6 + 12.7062 * 0.1), abs=1e-4)  # t(0.975, 1) = 12.706
    assert mean_std_text([0.7, 0.7, 0.7]) == "0.7000 ± 0.0000 [0.7000, 0.7000]"  # a measured zero spread stays
    assert mean_std_text([0.73456]) == "0.7346"  # no spread measured: no "± 0.0000"
    assert mean_std_text(v for v in []) == "–"


def test_paired_difference_says_within_noise_when_its_interval_contains_zero():
    from scrcl.eval.metrics import paired_difference_text

    assert paired_difference_text([0.70, 0.72, 0.71], [0.60, 0.61, 0.62]).endswith("(3 seeds; beyond noise)")
    text = paired_difference_text([0.70, 0.60, 0.72], [0.65, 0.66, 0.67])
    assert text.startswith("+0.013 [") and text.endswith("(3 seeds; within noise)")  # (0.05 - 0.06 + 0.05) / 3
    assert paired_difference_text([0.5], [0.7]) == "-0.200 (1 seed)" and paired_difference_text([], []) == "–"


@pytest.mark.parametrize("n, dim, k", [(300, 6, 4), (1000, 16, 8), (40, 3, 9)])
def test_cosine_silhouette_is_scikit_learns_brute_force_value(n, dim, k):
    """The linear-time silhouette against scikit-learn's O(N²) one, with a zero row, a cell alone in its cluster
    and string labels."""
    from sklearn.metrics import silhouette_score

    from scrcl.eval.metrics import cosine_silhouette

    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, dim)) + rng.normal(size=dim)  # off-centre, so that the distances are not all near 1
    labels = rng.integers(0, k, n).astype(str)
    x[3] = 0.0
    labels[5] = "alone"
    assert cosine_silhouette(x, labels) == pytest.approx(silhouette_score(x, labels, metric="cosine"), abs=1e-12)
    for one_each in (np.zeros(n, int), np.arange(n)):  # 1 and N clusters: undefined, as in scikit-learn
        with pytest.raises(ValueError, match="needs 2 to"):
            cosine_silhouette(x, one_each)


def test_internal_silhouette_above_the_sample_size_is_on_scikit_learns_sample():
    from sklearn.metrics import silhouette_score

    from scrcl.eval.metrics import SILHOUETTE_SAMPLE, internal_scores

    rng = np.random.default_rng(0)
    x = rng.normal(size=(SILHOUETTE_SAMPLE + 500, 5)) + 1.0
    labels = (x[:, 0] > 1).astype(int) + 2 * (x[:, 1] > 1)
    want = silhouette_score(x, labels, metric="cosine", sample_size=SILHOUETTE_SAMPLE, random_state=7)
    assert internal_scores(x, labels, seed=7)["silhouette"] == pytest.approx(want, abs=1e-12)
    assert internal_scores(x, labels, seed=8)["silhouette"] != pytest.approx(want, abs=1e-12)  # another draw
    # a sample holding one cluster only (the other is one cell the draw left out): NaN, as for one cluster overall
    labels = np.zeros(len(x), int)
    labels[np.random.RandomState(7).permutation(len(x))[-1]] = 1  # the one cell seed 7's sample leaves out
    scores = internal_scores(x, labels, seed=7)
    assert np.isnan(scores["silhouette"]) and np.isfinite(scores["calinski_harabasz"])


def test_cosine_silhouette_stays_a_silhouette_where_distances_are_rounding():
    """Cells of two clusters that share one direction: their cosine distances are 0 up to rounding, so a(i) and b(i)
    are rounding too; scikit-learn clips each distance to [0, 2] and gets a number in [-1, 1], and so must we (the
    unclipped form gave ±inf or values far outside [-1, 1] on most of these draws)."""
    from sklearn.metrics import silhouette_score

    from scrcl.eval.metrics import cosine_silhouette

    for seed in range(20):
        rng = np.random.default_rng(seed)
        direction, other = rng.normal(size=8), rng.normal(size=8)
        x = np.vstack([rng.uniform(0.5, 2.0, size=(40, 1)) * direction, rng.uniform(0.5, 2.0, size=(40, 1)) * direction,
                       other + 0.3 * rng.normal(size=(40, 8))])
        labels = np.repeat([0, 1, 2], 40)
        got = cosine_silhouette(x, labels)
        assert np.isfinite(got) and -1.0 <= got <= 1.0, (seed, got)
        assert -1.0 <= silhouette_score(x, labels, metric="cosine") <= 1.0


def test_cosine_silhouette_refuses_what_is_not_an_embedding():
    from scrcl.eval.metrics import cosine_silhouette

    x = np.ones((6, 2))
    with pytest.raises(ValueError, match="N labels"):
        cosine_silhouette(x, [0, 1, 0])
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        cosine_silhouette(x, [0, 1, 0, 1, 0, 1])
