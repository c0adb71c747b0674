"""Files made from public originals: downloaded as their originals, rebuilt here, checked like a download.

A registry file with a :class:`~datamodules.registry.Build` has no download of its own. :func:`obtain` fetches its
inputs (public files at fixed commits, each checksum-verified), runs the named recipe and writes the result beside
its destination, renaming it into place only once its sha256 equals the registered one. The recipes are
deterministic: with the anndata and h5py of requirements.txt the rebuilt file is byte-identical to the registered
one, so the registry's sha256 of a derived file means the same as for any download.

Recipes (``Build.recipe``):

- ``dlpfc_rda``: a DLPFC Visium slice. Counts from an R ``.rda`` (``layout`` ``banksy``: a list whose
  ``expression`` is a dense genes × spots matrix; ``seurat``: a Seurat object whose RNA assay holds the counts as a
  sparse dgCMatrix), in the spots' order there; ``layer_guess`` and ``layer_guess_reordered_short`` joined by
  barcode from SEDR_analyses' ``metadata.tsv`` (unlabelled spots kept, as NaN); ``in_tissue``, ``array_row``,
  ``array_col`` and ``obsm['spatial']`` = (pixel column, pixel row) from HumanPilot's ``tissue_positions_list.txt``.
- ``simlr_rdata``: SIMLR's Pollen ``.RData``: ``in_X`` (genes × cells) transposed, ``true_labs`` as
  ``obs['cell_type1']``; cells and genes are unnamed there, so they are numbered ``cell1..``, ``gene1..``.

R files are read with the ``rdata`` package (pure Python, pinned in requirements.txt).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from datamodules.download import fetch, sha256sum
from scrcl.atomic import atomic_path
from scrcl.errors import UserError

if TYPE_CHECKING:
    from anndata import AnnData

    from datamodules.registry import DataFile

COMPRESSION = "gzip"  # how the registered derived files were written; part of what makes them byte-identical


def obtain(root: str | os.PathLike, file: "DataFile", *, progress: bool = True) -> Path:
    """``root / file.path``: there already, downloaded (checksum-verified), or built from its originals."""
    root = Path(root)
    dest = root / file.path
    if dest.exists():
        return dest
    if file.build is None:
        return fetch(dest, file.urls, file.sha256, progress=progress)
    inputs = {role: obtain(root, original, progress=progress) for role, original in file.build.inputs.items()}
    return build(dest, file, inputs)


def obtainable(root: str | os.PathLike, file: "DataFile") -> bool:
    """Whether :func:`obtain` can place the file without the user: there, downloadable, or buildable."""
    if (Path(root) / file.path).exists():
        return True
    if file.build is not None:
        return all(obtainable(root, original) for original in file.build.inputs.values())
    return bool(file.urls)


def build(dest: Path, file: "DataFile", inputs: dict[str, Path]) -> Path:
    """Run ``file.build``'s recipe on ``inputs`` and put the result at ``dest`` if its sha256 is the registered one."""
    recipe = RECIPES.get(file.build.recipe)
    if recipe is None:
        raise UserError(f"{dest}: unknown recipe '{file.build.recipe}' in the registry")
    adata = recipe(inputs, **file.build.options)
    expected = file.sha256.strip().lower() if file.sha256 else None
    try:
        with atomic_path(dest, suffix=".h5ad") as tmp:  # renamed into place only if the block ends cleanly
            adata.write_h5ad(tmp, compression=COMPRESSION)
            digest = sha256sum(tmp)
            if expected is not None and digest != expected:
                raise UserError(
                    f"{dest} was rebuilt from {', '.join(str(p) for p in inputs.values())} but its sha256 is {digest}, "
                    f"not the registered {expected}; it was not kept: check that anndata and h5py are the versions "
                    "requirements.txt pins, or report it"
                )
    except OSError as err:
        raise UserError(f"cannot write {dest} while building it: {' '.join(str(err).split())}") from err
    return dest


# -- recipes: inputs (role -> path) and options -> AnnData --------------------------------------------------------------
def _read_r(path: Path):
    """The one object an R data file holds, read with rdata; a file of another kind is one line."""
    import rdata

    try:
        with warnings.catch_warnings():  # rdata warns for every R class it has no constructor for (Seurat, dgCMatrix)
            warnings.simplefilter("ignore")
            objects = rdata.read_rda(path)
    except Exception as err:  # rdata raises many types for a file it cannot parse
        raise UserError(f"cannot read {path} as an R data file ({type(err).__name__}: {_first_line(err)}); "
                        "delete it so that it is downloaded again") from None
    if len(objects) != 1:
        raise UserError(f"{path}: expected one R object, found {len(objects)} ({', '.join(map(str, objects))})")
    return next(iter(objects.values()))


