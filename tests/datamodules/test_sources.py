"""A paper dataset found in any of the layouts its registry entry accepts (files placed by the user)."""

import shutil


from datamodules.loading import LABEL, load_dataset


def test_xy_layout_of_a_paper_dataset_reads_its_labels_from_Y(tmp_path, data_dir):
    # Stand in for the scMAE Zenodo download of Quake_Smart-seq2_Lung: the same X/Y HDF5 layout.
    (tmp_path / "scrna").mkdir()
    shutil.copy(data_dir / "scrna/scDCC/10X_PBMC_top2000.h5", tmp_path / "scrna/Quake_Smart-seq2_Lung.h5")
    loaded = load_dataset("lung", tmp_path, progress=False)
    assert loaded.provenance["reader"] == "xy_h5"
    assert loaded.adata.obs[LABEL].nunique() == 8


def test_local_source_is_preferred_and_recorded(data_dir):
    loaded = load_dataset("dlpfc_151673", data_dir, progress=False)
    assert loaded.provenance["reader"] == "h5ad"
    assert loaded.provenance["files"]["data"].endswith("derived/DLPFC_151673.h5ad")
    assert "5000-gene subset" in loaded.provenance["source_note"]
    labels = loaded.adata.obs[LABEL]
    assert sorted(labels.dropna().unique()) == ["L1", "L2", "L3", "L4", "L5", "L6", "WM"]  # one vocabulary
