"""Every real dataset of DATASETS.md §B goes through ScRCLDataModule with the generic preprocessing.

The expected numbers were measured by running the data module and agree with DATASETS.md §B and
data/SOURCES.md: the DLPFC labelled-spot counts are HumanPilot's per-slice counts (SOURCES.md §2.1),
the cell counts and class counts are those of the source files. Genes after HVG selection are
min(hvg, genes expressed in ≥ 1 kept cell); every §B file has at least that many expressed genes
except pbmc68k (765 genes, all kept) and DLPFC 151510 (a 500-gene subset, all kept).
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from datamodules.loading import LABEL, load_dataset
from datamodules.registry import get_spec

DLPFC_LAYERS = ["L1", "L2", "L3", "L4", "L5", "L6", "WM"]

# name -> (cells (spots) after filtering, genes after HVG selection, label classes, cells in the file)
EXPECTED = {
    "pbmc68k": (700, 765, 10, 700),
    "pbmc10x": (4271, 2000, 8, 4271),
    "mouse_bladder_han": (2746, 2000, 16, 2746),
    "baron_mouse1": (822, 2000, 13, 822),
    "baron_mouse2": (1064, 2000, 13, 1064),
    "pollen": (249, 2000, 11, 249),
    "dlpfc_151673": (3611, 3000, 7, 3639),
    "dlpfc_151674": (3635, 3000, 7, 3673),
    "dlpfc_151675": (3566, 3000, 7, 3592),
    "dlpfc_151510": (4595, 500, 7, 4634),
}
NAMES = list(EXPECTED)


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_classes(built, name):
    n_cells, n_genes, n_classes, n_in = EXPECTED[name]
    dm = built(name)
    spec = get_spec(name)
    assert (dm.n_cells, dm.n_genes) == (n_cells, n_genes)
    assert dm.n_clusters == n_classes == len(dm.label_names) == spec.n_classes
    info = dm.prepared.uns["preprocess"]
    assert (info["n_cells_in"], info["n_cells"], info["n_genes"]) == (n_in, n_cells, n_genes)
    assert dm.task == spec.task
    if spec.task == "st":
        assert dm.label_names == DLPFC_LAYERS  # Layer1..Layer6 in the file, one vocabulary here


@pytest.mark.parametrize("name", NAMES)
def test_batch_is_well_formed(built, name):
    dm = built(name)
    b = dm.batch
    n, h = dm.n_cells, dm.n_genes
    for key in ("x", "x_mlp", "x_gnn"):
        assert b[key].shape == (n, h) and b[key].dtype == torch.float32
        assert torch.isfinite(b[key]).all()
    assert b.cell_graph.layout == torch.sparse_csr and b.cell_graph.shape == (n, n)
    assert b.cell_filter.shape == (n, n) and b.gene_filter.shape == (h, h)
    assert b.y.dtype == torch.int64 and b.y.shape == (n,)
    assert int(b.y.min()) >= 0 and int(b.y.max()) == dm.n_clusters - 1  # every cell is labelled here
    assert len(torch.unique(b.y)) == dm.n_clusters
    if dm.task == "st":
        assert b.coords.shape == (n, 2) and torch.isfinite(b.coords).all()
    else:
        assert getattr(b, "coords", None) is None
    # the model sees exactly the preprocessed matrix
    np.testing.assert_array_equal(b.x.numpy(), dm.prepared.X)
    assert "tms=[0, 0]" in dm.summary() and f"{n} cells x {h} genes" in dm.summary()


@pytest.mark.parametrize("name", NAMES)
def test_gene_count_is_hvg_or_all_expressed_genes(built, data_dir, name):
    """Independent of the preprocessing code: count the expressed genes of the kept cells by hand."""
    dm = built(name)
    adata = load_dataset(name, data_dir, progress=False).adata
    if dm.task == "st":
        adata = adata[adata.obs[LABEL].notna().to_numpy()]
    x = sp.csr_matrix(adata.X)
    x = x[np.asarray((x != 0).sum(axis=1)).ravel() > 0]
    expressed = int((np.asarray((x != 0).sum(axis=0)).ravel() > 0).sum())
    hvg = dm.params["hvg"]
    assert dm.n_genes == min(hvg, expressed)
    assert x.shape[0] == dm.n_cells


@pytest.mark.parametrize("name", ["pbmc10x", "mouse_bladder_han", "baron_mouse1", "baron_mouse2"])
def test_xy_labels_match_the_file(built, data_dir, name):
    """Class sizes equal those of Y in the source HDF5, read here with h5py alone."""
    dm = built(name)
    with h5py.File(data_dir / get_spec(name).sources[0].files["data"].path, "r") as f:
        y = f["Y"][()]
    expected = pd.Series(y.astype(str)).value_counts().sort_index()
    got = pd.Series(np.asarray(dm.label_names)[dm.batch.y.numpy()]).value_counts().sort_index()
    pd.testing.assert_series_equal(got, expected, check_names=False)


@pytest.mark.parametrize("name", ["dlpfc_151673", "dlpfc_151674", "dlpfc_151675", "dlpfc_151510"])
def test_dlpfc_spots_and_layers_equal_humanpilot(built, data_dir, name):
    """The kept spots are exactly HumanPilot's labelled spots of the slice, each with HumanPilot's layer."""
    dm = built(name)
    sample = name.split("_")[1]
    table = pd.read_csv(
        data_dir / "spatial/DLPFC/HumanPilot/barcode_level_layer_map.tsv",
        sep="\t", header=None, names=["barcode", "sample", "layer"], dtype=str,
    )
    table = table[table["sample"] == sample].set_index("barcode")["layer"]
    assert sorted(dm.prepared.obs_names) == sorted(table.index)
    got = pd.Series(np.asarray(dm.label_names)[dm.batch.y.numpy()], index=dm.prepared.obs_names)
    assert (got == table.reindex(got.index)).all()


def test_pbmc68k_labels_are_scanpys(built):
    import scanpy as sc

    dm = built("pbmc68k")
    ref = sc.datasets.pbmc68k_reduced().obs["bulk_labels"].astype(str)
    got = np.asarray(dm.label_names)[dm.batch.y.numpy()]
    assert list(dm.prepared.obs_names) == list(ref.index)
    assert (got == ref.to_numpy()).all()