def _unexpected(path: Path, what: str, err: BaseException) -> UserError:
    return UserError(f"{path}: not the expected {what} ({type(err).__name__}: {_first_line(err)}); "
                     "delete it so that it is downloaded again")


def _banksy_counts(path: Path) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Banksy's list(expression = genes × spots matrix with dimnames, locations = ...): spots × genes, genes, spots."""
    obj = _read_r(path)
    try:
        expression = obj["expression"]
        genes, spots = (np.asarray(expression.coords[dim].values).astype(str) for dim in expression.dims)
        counts = np.asarray(expression.values)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise _unexpected(path, "Banksy list with an 'expression' genes x spots matrix", err)
    return sp.csr_matrix(counts.T, dtype=np.float32), genes, spots


def _seurat_counts(path: Path) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """A Seurat object's RNA counts (dgCMatrix: i, p, x, Dim, Dimnames; genes × spots): spots × genes, genes, spots."""
    obj = _read_r(path)
    try:
        counts = obj.assays["RNA"].counts
        genes, spots = (np.asarray(names).astype(str) for names in counts.Dimnames)
        matrix = sp.csc_matrix((counts.x, counts.i, counts.p), shape=tuple(int(n) for n in counts.Dim))
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise _unexpected(path, "Seurat object with RNA counts", err)
    return sp.csr_matrix(matrix.T, dtype=np.float32), genes, spots


def dlpfc_rda(inputs: dict[str, Path], *, sample: str, layout: str, provenance: str) -> "AnnData":
    import anndata as ad

    read = {"banksy": _banksy_counts, "seurat": _seurat_counts}[layout]
    x, genes, spots = read(inputs["counts"])
    try:
        labels = pd.read_csv(inputs["labels"], sep="\t", index_col=0, dtype=str)
        labels = labels.reindex(spots)[["layer_guess", "layer_guess_reordered_short"]]
    except (KeyError, ValueError, pd.errors.ParserError) as err:
        raise _unexpected(inputs["labels"], "SEDR_analyses metadata.tsv with layer_guess columns", err)
    positions = pd.read_csv(inputs["positions"], header=None, index_col=0,
                            names=["barcode", "in_tissue", "array_row", "array_col", "pxl_row", "pxl_col"])
    absent = pd.Index(spots).difference(positions.index)
    if len(absent):
        raise UserError(f"{inputs['positions']} lacks positions for {len(absent)} spots of {inputs['counts']} "
                        f"(e.g. {absent[0]}); are both of slice {sample}?")
    positions = positions.loc[spots]

    obs = pd.DataFrame(index=pd.Index(spots))
    for column in labels.columns:
        obs[column] = pd.Categorical(labels[column])
    for column in ("in_tissue", "array_row", "array_col"):
        obs[column] = positions[column].to_numpy(np.int64)
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame({"gene_ids": genes}, index=pd.Index(genes)))
    adata.obsm["spatial"] = positions[["pxl_col", "pxl_row"]].to_numpy(np.float64)  # scanpy's (x, y)
    adata.uns["source"] = provenance
    adata.uns["sample"] = sample
    return adata


def simlr_rdata(inputs: dict[str, Path], *, provenance: str) -> "AnnData":
    import anndata as ad

    path = inputs["data"]
    obj = _read_r(path)
    try:
        x = np.asarray(obj["in_X"], dtype=np.float64)
        labels = np.asarray(obj["true_labs"]).ravel().astype(int)
    except (KeyError, TypeError, ValueError) as err:
        raise _unexpected(path, "SIMLR list with in_X and true_labs", err)
    if x.ndim != 2 or x.shape[1] != len(labels):
        raise UserError(f"{path}: in_X is {x.shape} but there are {len(labels)} labels (one per column expected)")
    adata = ad.AnnData(x.T.astype(np.float32))
    adata.obs_names = [f"cell{i + 1}" for i in range(adata.n_obs)]
    adata.var_names = [f"gene{j + 1}" for j in range(adata.n_vars)]
    adata.obs["cell_type1"] = pd.Categorical(labels.astype(str))
    adata.uns["source"] = provenance
    return adata


RECIPES = {"dlpfc_rda": dlpfc_rda, "simlr_rdata": simlr_rdata}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
