"""Preprocessing (METHOD.md §1) checked against hand computations on real data."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from datamodules.datamodule import ScRCLDataModule
from datamodules.loading import LABEL, check_values, load_dataset
from datamodules.preprocess import is_integer_valued, preprocess
from scrcl.errors import UserError


def dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


# -- already-normalised input is detected and used as it is -----------------------------------------
def test_pollen_is_not_normalised_twice(built, data_dir):
    dm = built("pollen")
    info = dm.prepared.uns["preprocess"]
    assert info["already_normalised"] and info["input_requested"] == "counts" and info["input_used"] == "lognorm"
    original = ad.read_h5ad(data_dir / "derived/Pollen_SIMLR.h5ad")
    expected = dense(original[dm.prepared.obs_names, dm.prepared.var_names].X).astype(np.float32)
    np.testing.assert_array_equal(dm.batch.x.numpy(), expected)
    np.testing.assert_array_equal(dense(dm.prepared.layers["lognorm"]), expected)
    assert float(dm.batch.x.max()) == pytest.approx(float(original.X.max()), rel=1e-6)  # 5.52, not log1p(...)


def test_pbmc68k_uses_the_log_normalised_raw_values(built):
    import scanpy as sc

    dm = built("pbmc68k")
    info = dm.prepared.uns["preprocess"]
    assert info["already_normalised"] and info["input_used"] == "lognorm"
    raw = sc.datasets.pbmc68k_reduced().raw
    expected = dense(raw[:, list(dm.prepared.var_names)].X).astype(np.float32)
    np.testing.assert_array_equal(dm.batch.x.numpy(), expected)
    assert (dm.batch.x.numpy() >= 0).all()  # raw.X, never the z-scored X


# -- counts -----------------------------------------------------------------------------------------
def test_counts_input_is_the_raw_integer_counts_of_the_hvgs(built, data_dir):
    dm = built("pbmc10x")
    info = dm.prepared.uns["preprocess"]
    assert not info["already_normalised"] and info["input_used"] == "counts"
    x = dm.batch.x.numpy()
    assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() > 1
    with h5py.File(data_dir / "scrna/scDCC/10X_PBMC_top2000.h5", "r") as f:
        raw = f["X"][()]
    cols = [int(v.removeprefix("gene")) for v in dm.prepared.var_names]
    rows = [int(v.removeprefix("cell")) for v in dm.prepared.obs_names]
    np.testing.assert_array_equal(x, raw[np.ix_(rows, cols)])


def test_lognorm_equals_log1p_cp10k_by_hand(data_dir):
    """A real subset (300 Baron mouse cells, all 14878 genes): filter, CP10k on all kept genes, log1p, HVGs."""
    adata = load_dataset("baron_mouse1", data_dir, progress=False).adata[:300].copy()
    out = preprocess(adata, task="sc", input="lognorm", hvg=500)
    counts = dense(adata.X).astype(np.float64)
    counts = counts[counts.sum(axis=1) > 0]
    keep_genes = (counts > 0).sum(axis=0) > 0
    counts = counts[:, keep_genes]
    by_hand = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    genes = np.asarray(adata.var_names)[keep_genes]
    cols = pd.Index(genes).get_indexer(out.var_names)
    assert out.n_vars == 500 and (cols >= 0).all()
    np.testing.assert_allclose(out.X, by_hand[:, cols], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dense(out.layers["lognorm"]), by_hand[:, cols], rtol=1e-5, atol=1e-5)
    assert out.uns["preprocess"]["input_used"] == "lognorm"


def test_sc_hvgs_are_scanpys_top_dispersion_genes_on_log_data(data_dir):
    import scanpy as sc

    adata = load_dataset("baron_mouse1", data_dir, progress=False).adata
    out = preprocess(adata, task="sc", input="counts", hvg=1000)
    ref = adata.copy()
    sc.pp.filter_cells(ref, min_genes=1)
    sc.pp.filter_genes(ref, min_cells=1)
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=1000)
    assert set(out.var_names) == set(ref.var_names[ref.var["highly_variable"]])


# -- scaled (spatial) ---------------------------------------------------------------------------------
def test_scaled_is_unit_variance_without_centring_clipped_at_10(built):
    dm = built("dlpfc_151673")
    assert dm.prepared.uns["preprocess"]["input_used"] == "scaled"
    x = dm.batch.x.numpy()
    assert x.min() >= 0 and x.max() <= 10 and x.max() == pytest.approx(10)
    lognorm = dense(dm.prepared.layers["lognorm"]).astype(np.float64)
    by_hand = np.minimum(lognorm / lognorm.std(axis=0, ddof=1), 10)  # scanpy's scale: unbiased std
    np.testing.assert_allclose(x, by_hand, rtol=1e-4, atol=1e-5)


def test_spatial_hvgs_are_seurat_v3_on_the_counts(built, data_dir):
    import scanpy as sc

    dm = built("dlpfc_151673")
    ref = load_dataset("dlpfc_151673", data_dir, progress=False).adata
    ref = ref[ref.obs[LABEL].notna().to_numpy()].copy()
    sc.pp.filter_cells(ref, min_genes=1)
    sc.pp.filter_genes(ref, min_cells=1)
    sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=3000)
    assert set(dm.prepared.var_names) == set(ref.var_names[ref.var["highly_variable"]])


def test_unlabelled_spots_are_dropped_for_st_only(built, data_dir):
    dm = built("dlpfc_151673")
    raw = ad.read_h5ad(data_dir / "derived/DLPFC_151673.h5ad")
    unlabelled = set(raw.obs_names[raw.obs["layer_guess"].isna()])
    assert len(unlabelled) == 28
    assert unlabelled.isdisjoint(dm.prepared.obs_names)
    assert dm.n_cells == raw.n_obs - 28

    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, size=(30, 12)).astype(np.float32)
    labels = np.array(["a", "b", None] * 10, dtype=object)
    sc_out = preprocess(_with_labels(x, labels), task="sc", input="counts", hvg=100)
    assert sc_out.n_obs == 30 and sc_out.obs[LABEL].isna().sum() == 10  # kept, scored as "no label"
    st_in = _with_labels(x, labels)
    st_in.obsm["spatial"] = rng.normal(size=(30, 2))
    st_out = preprocess(st_in, task="st", input="scaled", hvg=100, drop_unlabelled=True)
    assert st_out.n_obs == 20 and st_out.obs[LABEL].notna().all() and st_out.obsm["spatial"].shape == (20, 2)


def _with_labels(x, labels):
    a = ad.AnnData(x.copy())
    a.obs_names = [f"c{i}" for i in range(x.shape[0])]
    a.var_names = [f"g{j}" for j in range(x.shape[1])]
    a.obs[LABEL] = pd.Categorical(labels)
    return a


# -- small synthetic cases --------------------------------------------------------------------------
def test_empty_cells_and_genes_are_removed_and_hvg_is_capped():
    rng = np.random.default_rng(1)
    x = rng.poisson(3.0, size=(25, 10)).astype(np.float32)
    x[4] = 0  # an empty cell
    x[:, 7] = 0  # an unexpressed gene
    out = preprocess(_with_labels(x, ["a"] * 25), task="sc", input="counts", hvg=2000)
    assert out.shape == (24, 9)
    assert "c4" not in out.obs_names and "g7" not in out.var_names
    assert out.uns["preprocess"]["hvg"] == 9
    assert out.X.dtype == np.float32 and out.X.flags.c_contiguous


def test_integer_detection():
    assert is_integer_valued(np.array([[0.0, 3.0], [2.0, 1.0]], dtype=np.float32))
    assert is_integer_valued(sp.csr_matrix(np.array([[0.0, 3.0]])))
    assert not is_integer_valued(np.array([[0.0, 0.5]]))
    assert not is_integer_valued(sp.csr_matrix(np.array([[0.0, 2.0001]])))


def test_one_non_integer_value_makes_the_whole_matrix_normalised():
    x = np.random.default_rng(2).poisson(2.0, size=(20, 8)).astype(np.float32)
    x[0, 0] = 1.5
    out = preprocess(_with_labels(x, ["a"] * 20), task="sc", input="counts", hvg=100)
    assert out.uns["preprocess"]["already_normalised"]
    np.testing.assert_array_equal(out.X, x[:, [int(g[1:]) for g in out.var_names]])  # values as given


@pytest.mark.parametrize(
    "value, match",
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-1.0, "negative values")],
)
def test_bad_values_are_user_errors(value, match):
    x = np.ones((5, 4), dtype=np.float32)
    x[1, 2] = value
    with pytest.raises(UserError, match=match):
        check_values(ad.AnnData(x))
    with pytest.raises(UserError, match=match):
        check_values(ad.AnnData(sp.csr_matrix(x)))


def test_bad_arguments_are_user_errors():
    a = _with_labels(np.ones((5, 4), dtype=np.float32), ["a"] * 5)
    with pytest.raises(UserError, match="input must be one of"):
        preprocess(a, task="sc", input="raw", hvg=10)
    with pytest.raises(UserError, match="task must be"):
        preprocess(a, task="spatial", input="counts", hvg=10)
    with pytest.raises(UserError, match="no coordinates"):
        preprocess(a, task="st", input="counts", hvg=10)
    a.obsm["spatial"] = np.full((5, 2), np.nan)
    with pytest.raises(UserError, match="finite"):
        preprocess(a, task="st", input="counts", hvg=10)


def test_the_callers_anndata_is_not_modified():
    x = np.random.default_rng(3).poisson(2.0, size=(30, 10)).astype(np.float32)
    a = _with_labels(x, ["a", "b", "c"] * 10)
    a.obs["cell_type"] = a.obs[LABEL].astype(str)
    del a.obs[LABEL]
    before = a.copy()
    dm = ScRCLDataModule(adata=a, label_key="cell_type", hvg=5, k=3, progress=False)
    dm.setup()
    assert dm.n_genes == 5 and dm.n_clusters == 3
    np.testing.assert_array_equal(a.X, before.X)
    assert list(a.obs.columns) == ["cell_type"] and a.n_vars == 10


def test_exactly_h_genes_even_when_scanpy_ties_at_the_cut_off():
    """On few genes scanpy sets single-gene bins' normalised dispersion to 1 and keeps every tie."""
    x = np.random.default_rng(3).poisson(2.0, size=(30, 10)).astype(np.float32)
    for task in ("sc", "st"):
        a = _with_labels(x, ["a"] * 30)
        a.obsm["spatial"] = np.random.default_rng(4).normal(size=(30, 2))
        out = preprocess(a, task=task, input="lognorm", hvg=5)
        assert out.n_vars == 5 == out.uns["preprocess"]["hvg"]
