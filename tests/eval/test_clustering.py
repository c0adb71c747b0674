import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from scrcl.eval.clustering import kmeans, refine_spatial


def three_blobs(n_per=100, dim=8, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, dim))
    centres[0, 0], centres[1, 1], centres[2, 2] = 20.0, 20.0, 20.0
    truth = np.repeat(np.arange(3), n_per)
    x = centres[truth] + rng.normal(size=(3 * n_per, dim))
    perm = rng.permutation(truth.size)
    return x[perm].astype(dtype), truth[perm]


# ---------------------------------------------------------------- kmeans


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kmeans_recovers_separated_blobs(dtype):
    x, truth = three_blobs(dtype=dtype)
    labels = kmeans(x, 3, seed=0)
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    assert labels.shape == (x.shape[0],)
    assert labels.dtype == np.int64
    assert set(np.unique(labels).tolist()) == {0, 1, 2}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kmeans_deterministic_for_seed_and_input_untouched(dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 5)).astype(dtype) + 3.0  # no structure: init matters; mean != 0
    x_copy = x.copy()
    a = kmeans(x, 6, seed=7)
    b = kmeans(x, 6, seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, x_copy)
    assert a.min() >= 0 and a.max() <= 5


def test_kmeans_rejects_bad_arguments():
    x, _ = three_blobs()
    with pytest.raises(ValueError):
        kmeans(x[:, 0], 3, seed=0)
    with pytest.raises(ValueError):
        kmeans(x[:2], 3, seed=0)
    with pytest.raises(ValueError):
        kmeans(x, 0, seed=0)


# ---------------------------------------------------------------- refine_spatial


def grid(n_rows, n_cols):
    r, c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    return np.column_stack([r.ravel(), c.ravel()]).astype(float)


def brute_force_refine(labels, coords, radius):
    """Explicit O(N^2) distances, the `radius` nearest others (no ties on continuous coordinates) voting; the spot
    itself does not vote; a tie goes to the label met first, nearest first."""
    n = len(labels)
    dist = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))
    out = labels.copy()
    for i in range(n):
        d = dist[i].copy()
        d[i] = np.inf
        others = np.argsort(d, kind="stable")[:radius]
        counts = {}
        for v in (labels[j] for j in others):  # dicts keep insertion order: first met first
            counts[v] = counts.get(v, 0) + 1
        out[i] = max(counts, key=counts.get)  # the first of the maxima in insertion order
    return out


def test_refine_fixes_single_mislabelled_spot():
    coords = grid(7, 7)
    labels = np.zeros(49, dtype=np.int64)
    labels[coords[:, 1] >= 4] = 1  # two uniform regions, left and right
    noisy = labels.copy()
    centre = 2 * 7 + 1  # row 2, col 1: deep inside region 0
    noisy[centre] = 1
    refined = refine_spatial(noisy, coords, radius=4)  # the 4 direct neighbours
    assert refined[centre] == 0
    inside = (coords.min(axis=1) >= 1) & (coords.max(axis=1) <= 5)  # 4 neighbours at distance 1, no tie at the edge
    np.testing.assert_array_equal(refined[inside], labels[inside])
    assert noisy[centre] == 1  # input untouched


def test_refine_radius_zero_is_identity_copy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)
    coords = rng.uniform(size=(40, 2))
    out = refine_spatial(labels, coords, radius=0)
    np.testing.assert_array_equal(out, labels)
    assert out is not labels and not np.shares_memory(out, labels)


@pytest.mark.parametrize("radius", [1, 2, 3, 6, 10])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refine_matches_brute_force(radius, seed):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 10, size=(60, 2))  # continuous: no equidistant neighbours
    labels = rng.integers(0, 4, 60)
    labels_copy, coords_copy = labels.copy(), coords.copy()
    out = refine_spatial(labels, coords, radius)
    np.testing.assert_array_equal(out, brute_force_refine(labels, coords, radius))
    np.testing.assert_array_equal(labels, labels_copy)
    np.testing.assert_array_equal(coords, coords_copy)
    assert out.dtype == labels.dtype


def test_refine_tie_rules():
    # Four spots on a line; radius 1: each spot takes the label of its nearest other spot (its own does not vote).
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [2.1, 0.0], [3.3, 0.0]])
    labels = np.array([5, 3, 3, 9])
    np.testing.assert_array_equal(refine_spatial(labels, coords, 1), [3, 5, 3, 3])
    # A tied vote goes to the label met first, nearest first.
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [-1.1, 0.0], [1.2, 0.5], [-1.3, 0.5]])
    labels = np.array([0, 2, 1, 2, 1])
    # Spot 0, radius 4: neighbours 1, 2, 3, 4 vote 2, 1, 2, 1 -> 1 and 2 tied at two, 2 met first.
    assert refine_spatial(labels, coords, 4)[0] == 2


def test_refine_string_labels_and_large_radius():
    coords = grid(3, 3)
    labels = np.array(["b"] * 8 + ["a"])
    out = refine_spatial(labels, coords, radius=100)  # capped at N - 1: every spot sees all
    assert out.tolist() == ["b"] * 9
    assert labels[-1] == "a"
