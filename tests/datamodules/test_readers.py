"""Readers of the layouts users hold: tiny synthetic files written here, plus the registry's full
Visium layout rebuilt from real DLPFC data (counts written as a real 10x h5, HumanPilot positions and
labels as they are in the data directory)."""

from __future__ import annotations

import shutil

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from datamodules.loading import LABEL, load_dataset, load_file
from datamodules.readers import read_cellblast_h5, read_visium, read_xy_h5, sniff_reader, unify_label_vocabulary
from scrcl.errors import UserError

STR = h5py.string_dtype()


def dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


# -- writers of the file layouts -----------------------------------------------------------------------
def write_cellblast(path, x, labels, obs_names, var_names, *, sparse=True):
    """Cell BLAST data.h5: exprs (CSR group or dense), obs/<column>, obs_names, var_names."""
    with h5py.File(path, "w") as f:
        if sparse:
            m = sp.csr_matrix(x)
            g = f.create_group("exprs")
            g["data"], g["indices"], g["indptr"] = m.data, m.indices, m.indptr
            g["shape"] = np.array(m.shape)
        else:
            f["exprs"] = x
        obs = f.create_group("obs")
        obs.create_dataset("cell_type1", data=np.array(labels, dtype=object), dtype=STR)
        obs.create_dataset("n_genes", data=(np.asarray(x) > 0).sum(axis=1))
        f.create_dataset("obs_names", data=np.array(obs_names, dtype="S"))  # bytes, as older files have
        f.create_dataset("var_names", data=np.array(var_names, dtype=object), dtype=STR)
        f.create_group("var")
        f.create_group("uns")


def write_10x_h5(path, x, barcodes, gene_ids, gene_names):
    """A Space Ranger v3 feature-barcode matrix: /matrix holds genes x cells as CSC (= cells x genes CSR)."""
    m = sp.csr_matrix(np.asarray(x) if not sp.issparse(x) else x).astype(np.int32)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=m.data)
        g.create_dataset("indices", data=m.indices.astype(np.int64))
        g.create_dataset("indptr", data=m.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([m.shape[1], m.shape[0]], dtype=np.int32))
        feats = g.create_group("features")
        feats.create_dataset("id", data=np.array(gene_ids, dtype="S"))
        feats.create_dataset("name", data=np.array(gene_names, dtype="S"))
        feats.create_dataset("feature_type", data=np.array(["Gene Expression"] * m.shape[1], dtype="S"))
        feats.create_dataset("genome", data=np.array(["GRCh38"] * m.shape[1], dtype="S"))
        feats.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))


def write_positions(path, barcodes, rows, cols, *, header=False):
    table = pd.DataFrame(
        {"barcode": barcodes, "in_tissue": 1, "array_row": rows, "array_col": cols,
         "pxl_row_in_fullres": 100 * np.asarray(rows) + 7, "pxl_col_in_fullres": 50 * np.asarray(cols) + 3}
    )
    table.to_csv(path, header=header, index=False)


# -- Cell BLAST ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [True, False])
def test_cellblast_h5(tmp_path, sparse):
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, size=(8, 5)).astype(np.float32)
    labels = ["B cell", "T cell"] * 4
    cells = [f"AAAC-{i}" for i in range(8)]
    genes = ["Cd3e", "Cd19", "Actb", "Actb", "Ptprc"]  # a duplicated symbol, as real files have
    path = tmp_path / "data.h5"
    write_cellblast(path, x, labels, cells, genes, sparse=sparse)
    assert sniff_reader(path) == "cellblast_h5"
    a = read_cellblast_h5(path)
    np.testing.assert_array_equal(dense(a.X), x)
    assert list(a.obs_names) == cells
    assert list(a.var_names) == ["Cd3e", "Cd19", "Actb", "Actb-1", "Ptprc"]
    assert list(a.obs["cell_type1"]) == labels
    assert list(a.obs["n_genes"]) == list((x > 0).sum(axis=1))
    loaded = load_file(path, label_key="cell_type1")
    assert loaded.task == "sc" and loaded.provenance["reader"] == "cellblast_h5"
    assert list(loaded.adata.obs[LABEL]) == labels


