"""From a dataset name or a user's file to one AnnData with labels in ``obs['label']``.

Resolves the data directory, picks the registry source (local first, then download), reads it and
checks the values. Cells (spots) without a label are kept here; the preprocessing decides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from datamodules.derive import obtain, obtainable
from datamodules.readers import READERS, sniff_reader, unify_label_vocabulary
from datamodules.registry import DatasetSpec, Source, get_spec
from scrcl.errors import UserError

LABEL = "label"  # the obs column every later stage reads


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``--data-dir`` > ``SCRCL_DATA_DIR`` > ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("SCRCL_DATA_DIR")
    return Path(env).expanduser() if env else Path("data")


@dataclass
class Loaded:
    adata: "AnnData"
    task: str
    provenance: dict  # what was read: dataset, reader, files, note


def _choose_source(spec: DatasetSpec, data_dir: Path) -> Source:
    for source in spec.sources:
        if all((data_dir / f.path).exists() for f in source.files.values()):
            return source
    for source in spec.sources:
        if all(obtainable(data_dir, f) for f in source.files.values()):
            return source
    expected = " or ".join(str(data_dir / next(iter(s.files.values())).path) for s in spec.sources if s.files)
    raise UserError(f"dataset '{spec.name}': no file found (expected {expected}) and none can be downloaded automatically; get it from {spec.hint}")


def check_obtainable(name: str, data_dir: str | os.PathLike | None = None) -> Source:
    """The one-line UserError now, before any work, if a registry dataset has no local file and none can be downloaded
    (a batch of runs checks every dataset it names before its first run); else the source it would be read from (local
    files first), fetching nothing."""
    return _choose_source(get_spec(name), resolve_data_dir(data_dir))


@dataclass
class Resolved:
    """A registry dataset's files, present on disk (fetched if need be) but not yet read."""

    spec: DatasetSpec
    source: Source
    paths: dict[str, Path]


def resolve_dataset(name: str, data_dir: str | os.PathLike | None = None, *, progress: bool = True) -> Resolved:
    """Pick the source (local first, then download) and make sure its files are on disk (downloaded or rebuilt from
    their public originals)."""
    spec = get_spec(name)
    root = resolve_data_dir(data_dir)
    source = _choose_source(spec, root)
    try:
        paths = {role: obtain(root, f, progress=progress) for role, f in source.files.items()}
    except UserError as err:
        others = [str(root / next(iter(s.files.values())).path) for s in spec.sources if s is not source and s.files]
        also = f" (also accepted instead: {', '.join(others)})" if others else ""
        raise UserError(f"dataset '{spec.name}': {err}{also}") from None
    return Resolved(spec, source, paths)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, progress: bool = True) -> Loaded:
    """A registry dataset: local file(s) if present, otherwise downloaded (checksum-verified)."""
    return read_resolved(resolve_dataset(name, data_dir, progress=progress))


def read_resolved(resolved: Resolved) -> Loaded:
    spec, source, paths = resolved.spec, resolved.source, resolved.paths
    reader = READERS[source.reader]
    if source.reader == "visium":
        adata = reader(**paths, **source.options)
    else:
        adata = reader(paths.get("data"), **source.options)
    _attach_labels(adata, source.label_key or spec.label_key, required=True, where=f"dataset '{spec.name}'")
    provenance = {
        "dataset": spec.name,
        "reader": source.reader,
        "files": {role: str(p) for role, p in paths.items()},
        "source_note": source.note,
        "paper_dataset": spec.paper,
        "n_classes_registry": spec.n_classes,
    }
    return Loaded(adata, spec.task, provenance)


