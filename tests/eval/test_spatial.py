"""Spatial refinement at the edge of the neighbourhood, domain maps, and the evaluator's map hook.

Synthetic layouts for the tie rules and the drawing; the real DLPFC 151673 spot layout for the
brute-force check on a Visium grid. The end-to-end checks on real runs are in tests/cli/test_spatial_cli.py.
"""

from __future__ import annotations

import tracemalloc
from collections import Counter
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex

from scrcl.eval.clustering import refine_spatial
from scrcl.eval.metrics import match_clusters
from scrcl.eval.spatial_maps import (
    UNLABELLED_COLOUR,
    annotation_colours,
    domain_map_figure,
    draw_domain_map,
    matched_colours,
    palette,
)


# -- refine_spatial: the documented rules, against a brute force written independently ---------------
def brute_force(labels: np.ndarray, coords: np.ndarray, radius: int, order: str = "reference") -> np.ndarray:
    """Every pairwise distance. ``reference``: each row sorted by numpy's default argsort and its first entry (the
    spot, or a spot at its position) dropped, as the reference does; ``index``: the other spots by (distance,
    index). The spot itself does not vote; the most frequent label wins, a tie going to the label met first."""
    n = len(labels)
    out = labels.copy()
    k = min(radius, n - 1)
    for i in range(n):
        d = np.sqrt(((coords - coords[i]) ** 2).sum(axis=1))
        if order == "reference":
            neighbours = np.argsort(d)[1 : k + 1]
        else:
            neighbours = [j for _, j in sorted((d[j], j) for j in range(n) if j != i)[:k]]
        out[i] = Counter(labels[j] for j in neighbours).most_common(1)[0][0]  # ties: first met (insertion order)
    return out


@pytest.fixture
def kd_tree(monkeypatch):
    """Neighbours by the kd-tree search that takes over above SORTED_NEIGHBOURS_MAX spots (ties: lower index)."""
    from datamodules import graphs

    monkeypatch.setattr(graphs, "SORTED_NEIGHBOURS_MAX", 0)