def test_cellblast_h5_in_a_paper_dataset_slot(tmp_path):
    """A user who places Cell BLAST's data.h5 where the registry expects it gets the 'cell_type1' labels."""
    rng = np.random.default_rng(1)
    x = rng.poisson(1.0, size=(12, 6)).astype(np.float32)
    labels = ["a", "b", "c"] * 4
    (tmp_path / "scrna/Quake_Smart-seq2_Trachea").mkdir(parents=True)
    write_cellblast(tmp_path / "scrna/Quake_Smart-seq2_Trachea/data.h5", x, labels, [f"c{i}" for i in range(12)], list("abcdef"))
    loaded = load_dataset("trachea", tmp_path, progress=False)
    assert loaded.provenance["reader"] == "cellblast_h5"
    assert list(loaded.adata.obs[LABEL]) == labels


def test_xy_h5(tmp_path):
    x = np.arange(12, dtype=np.int32).reshape(4, 3)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["X"], f["Y"] = x, np.array([0, 1, 1, 2])
    assert sniff_reader(tmp_path / "d.h5") == "xy_h5"
    a = read_xy_h5(tmp_path / "d.h5")
    assert a.X.dtype == np.float32
    np.testing.assert_array_equal(a.X, x)
    assert list(a.obs["Y"]) == ["0", "1", "1", "2"] and a.var_names[0] == "gene0"


# -- Visium ------------------------------------------------------------------------------------------------
def tiny_visium(folder, *, header=False, positions_name="tissue_positions_list.csv"):
    rng = np.random.default_rng(2)
    barcodes = [f"{s}-1" for s in ("AAAC", "AAAG", "AACT", "AAGT", "ACGT", "AGGT")]
    x = rng.poisson(2.0, size=(6, 4))
    (folder / "spatial").mkdir(parents=True)
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", x, barcodes, [f"ENSG{i}" for i in range(4)], ["A", "B", "B", "C"])
    # positions: more barcodes than the matrix (off-tissue spots), in another order
    all_barcodes = barcodes[::-1] + ["TTTT-1", "GGGG-1"]
    write_positions(folder / "spatial" / positions_name, all_barcodes, list(range(8)), [2 * i for i in range(8)], header=header)
    meta = pd.DataFrame({"layer_guess": ["Layer1", "Layer2", None, "WM", "Layer6", "Layer1"], "other": range(6)}, index=barcodes)
    meta.to_csv(folder / "metadata.tsv", sep="\t")
    return x, barcodes, all_barcodes


@pytest.mark.parametrize("header, name", [(False, "tissue_positions_list.csv"), (True, "tissue_positions.csv")])
def test_visium_folder(tmp_path, header, name):
    folder = tmp_path / "section"
    x, barcodes, all_barcodes = tiny_visium(folder, header=header, positions_name=name)
    assert sniff_reader(folder) == "visium"
    a = read_visium(folder)
    assert list(a.obs_names) == barcodes
    np.testing.assert_array_equal(dense(a.X), x)
    assert list(a.var_names) == ["A", "B", "B-1", "C"] and list(a.var["gene_ids"]) == [f"ENSG{i}" for i in range(4)]
    # obsm['spatial'] = (pxl_col, pxl_row) of each barcode, whatever the order of the positions file
    pos = {b: i for i, b in enumerate(all_barcodes)}
    expected = np.array([[50 * 2 * pos[b] + 3, 100 * pos[b] + 7] for b in barcodes], dtype=float)
    np.testing.assert_array_equal(a.obsm["spatial"], expected)
    assert list(a.obs["array_row"]) == [pos[b] for b in barcodes]

    loaded = load_file(folder, label_key="layer_guess")
    assert loaded.task == "st"
    labels = loaded.adata.obs[LABEL]
    assert list(labels.astype(object).where(labels.notna(), None)) == ["L1", "L2", None, "WM", "L6", "L1"]


def test_visium_folder_without_positions_is_a_user_error(tmp_path):
    folder = tmp_path / "section"
    tiny_visium(folder)
    (folder / "spatial/tissue_positions_list.csv").unlink()
    with pytest.raises(UserError, match="spot coordinates"):
        read_visium(folder)


def test_visium_positions_of_another_section_are_a_user_error(tmp_path):
    folder = tmp_path / "section"
    tiny_visium(folder)
    write_positions(folder / "spatial/tissue_positions_list.csv", ["XXXX-1"], [0], [0])
    with pytest.raises(UserError, match="lacks positions"):
        read_visium(folder)


def _positions_text(folder) -> str:
    return (folder / "spatial/tissue_positions_list.csv").read_text()