def load_file(path: str | os.PathLike, *, label_key: str | None = None, task: str | None = None) -> Loaded:
    """A user's own file or Visium folder; labels optional (then no scores are reported)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path} does not exist; check the path given to --data")
    reader = sniff_reader(path)
    adata, note = with_raw_if_x_unusable(READERS[reader](path), path.name)
    label_note = _attach_labels(adata, label_key, required=True, where=str(path))
    task = task or ("st" if "spatial" in adata.obsm else "sc")
    return Loaded(adata, task, {"dataset": path.stem, "reader": reader, "files": {"data": str(path)}, "paper_dataset": False,
                                "notes": [n for n in (note, label_note) if n]})


def spatial_note(path: str | os.PathLike) -> str | None:
    """One informational line when a user's file holds spot coordinates but runs as scRNA-seq, else None.

    Looks without reading the data: a Visium folder (``spatial/``) or an .h5ad with ``obsm/spatial``.
    """
    path = Path(path).expanduser()
    found = False
    if path.is_dir():
        found = (path / "spatial").is_dir()
    elif path.suffix.lower() == ".h5ad" and path.is_file():
        import h5py

        try:
            with h5py.File(path, "r") as f:
                found = "obsm" in f and isinstance(f["obsm"], h5py.Group) and "spatial" in f["obsm"]
        except OSError:  # not readable: the reader reports it properly
            found = False
    if not found:
        return None
    return (f"note: {path.name} has spatial coordinates (obsm['spatial']) but runs as scRNA-seq (task sc); "
            "pass --task st for spatial domains")


def from_anndata(adata, *, label_key: str | None = None, task: str | None = None) -> Loaded:
    """An in-memory AnnData (the Python API). Copies, so the caller's object is never modified."""
    adata, note = with_raw_if_x_unusable(adata, "the AnnData")
    adata = adata.copy()
    label_note = _attach_labels(adata, label_key, required=True, where="the AnnData")
    task = task or ("st" if "spatial" in adata.obsm else "sc")
    return Loaded(adata, task, {"dataset": "anndata", "reader": "memory", "files": {}, "paper_dataset": False,
                                "notes": [n for n in (note, label_note) if n]})


def _attach_labels(adata, label_key: str | None, *, required: bool, where: str) -> str | None:
    """obs[LABEL] from the column ``label_key``. Without a label key, a column the data themselves call ``label`` is
    dropped (every later stage reads obs[LABEL] as the annotations, and none were asked for); the note returned says so."""
    if label_key is None:
        if LABEL not in adata.obs:
            return None
        adata.obs = adata.obs.drop(columns=LABEL)
        return (f"{where} has a '{LABEL}' column; it is not used to score the clusters unless asked for "
                f"(--label-key={LABEL})")
    if label_key not in adata.obs:
        columns = ", ".join(map(str, adata.obs.columns)) or "none"
        raise UserError(f"label key '{label_key}' not found in {where}; obs columns are: {columns} (pass --label-key COLUMN, or omit it and give --n-clusters)")
    values = adata.obs[label_key]
    values = values.astype(object).where(values.notna(), None)
    values = values.map(lambda v: None if v is None or (isinstance(v, str) and v.strip().lower() in ("", "nan", "na")) else str(v))
    adata.obs[LABEL] = pd.Categorical(unify_label_vocabulary(values))
    return None


def _usable(matrix) -> bool:
    if matrix is None:
        return False
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    return not data.size or (bool(np.all(np.isfinite(data))) and data.min() >= 0)


def with_raw_if_x_unusable(adata, where: str):
    """(adata, note): scanpy users often hold z-scored values in X and the log-normalised matrix in ``.raw``. When X
    has negative or non-finite values and ``.raw`` is usable, the model reads ``.raw`` (its genes), and says so."""
    if adata.X is None and (adata.raw is None or not _usable(adata.raw.X)):
        raise UserError(f"{where} has no expression matrix (its X is empty); put counts or log-normalised values in X")
    if adata.raw is None or _usable(adata.X) or not _usable(adata.raw.X):
        return adata, None
    import anndata as ad

    raw = adata.raw
    out = ad.AnnData(X=raw.X.copy(), obs=adata.obs.copy(), var=raw.var.copy(), obsm=dict(adata.obsm), uns=dict(adata.uns))
    state = "is empty" if adata.X is None else "has negative values (scaled or centred)"
    note = (f"{where}: X {state}, so its .raw is used ({raw.shape[1]} genes, "
            "non-negative): the model needs counts or log-normalised values")
    return out, note


def check_values(adata) -> None:
    """Expression must be finite and non-negative (counts or log-normalised values)."""
    data = adata.X.data if sp.issparse(adata.X) else np.asarray(adata.X)
    if data.size and not np.all(np.isfinite(data)):
        raise UserError("the expression matrix contains NaN or infinite values; remove or impute them before running scrcl")
    if data.size and data.min() < 0:
        raise UserError(
            "the expression matrix has negative values (it looks scaled or centred) and there is no usable .raw; "
            "give counts or log-normalised values (e.g. put a counts layer in X)"
        )
