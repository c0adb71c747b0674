"""Preprocessing (docs/method.md §1), with scanpy.

1. keep cells with ≥1 expressed gene and genes expressed in ≥1 cell;
2. normalise each cell to 1e4 total counts and log1p — unless the input is already normalised
   (non-integer values), which is detected and never normalised twice;
3. the top-h highly variable genes (scRNA-seq: scanpy's default on log data; spatial: ``seurat_v3``
   on the counts of all genes, before empty genes are removed, as the reference code);
4. the model input, a config choice: ``counts`` (raw counts of the HVGs, the reference's scRNA-seq
   input), ``lognorm`` (the paper's text), ``scaled`` (lognorm scaled to unit variance without
   centring, clipped at 10: the reference's spatial input).

The result is an AnnData over the HVGs: ``X`` the model input (float32), ``layers['lognorm']`` the
log-normalised HVGs (the cell graph is built on them), ``obs['label']`` and ``obsm['spatial']`` if
present, and ``uns['preprocess']`` recording what was done.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from datamodules.loading import LABEL, check_values
from scrcl.errors import UserError

INPUTS = ("counts", "lognorm", "scaled")


def is_integer_valued(x) -> bool:
    data = x.data if sp.issparse(x) else np.asarray(x)
    return bool(np.all(np.equal(np.mod(data, 1), 0)))


def _coordinates_elsewhere(adata) -> str:
    """Where a file keeps what look like spot coordinates instead (another obsm key, obs columns), for the message."""
    keys = [k for k in adata.obsm if "spatial" in str(k).lower() or str(k).lower() in ("coords", "coordinates", "xy")]
    if keys:
        return f" (it has obsm['{keys[0]}']: copy it to obsm['spatial'])"
    for pair in (("array_row", "array_col"), ("x", "y"), ("X", "Y"), ("row", "col"), ("imagerow", "imagecol")):
        if all(c in adata.obs for c in pair):
            return f" (it has obs columns {pair[0]}, {pair[1]}: put them in obsm['spatial'] as an N x 2 array)"
    return ""


def preprocess(adata, *, task: str, input: str, hvg: int, drop_unlabelled: bool = False):
    import scanpy as sc

    if input not in INPUTS:
        raise UserError(f"input must be one of {', '.join(INPUTS)}, got '{input}'")
    if task not in ("sc", "st"):
        raise UserError(f"task must be 'sc' (cell types) or 'st' (spatial domains), got '{task}'")
    if task == "st" and "spatial" not in adata.obsm:
        raise UserError(f"spatial task but the data has no coordinates in obsm['spatial']{_coordinates_elsewhere(adata)}; "
                        "add them, or run with --task sc")
    check_values(adata)
    n_in = adata.n_obs
    adata = adata.copy()
    if sp.issparse(adata.X):
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    else:
        adata.X = np.asarray(adata.X, dtype=np.float32)
    if drop_unlabelled and LABEL in adata.obs:
        keep = adata.obs[LABEL].notna().to_numpy()
        adata = adata[keep].copy()
        if adata.n_obs == 0:
            raise UserError("no cell has a label: every cell was dropped; check --label-key")
    if task == "st":
        try:
            coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
        except (TypeError, ValueError):
            raise UserError("obsm['spatial'] is not numeric; it must hold the (x, y) coordinates of every spot") from None
        if coords.ndim != 2 or coords.shape[1] < 2 or not np.all(np.isfinite(coords)):
            raise UserError(
                f"obsm['spatial'] must hold finite (x, y) coordinates for every spot (shape {coords.shape}, "
                f"{int(np.size(coords) - np.isfinite(coords).sum())} NaN/inf); fix them or drop those spots"
            )
    if 0 in adata.shape:  # an empty file, not a matrix of zeros
        raise UserError(f"the data have {adata.n_obs} cells and {adata.n_vars} genes: there is nothing to cluster")
    n_before_empty = adata.n_obs
    sc.pp.filter_cells(adata, min_genes=1)
    if adata.n_obs == 0:
        raise UserError("nothing is left after removing empty cells and genes: the expression matrix is all zeros")
    counts = is_integer_valued(adata.X)
    seurat_v3 = task == "st" and counts
    if seurat_v3 and hvg < int((adata.X.getnnz(axis=0) if sp.issparse(adata.X) else np.count_nonzero(adata.X, axis=0)).astype(bool).sum()):
        # The reference ranks seurat_v3 HVGs on the counts of every gene, empty ones included, and their presence
        # changes the ranking (4 of 300 genes on a DLPFC strip), so rank before the empty genes go.
        try:
            sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=hvg)
            adata.var["hvg_seurat_v3"] = adata.var["highly_variable"].to_numpy()
        except ValueError:  # its loess fit fails on very few genes ("near singularities"): rank on log data below
            pass
    sc.pp.filter_genes(adata, min_cells=1)
    if adata.n_vars == 0:
        raise UserError("nothing is left after removing empty cells and genes: the expression matrix is all zeros")

    if counts:
        adata.layers["counts"] = adata.X.copy()
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    adata.layers["lognorm"] = adata.X.copy()

    n_hvg = min(hvg, adata.n_vars)
    if n_hvg < adata.n_vars:
        if "hvg_seurat_v3" in adata.var:
            keep = adata.var["hvg_seurat_v3"].to_numpy(dtype=bool)
        else:
            sc.pp.highly_variable_genes(adata, n_top_genes=n_hvg)
            keep = adata.var["highly_variable"].to_numpy()
            if keep.sum() > n_hvg:  # scanpy keeps every gene tied at the cut-off (small bins): take exactly h
                score = adata.var["dispersions_norm"]
                top = np.argsort(-np.nan_to_num(score.to_numpy(dtype=np.float64), nan=-np.inf), kind="stable")[:n_hvg]
                keep = np.zeros_like(keep)
                keep[top] = True
        adata = adata[:, keep].copy()

    used = input if (input != "counts" or counts) else "lognorm"  # no counts to give: use what there is
    if used == "counts":
        x = adata.layers["counts"]
    elif used == "lognorm":
        x = adata.layers["lognorm"]
    else:
        scaled = adata.layers["lognorm"]
        scaled = scaled.toarray() if sp.issparse(scaled) else np.array(scaled)
        x = sc.pp.scale(scaled, zero_center=False, max_value=10, copy=True)
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    out = adata.copy()
    out.X = np.ascontiguousarray(x, dtype=np.float32)
    out.layers.pop("counts", None)
    out.var = out.var.iloc[:, :0]  # HVG statistics and reader columns are not needed downstream
    out.obs = out.obs[[LABEL]] if LABEL in out.obs else out.obs.iloc[:, :0]
    out.uns = {}
    out.uns["preprocess"] = {
        "task": task,
        "input_requested": input,
        "input_used": used,
        "already_normalised": not counts,
        "n_cells_in": int(n_in),
        "n_cells": int(out.n_obs),
        "n_genes": int(out.n_vars),
        "hvg": int(n_hvg),
        "hvg_requested": int(hvg),
        "n_empty_cells_dropped": int(n_before_empty - out.n_obs),
    }
    return out