@pytest.mark.parametrize("edit, message", [
    (lambda text: "", "is empty"),
    (lambda text: "\n".join(",".join(line.split(",")[:4]) for line in text.splitlines()), "of 4 column(s)"),
    (lambda text: text.replace(",", "\t"), "of 1 column(s)"),
    (lambda text: text.replace(",3\n", ",abc\n", 1), "column pxl_col holds 'abc', not a number"),
    (lambda text: b"\x00\xff" * 10, "cannot read"),
])
def test_a_malformed_positions_file_is_one_line_naming_it(tmp_path, edit, message):
    folder = tmp_path / "section"
    tiny_visium(folder)
    positions = folder / "spatial/tissue_positions_list.csv"
    content = edit(_positions_text(folder))
    positions.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match="comma-separated barcode, in_tissue, array_row, array_col, pxl_row") as caught:
        read_visium(folder)
    assert message in str(caught.value) and str(positions) in str(caught.value)


def test_positions_saved_by_a_spreadsheet_are_read(tmp_path):
    """A byte-order mark (Excel's UTF-8), a blank first line, Windows line ends: the same positions."""
    folder = tmp_path / "section"
    tiny_visium(folder, header=True, positions_name="tissue_positions.csv")
    expected = read_visium(folder).obsm["spatial"]
    positions = folder / "spatial/tissue_positions.csv"
    positions.write_bytes(b"\xef\xbb\xbf\r\n" + positions.read_bytes().replace(b"\n", b"\r\n"))
    np.testing.assert_array_equal(read_visium(folder).obsm["spatial"], expected)


@pytest.mark.parametrize("raw", [False, True])
def test_a_visium_folder_without_its_filtered_counts_says_so(tmp_path, raw):
    folder = tmp_path / "section"
    tiny_visium(folder)
    counts = folder / "filtered_feature_bc_matrix.h5"
    if raw:
        counts.rename(folder / "raw_feature_bc_matrix.h5")
    else:
        counts.unlink()
    with pytest.raises(UserError, match=r"has no filtered_feature_bc_matrix.h5") as caught:
        read_visium(folder)
    assert ("raw_feature_bc_matrix.h5 holds every barcode" in str(caught.value)) == raw


def test_a_space_ranger_run_folder_points_to_outs_and_parquet_positions_are_named(tmp_path):
    tiny_visium(tmp_path / "run" / "outs")
    with pytest.raises(UserError, match="Space Ranger writes them in .*outs, pass that"):
        read_visium(tmp_path / "run")
    folder = tmp_path / "run" / "outs"
    (folder / "spatial/tissue_positions_list.csv").rename(folder / "spatial/tissue_positions.parquet")
    with pytest.raises(UserError, match="Space Ranger 3's tissue_positions.parquet"):
        read_visium(folder)


@pytest.mark.parametrize("sep, name", [("\t", "metadata.tsv"), (",", "metadata.tsv")])
def test_labels_whose_barcodes_match_none_of_the_section_are_one_line(tmp_path, sep, name):
    folder = tmp_path / "section"
    _, barcodes, _ = tiny_visium(folder)
    stripped = [b.removesuffix("-1") for b in barcodes] if sep == "\t" else barcodes  # "," : the whole line is one column
    pd.DataFrame({"layer_guess": ["L1"] * 6}, index=stripped).to_csv(folder / name, sep=sep)
    with pytest.raises(UserError, match="no barcode of .*metadata.tsv is one of the section's .*first column must hold"):
        read_visium(folder)


def test_registry_visium_layout_on_real_dlpfc_151673(tmp_path, data_dir):
    """The full-download source of dlpfc_151673 (10x h5 + HumanPilot positions + HumanPilot layer map),
    rebuilt from the real counts, gives the same spots, coordinates and layers as the local h5ad."""
    local = ad.read_h5ad(data_dir / "derived/DLPFC_151673.h5ad")
    sample_dir = tmp_path / "spatial/DLPFC/151673"
    sample_dir.mkdir(parents=True)
    write_10x_h5(sample_dir / "151673_filtered_feature_bc_matrix.h5", local.X, local.obs_names, local.var_names, local.var_names)
    pilot = tmp_path / "spatial/DLPFC/HumanPilot"
    (pilot / "10X/151673").mkdir(parents=True)
    shutil.copy(data_dir / "spatial/DLPFC/HumanPilot/10X/151673/tissue_positions_list.txt", pilot / "10X/151673/")
    shutil.copy(data_dir / "spatial/DLPFC/HumanPilot/barcode_level_layer_map.tsv", pilot)

    loaded = load_dataset("dlpfc_151673", tmp_path, progress=False)
    assert loaded.provenance["reader"] == "visium" and loaded.task == "st"
    a = loaded.adata
    assert list(a.obs_names) == list(local.obs_names)
    np.testing.assert_array_equal(dense(a.X), dense(local.X))
    np.testing.assert_array_equal(a.obsm["spatial"], local.obsm["spatial"])
    ours = a.obs[LABEL].astype(object)
    theirs = unify_label_vocabulary(local.obs["layer_guess"].astype(object))
    assert (ours.isna() == theirs.isna()).all() and int(ours.notna().sum()) == 3611
    assert (ours[ours.notna()] == theirs[theirs.notna()]).all()


