"""Readers for the file layouts real users hold. Each returns an AnnData (cells × genes).

- ``h5ad``: AnnData as written by anndata/scanpy (Cell BLAST, MOSTA, the derived DLPFC files).
- ``xy_h5``: HDF5 with datasets ``X`` (cells × genes) and ``Y`` (labels), as scDCC/scMAE ship them.
- ``cellblast_h5``: Cell BLAST ``data.h5``: ``exprs`` (dense or CSR group), ``obs``/``var`` groups,
  ``obs_names``/``var_names``.
- ``visium``: 10x ``filtered_feature_bc_matrix.h5`` + ``tissue_positions_list`` (+ a label table).
- ``pbmc68k``: scanpy's bundled PBMC subset (``raw.X`` is log-normalised; ``X`` is z-scored).

Readers raise :class:`UserError` for a corrupt or unsupported file; nothing here preprocesses.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scrcl.errors import UserError


def _h5py():
    import h5py

    return h5py


def read_h5ad(path: Path, **_) -> "AnnData":
    import anndata as ad

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*names are not unique.*")
            adata = ad.read_h5ad(path)
    except Exception as err:  # anndata raises many types for a bad file
        raise UserError(f"cannot read {path} as .h5ad ({type(err).__name__}: {_first_line(err)}); is the file complete?")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*names are not unique.*")
        if not adata.obs_names.is_unique:
            adata.obs_names_make_unique()
        if not adata.var_names.is_unique:
            adata.var_names_make_unique()
    return adata


def _decode(values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "SO":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr.ravel()]).reshape(arr.shape)
    return arr


def _read_matrix(node):
    """A dense dataset, or a CSR group with data/indices/indptr/shape."""
    h5py = _h5py()
    if isinstance(node, h5py.Dataset):
        return np.asarray(node[()])
    keys = set(node.keys())
    if {"data", "indices", "indptr"} <= keys:
        shape = tuple(node["shape"][()]) if "shape" in keys else tuple(node.attrs["shape"])
        return sp.csr_matrix((node["data"][()], node["indices"][()], node["indptr"][()]), shape=shape)
    raise UserError(f"unsupported matrix layout in HDF5 group '{node.name}' (keys: {sorted(keys)})")


def _read_hdf5_layout(path: Path, read, layout: str, expected: str) -> "AnnData":
    """Run an HDF5 reader; a truncated file or an unexpected layout becomes one clear line."""
    try:
        return read(path)
    except OSError as err:
        raise UserError(f"cannot read {path} as HDF5 ({_first_line(err)}); is the file complete?")
    except (KeyError, TypeError, ValueError, IndexError) as err:  # h5py/anndata on an unexpected layout
        raise UserError(f"{path}: not a valid {layout} ({type(err).__name__}: {_first_line(err)}); expected {expected}")


def read_xy_h5(path: Path, **_) -> "AnnData":
    return _read_hdf5_layout(path, _read_xy_h5, "X/Y HDF5 file", "X (cells x genes) and Y (labels)")


def _read_xy_h5(path: Path) -> "AnnData":
    import anndata as ad

    h5py = _h5py()
    with h5py.File(path, "r") as f:
        if "X" not in f:
            raise UserError(f"{path} has no dataset 'X' (keys: {sorted(f.keys())}); expected the X/Y HDF5 layout")
        x = _read_matrix(f["X"])
        y = _decode(f["Y"][()]) if "Y" in f else None
    adata = ad.AnnData(x.astype(np.float32))
    adata.obs_names = [f"cell{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"gene{j}" for j in range(adata.n_vars)]
    if y is not None:
        if len(y) != adata.n_obs:
            raise UserError(f"{path}: Y has {len(y)} labels but X has {adata.n_obs} cells")
        adata.obs["Y"] = pd.Categorical(y.astype(str))
    return adata


def read_cellblast_h5(path: Path, **_) -> "AnnData":
    return _read_hdf5_layout(
        path, _read_cellblast_h5, "Cell BLAST data.h5", "exprs (cells x genes), obs/<column> datasets, obs_names and var_names"
    )


def _read_cellblast_h5(path: Path) -> "AnnData":
    import anndata as ad

    h5py = _h5py()
    with h5py.File(path, "r") as f:
        if "exprs" not in f:
            raise UserError(f"{path} has no 'exprs' (keys: {sorted(f.keys())}); expected Cell BLAST data.h5")
        x = _read_matrix(f["exprs"])
        obs = pd.DataFrame({k: _decode(f["obs"][k][()]) for k in f["obs"].keys()}) if "obs" in f else None
        obs_names = _decode(f["obs_names"][()]) if "obs_names" in f else None
        var_names = _decode(f["var_names"][()]) if "var_names" in f else None
    adata = ad.AnnData(x.astype(np.float32))
    if obs is not None:
        obs.index = adata.obs_names
        adata.obs = obs
    if obs_names is not None:
        adata.obs_names = obs_names.astype(str)
    if var_names is not None:
        with warnings.catch_warnings():  # duplicated symbols are common; made unique right here
            warnings.filterwarnings("ignore", message=".*names are not unique.*")
            adata.var_names = var_names.astype(str)
            adata.var_names_make_unique()
    return adata


POSITION_COLUMNS = ("barcode", "in_tissue", "array_row", "array_col", "pxl_row", "pxl_col")


def _read_positions(path: Path) -> pd.DataFrame:
    """10x positions: with or without a header; indexed by barcode; pixel columns as floats. Anything else (empty,
    too few columns, another separator, text where a number belongs) is a UserError naming the file."""
    expected = ("expected Space Ranger's comma-separated barcode, in_tissue, array_row, array_col, pxl_row(_in_fullres), "
                "pxl_col(_in_fullres)")
    try:
        text = path.read_text(encoding="utf-8-sig")
        first = next((line for line in text.splitlines() if line.strip()), "")
        if not first:
            raise UserError(f"{path} is empty; {expected}")
        table = pd.read_csv(io.StringIO(text), header=0 if first.lower().startswith("barcode") else None)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"cannot read {path} as a positions table ({_first_line(err)}); {expected}")
    if table.shape[1] < len(POSITION_COLUMNS) or table.empty:
        raise UserError(f"{path} has {len(table)} rows of {table.shape[1]} column(s); {expected}")
    table = table.iloc[:, : len(POSITION_COLUMNS)]
    table.columns = list(POSITION_COLUMNS)
    for col in POSITION_COLUMNS[1:]:
        numbers = pd.to_numeric(table[col], errors="coerce")
        if numbers.isna().any():
            bad = table[col][numbers.isna()].iloc[0]
            raise UserError(f"{path}: column {col} holds {bad!r}, not a number; {expected}")
        table[col] = numbers
    return table.set_index("barcode")


def _read_label_table(path: Path, label_format: str, sample: str | None) -> pd.DataFrame:
    if label_format == "humanpilot":  # no header: barcode, sample id, layer; labelled spots only
        table = pd.read_csv(path, sep="\t", header=None, names=["barcode", "sample", "layer_guess"], dtype=str)
        table = table[table["sample"] == str(sample)]
        return table.set_index("barcode")[["layer_guess"]]
    sep = "\t" if path.suffix in (".tsv", ".txt") else ","
    return pd.read_csv(path, sep=sep, index_col=0)


def read_visium(
    path: Path | None = None,
    *,
    counts: Path | None = None,
    positions: Path | None = None,
    labels: Path | None = None,
    label_format: str = "table",
    sample: str | None = None,
    **_,
) -> "AnnData":
    """A 10x Visium section: counts h5 + spot positions (+ optional label table joined by barcode).

    ``path`` may be a Space Ranger output folder (``filtered_feature_bc_matrix.h5`` and
    ``spatial/tissue_positions_list.csv`` or ``tissue_positions.csv``).
    """
    import scanpy as sc

    if path is not None:
        path = Path(path)
        counts = counts or path / "filtered_feature_bc_matrix.h5"
        if positions is None:
            candidates = [path / "spatial" / n for n in ("tissue_positions_list.csv", "tissue_positions.csv", "tissue_positions_list.txt")]
            positions = next((c for c in candidates if c.exists()), None)
            if positions is None and not (path / "spatial").is_dir() and not Path(counts).exists():
                hint = f"; Space Ranger writes them in {path / 'outs'}, pass that" if (path / "outs").is_dir() else ""
                raise UserError(f"{path} is a folder but not a Space Ranger output (no filtered_feature_bc_matrix.h5, no "
                                f"spatial/){hint or '; --data takes an .h5ad, an .h5 or a Visium folder'}")
            if positions is None and (path / "spatial" / "tissue_positions.parquet").exists():
                raise UserError(f"{path}/spatial has Space Ranger 3's tissue_positions.parquet, which this reader does not "
                                "read; write it as tissue_positions.csv next to it (pandas: read_parquet, then to_csv)")
            if positions is None:
                raise UserError(f"{path}/spatial has no tissue_positions_list.csv or tissue_positions.csv; spatial data needs spot coordinates")
            if not Path(counts).exists():
                raw = " (raw_feature_bc_matrix.h5 holds every barcode, off-tissue spots too; the filtered one is needed)" \
                    if (path / "raw_feature_bc_matrix.h5").exists() else ""
                raise UserError(f"{path} has no filtered_feature_bc_matrix.h5{raw}; a Visium folder needs Space Ranger's "
                                "filtered counts beside spatial/")
        if labels is None and (path / "metadata.tsv").exists():
            labels = path / "metadata.tsv"
    try:
        with warnings.catch_warnings():  # 10x files repeat some gene symbols; made unique just below
            warnings.filterwarnings("ignore", message=".*names are not unique.*")
            adata = sc.read_10x_h5(counts)
    except Exception as err:
        raise UserError(f"cannot read {counts} as a 10x feature-barcode h5 ({_first_line(err)}); is the file complete?")
    adata.var_names_make_unique()
    pos = _read_positions(Path(positions))
    missing = adata.obs_names.difference(pos.index)
    if len(missing):
        raise UserError(f"{positions} lacks positions for {len(missing)} of {adata.n_obs} barcodes (e.g. {missing[0]}); is it the same section?")
    pos = pos.loc[adata.obs_names]
    for col in ("in_tissue", "array_row", "array_col"):
        adata.obs[col] = pos[col].to_numpy()
    adata.obsm["spatial"] = pos[["pxl_col", "pxl_row"]].to_numpy(dtype=np.float64)  # scanpy's (x, y)
    if labels is not None:
        table = _read_label_table(Path(labels), label_format, sample)
        if not table.index.isin(adata.obs_names).any():
            raise UserError(f"no barcode of {labels} is one of the section's (e.g. {str(table.index[0])[:40]!r} vs "
                            f"{adata.obs_names[0]!r}); its first column must hold the barcodes of "
                            f"{Path(counts).name}, {'tab' if Path(labels).suffix in ('.tsv', '.txt') else 'comma'}-separated"
                            if len(table) else f"{labels} has no rows")
        table = table.reindex(adata.obs_names)
        for col in table.columns:
            adata.obs[str(col)] = table[col].to_numpy()
    return adata


def read_pbmc68k(path: Path | None = None, **_) -> "AnnData":
    """scanpy's PBMC 68k subset. Its ``X`` is z-scored, so we model ``raw.X`` (log-normalised)."""
    import anndata as ad
    import scanpy as sc

    bundled = read_h5ad(path) if path is not None else sc.datasets.pbmc68k_reduced()
    adata = ad.AnnData(np.asarray(bundled.raw.X.toarray() if sp.issparse(bundled.raw.X) else bundled.raw.X, dtype=np.float32))
    adata.obs_names = bundled.obs_names
    adata.var_names = bundled.raw.var_names
    adata.obs["bulk_labels"] = bundled.obs["bulk_labels"].to_numpy()
    return adata