@pytest.mark.parametrize("radius", [3, 4, 8, 12, 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_refine_on_a_square_grid_with_equidistant_neighbours(radius, seed):
    """On an integer grid most neighbourhoods end inside a ring of equidistant spots: the reference's sort order
    decides which are kept."""
    rng = np.random.default_rng(seed)
    r, c = np.meshgrid(np.arange(9), np.arange(8), indexing="ij")
    coords = np.column_stack([r.ravel(), c.ravel()]).astype(float)
    perm = rng.permutation(len(coords))  # indices unrelated to position
    coords = coords[perm]
    labels = rng.integers(0, 4, len(coords))
    np.testing.assert_array_equal(refine_spatial(labels, coords, radius), brute_force(labels, coords, radius))


@pytest.mark.parametrize("radius", [3, 8])
def test_refine_above_the_sorted_limit_takes_the_lower_indices_at_ties(kd_tree, radius):
    rng = np.random.default_rng(0)
    r, c = np.meshgrid(np.arange(9), np.arange(8), indexing="ij")
    coords = np.column_stack([r.ravel(), c.ravel()]).astype(float)[rng.permutation(72)]
    labels = rng.integers(0, 4, len(coords))
    np.testing.assert_array_equal(refine_spatial(labels, coords, radius), brute_force(labels, coords, radius, "index"))


def test_edge_tie_takes_the_lower_indices(kd_tree):
    # Spot 0 at the centre of four equidistant spots; radius 2 takes spots 1 and 2 (label 7), not 3 and 4 (label 9).
    coords = np.array([[0.0, 0.0], [0.0, -1.0], [-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = np.array([5, 7, 7, 9, 9])
    assert refine_spatial(labels, coords, 2)[0] == 7
    # The same spots numbered the other way round: the other pair wins.
    order = np.array([0, 3, 4, 1, 2])
    assert refine_spatial(labels[order], coords[order], 2)[0] == 9


def test_a_tied_vote_goes_to_the_label_met_first_and_the_spot_itself_does_not_vote():
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [-1.1, 0.0], [1.2, 0.5], [-1.3, 0.5]])
    labels = np.array([0, 2, 1, 2, 1])
    # spot 0, radius 4: neighbours nearest first have labels 2, 1, 2, 1: a 2-2 tie, 2 met first; its own 0 has no vote
    assert refine_spatial(labels, coords, 4)[0] == 2
    assert refine_spatial(labels[[0, 2, 1, 4, 3]], coords[[0, 2, 1, 4, 3]], 4)[0] == 2


def test_duplicated_coordinates_follow_the_reference_rule():
    """The reference drops the first entry of each sorted row; where spots share a position that may be another
    spot than itself, so a spot can count its own label. The rule is reproduced, not corrected."""
    coords = np.array([[0.0, 0.0]] * 3 + [[5.0, 5.0]] * 2)
    labels = np.array([1, 2, 2, 3, 4])
    np.testing.assert_array_equal(refine_spatial(labels, coords, 2), brute_force(labels, coords, 2))


def test_refine_matches_brute_force_on_the_real_dlpfc_grid(data_dir):
    """The Visium hexagonal grid of DLPFC 151673 (pixel coordinates, ~2 % of spots with an exact tie at the
    50th neighbour): radius 50 as the published config, random labels."""
    coords = np.asarray(ad.read_h5ad(data_dir / "derived/DLPFC_151673.h5ad", backed="r").obsm["spatial"], dtype=np.float64)
    spots = np.sort(np.random.default_rng(0).choice(len(coords), 1200, replace=False))
    coords = coords[spots]
    labels = np.random.default_rng(1).integers(0, 7, len(coords))
    np.testing.assert_array_equal(refine_spatial(labels, coords, 50), brute_force(labels, coords, 50))


def test_refine_memory_is_linear_in_spots():
    """40 000 spots: an N x N float matrix would be 12.8 GB; the kd-tree version stays within O(N * radius)."""
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 400, size=(40_000, 2)).astype(float)
    labels = rng.integers(0, 7, 40_000)
    tracemalloc.start()
    refine_spatial(labels, coords, 8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# -- colours -----------------------------------------------------------------------------------------
def test_palette_has_distinct_colours_and_no_grey():
    colours = palette(60)
    assert len(set(colours)) == 60
    assert UNLABELLED_COLOUR not in colours
    for c in colours:
        r, g, b = (int(c[i:i + 2], 16) for i in (1, 3, 5))
        assert max(r, g, b) - min(r, g, b) >= 12, c


def test_annotation_order_is_natural():
    assert list(annotation_colours(["WM", "L10", "L2", "L1"])) == ["L1", "L2", "L10", "WM"]


def test_predicted_domains_take_the_colour_of_their_matched_layer():
    truth = np.array(["L1"] * 5 + ["L2"] * 5 + ["WM"] * 5 + [None] * 2, dtype=object)
    pred = np.array([4] * 5 + [0] * 4 + [2] + [1] * 5 + [3, 3])  # 4->L1, 0->L2, 1->WM; 2 and 3 unmatched
    truth_colours = annotation_colours(["L1", "L2", "WM"])
    colours, names = matched_colours(pred, truth, truth_colours)
    mapping = match_clusters(truth[:15], pred[:15])
    for d in (4, 0, 1):
        assert colours[d] == truth_colours[mapping[d]]
        assert names[d] == f"{d} → {mapping[d]}"
    for d in (2, 3):  # domains without a matched layer: colours no layer uses, never the unlabelled grey
        assert colours[d] not in truth_colours.values() and colours[d] != UNLABELLED_COLOUR
        assert names[d] == f"{d} (unmatched)"
    assert colours[2] != colours[3]
    assert list(names) == [4, 0, 1, 2, 3]  # legend: in the annotation's order, unmatched last


def test_without_annotation_every_domain_gets_its_own_colour():
    colours, names = matched_colours(np.array([2, 0, 1, 1]))
    assert list(names) == [0, 1, 2] and len(set(colours.values())) == 3


# -- the figure ---------------------------------------------------------------------------------------
def _drawn_colours(ax, coords) -> dict:
    """Spot (x, y) -> face colour, read back from the scatter collections of one panel."""
    out = {}
    for coll in ax.collections:
        for (x, y), face in zip(coll.get_offsets(), np.broadcast_to(coll.get_facecolors(), (len(coll.get_offsets()), 4))):
            out[(float(x), float(y))] = to_hex(face)
    assert len(out) == len(coords)
    return out


def test_domain_map_panels_colours_and_orientation():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    coords = np.column_stack([np.tile(np.arange(10), 6), np.repeat(np.arange(6), 10)]).astype(float) * 100
    truth = np.array(["L1"] * 20 + ["L2"] * 20 + ["WM"] * 20, dtype=object)
    truth[[3, 33]] = None
    refined = np.array([2] * 20 + [0] * 20 + [1] * 20)
    raw = refined.copy()
    raw[rng.choice(60, 10, replace=False)] = 3  # raw k-means: a fourth domain the refinement removed
    fig = draw_domain_map(coords, refined, pred_unrefined=raw, truth=truth, radius=6, title="t")
    try:
        axes = fig.axes
        assert [ax.get_title().split(" (ARI")[0] for ax in axes] == [
            "manual annotation", "predicted domains, refined (radius 6)", "predicted domains, unrefined (k-means)"]
        assert "(ARI 1.000)" in axes[1].get_title()
        for ax in axes:
            assert ax.yaxis_inverted() and not ax.xaxis_inverted()  # rows grow downwards, like the tissue image
            assert ax.get_aspect() == 1.0
        layer = annotation_colours(["L1", "L2", "WM"])
        drawn = [_drawn_colours(ax, coords) for ax in axes]
        for i, (x, y) in enumerate(map(tuple, coords)):
            assert drawn[0][(x, y)] == (layer[truth[i]] if truth[i] is not None else UNLABELLED_COLOUR)
            assert drawn[1][(x, y)] == layer[truth[i] if truth[i] is not None else ["L1", "L2", "WM"][i // 20]]
        raw_colours, _ = matched_colours(raw, truth, layer)
        for i, (x, y) in enumerate(map(tuple, coords)):
            assert drawn[2][(x, y)] == raw_colours[raw[i]]
    finally:
        plt.close(fig)


def test_domain_map_without_labels_or_refinement_has_one_panel(tmp_path):
    coords = np.random.default_rng(0).uniform(size=(30, 2))
    path = domain_map_figure(coords, np.arange(30) % 3, tmp_path / "maps" / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "maps").iterdir()] == ["m.png"]  # no temp file left behind
    fig = draw_domain_map(coords, np.arange(30) % 3)
    assert [ax.get_title() for ax in fig.axes] == ["predicted domains"]


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="spots"):
        draw_domain_map(np.zeros((5, 2)), np.zeros(4))


# -- the evaluator hook -------------------------------------------------------------------------------
class RecordingLogger:
    def __init__(self):
        self.images = []

    def log_image(self, key, images, step):
        self.images.append((key, images, step))


def _evaluator(tmp_path, with_coords=True, radius=4):
    from torch_geometric.data import Data

    from scrcl.train.callbacks import ClusteringEvaluator

    rng = np.random.default_rng(0)
    batch = Data(x=torch.zeros(40, 3), y=torch.from_numpy(np.r_[np.repeat(np.arange(4), 9), [-1] * 4]), num_nodes=40)
    if with_coords:
        batch.coords = torch.from_numpy(rng.uniform(size=(40, 2)).astype(np.float32))
    return ClusteringEvaluator(batch, 4, seed=0, every=1, run_dir=tmp_path, radius=radius, label_names=["L1", "L2", "L3", "WM"])


def _trainer(task="st"):
    return SimpleNamespace(loggers=[RecordingLogger()], global_step=7, datamodule=SimpleNamespace(task=task))


def test_evaluator_writes_and_logs_domain_maps(tmp_path):
    ev = _evaluator(tmp_path)
    trainer = _trainer()
    pred = np.arange(40) % 4
    result = {"pred": pred, "pred_unrefined": np.roll(pred, 1)}
    ev._domain_map(trainer, result, epoch=3, final=False)
    ev._domain_map(trainer, result, epoch=5, final=True)
    assert (tmp_path / "domains" / "epoch_0003.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "domains_final.png").read_bytes()[:4] == b"\x89PNG"
    logged = trainer.loggers[0].images
    # at global_step 7 Lightning logs the epoch's scores on step 6: each map goes beside them
    assert logged == [("domains", [str(tmp_path / "domains" / "epoch_0003.png")], 6),
                      ("domains_final", [str(tmp_path / "domains_final.png")], 6)]


@pytest.mark.parametrize("with_coords, task", [(False, "st"), (True, "sc")])
def test_no_domain_map_without_coordinates_or_for_a_cell_type_run(tmp_path, with_coords, task):
    ev = _evaluator(tmp_path, with_coords=with_coords)
    trainer = _trainer(task)
    ev._domain_map(trainer, {"pred": np.zeros(40, int), "pred_unrefined": np.zeros(40, int)}, epoch=5, final=True)
    assert not list(tmp_path.iterdir()) and not trainer.loggers[0].images