# -- labels and sniffing -------------------------------------------------------------------------------------
def test_label_vocabulary_is_unified():
    values = pd.Series(["Layer1", "layer_2", "Layer 3", "L4", "LAYER5", "WM", None, np.nan, "Layer10", "Layer", "Tumor_edge_1"])
    out = unify_label_vocabulary(values)
    assert list(out[:6]) == ["L1", "L2", "L3", "L4", "L5", "WM"]
    assert out[6] is None and pd.isna(out[7])
    assert list(out[8:]) == ["L10", "Layer", "Tumor_edge_1"]


def test_labels_missing_values_and_numbers(tmp_path):
    a = ad.AnnData(np.ones((5, 3), dtype=np.float32))
    a.obs["t"] = [1, 2, np.nan, 2, 1]
    a.obs["s"] = ["x", "", "nan", "NA", "y"]
    a.write_h5ad(tmp_path / "a.h5ad")
    assert list(load_file(tmp_path / "a.h5ad", label_key="t").adata.obs[LABEL].astype(object).fillna("-")) == ["1.0", "2.0", "-", "2.0", "1.0"]
    assert list(load_file(tmp_path / "a.h5ad", label_key="s").adata.obs[LABEL].astype(object).fillna("-")) == ["x", "-", "-", "-", "y"]


def test_h5ad_with_duplicate_names_is_made_unique(tmp_path):
    a = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    a.obs_names = ["c", "c", "d"]
    a.var_names = ["g", "g"]
    a.write_h5ad(tmp_path / "dup.h5ad")
    b = load_file(tmp_path / "dup.h5ad").adata
    assert b.obs_names.is_unique and b.var_names.is_unique


def test_sniffing_unsupported_layouts(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="unsupported file type '.csv'"):
        sniff_reader(tmp_path / "t.csv")
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.create_group("matrix")
    with pytest.raises(UserError, match="without positions"):
        sniff_reader(tmp_path / "m.h5")
    with h5py.File(tmp_path / "o.h5", "w") as f:
        f["other"] = np.zeros(2)
    with pytest.raises(UserError, match="unknown HDF5 layout"):
        sniff_reader(tmp_path / "o.h5")
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n" + b"\0" * 10)
    with pytest.raises(UserError, match="cannot read"):
        sniff_reader(tmp_path / "bad.h5")
    with pytest.raises(UserError, match="does not exist"):
        load_file(tmp_path / "nothing.h5ad")


def test_malformed_cellblast_and_xy_files_are_user_errors(tmp_path):
    with h5py.File(tmp_path / "cb.h5", "w") as f:
        f["exprs"] = np.ones((3, 2), dtype=np.float32)
        f.create_group("obs").create_group("cell_type1")  # a group where a column is expected
    with pytest.raises(UserError, match="not a valid Cell BLAST data.h5"):
        read_cellblast_h5(tmp_path / "cb.h5")
    with h5py.File(tmp_path / "cb2.h5", "w") as f:
        f["exprs"] = np.ones((3, 2), dtype=np.float32)
        f["obs_names"] = np.array([b"a", b"b"])  # 2 names for 3 cells
    with pytest.raises(UserError, match="not a valid Cell BLAST data.h5"):
        read_cellblast_h5(tmp_path / "cb2.h5")
    with h5py.File(tmp_path / "xy.h5", "w") as f:
        f["X"], f["Y"] = np.ones((3, 2)), np.arange(2)
    with pytest.raises(UserError, match="Y has 2 labels but X has 3 cells"):
        read_xy_h5(tmp_path / "xy.h5")
    with h5py.File(tmp_path / "xy3.h5", "w") as f:
        f["X"] = np.ones((3, 2, 2))
    with pytest.raises(UserError, match="not a valid X/Y HDF5"):
        read_xy_h5(tmp_path / "xy3.h5")