READERS = {
    "h5ad": read_h5ad,
    "xy_h5": read_xy_h5,
    "cellblast_h5": read_cellblast_h5,
    "visium": read_visium,
    "pbmc68k": read_pbmc68k,
}


def sniff_reader(path: Path) -> str:
    """Which reader fits a user's own file or folder."""
    if path.is_dir():
        if path.suffix.lower() in (".h5ad", ".h5", ".hdf5", ".csv", ".tsv", ".txt", ".mtx") and not (path / "spatial").is_dir():
            raise UserError(f"{path} is a folder, not a file; --data takes an .h5ad file (or a Space Ranger folder with spatial/)")
        return "visium"
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        return "h5ad"
    if suffix in (".h5", ".hdf5"):
        h5py = _h5py()
        try:
            with h5py.File(path, "r") as f:
                keys = set(f.keys())
        except OSError as err:
            raise UserError(f"cannot read {path} as HDF5 ({_first_line(err)}); is the file complete?")
        if "X" in keys:
            return "xy_h5"
        if "exprs" in keys:
            return "cellblast_h5"
        if "matrix" in keys:
            raise UserError(
                f"{path} is a 10x feature-barcode matrix without positions; pass its Space Ranger folder "
                "(with spatial/) for spatial data, or convert it to .h5ad with the labels in .obs"
            )
        raise UserError(f"{path}: unknown HDF5 layout (keys: {sorted(keys)}); expected X/Y, Cell BLAST 'exprs', or use .h5ad")
    raise UserError(f"unsupported file type '{path.suffix}' for {path}; give an .h5ad, an X/Y or Cell BLAST .h5, or a Visium folder")


_LAYER = re.compile(r"^layer[ _]?(\d+)$", re.IGNORECASE)


def unify_label_vocabulary(values: pd.Series) -> pd.Series:
    """One spelling for cortical layers: ``Layer1``/``layer_1``/``L1`` all become ``L1``."""
    return values.map(lambda v: _LAYER.sub(r"L\1", v) if isinstance(v, str) else v)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
