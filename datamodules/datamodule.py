"""The LightningDataModule: everything built once in ``setup()``, one full-graph batch served.

registry/file → load → preprocess → graphs → a PyG ``Data`` holding
``x`` (N, h) model input, ``x_mlp`` = F^{t₁}X and ``x_gnn`` = F^{t₂}X (N, h), ``cell_graph`` A
(N, N, sparse CSR, binary, no self loops), ``cell_filter`` F (N, N, sparse CSR), ``gene_filter``
F_G (h, h, sparse CSR; of Gᵀ, so that row j gathers from the genes i → j of the directed gene graph G), ``y`` (N,) int64 label codes (-1 = no label) when labels exist, ``coords``
(N, 2) when spatial. The preprocessed AnnData with both graphs is cached on disk, keyed by the
source file(s) and every preprocessing parameter, so a second run skips straight to the batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

from datamodules import graphs
from datamodules.loading import LABEL, Loaded, from_anndata, load_file, read_resolved, resolve_dataset
from datamodules.preprocess import preprocess
from scrcl.atomic import atomic_path
from scrcl.errors import UserError

CACHE_VERSION = 6  # bump when preprocessing or graph building changes (6: a column named "label" is not the labels unless asked for)


def cache_dir() -> Path:
    env = os.environ.get("SCRCL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scrcl"


def writable_cache_dir() -> Path:
    """The cache directory, created if needed; one UserError line if it cannot be written."""
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        ok = path.is_dir() and os.access(path, os.W_OK | os.X_OK)
    except OSError:
        ok = False
    if not ok:
        raise UserError(f"the cache directory {path} cannot be written; set SCRCL_CACHE_DIR to a writable directory, "
                        "or run with --no-cache")
    return path


def to_torch_csr(matrix: sp.spmatrix) -> torch.Tensor:
    m = matrix.tocsr().astype(np.float32)
    m.sort_indices()
    # torch warns (once per process, on stderr) that sparse CSR is "beta"; a user cannot act on it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly disabled.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data),
            size=m.shape,
        )


def _identity_of(files: dict) -> list:
    out = []
    for role, path in sorted(files.items()):
        st = Path(path).stat()
        out.append([role, str(Path(path).resolve()), st.st_size, int(st.st_mtime)])
    return out


class ScRCLDataModule(L.LightningDataModule):
    """Serves the whole dataset as one batch (full-graph training, as in the paper).

    Give exactly one of ``dataset`` (a registry name), ``data`` (a path) or ``adata`` (in memory).
    """

    def __init__(
        self,
        *,
        dataset: str | None = None,
        data: str | os.PathLike | None = None,
        adata=None,
        data_dir: str | os.PathLike | None = None,
        label_key: str | None = None,
        n_clusters: int | None = None,
        task: str | None = None,
        input: str = "counts",
        hvg: int = 2000,
        k: int = 15,
        gene_k: int = 5,
        tms=(0, 0),
        gene_graph: str = "knn",
        graph_pcs: int | None = None,
        cell_neighbours: str = "scanpy",
        cache: bool = True,
        progress: bool = True,
        radius: int = 0,
        **_ignored,
    ):
        super().__init__()
        given = [v is not None for v in (dataset, data, adata)]
        if sum(given) != 1:
            raise UserError("give exactly one of --dataset NAME or --data PATH")
        self.dataset, self.data, self.adata_in = dataset, data, adata
        self.data_dir, self.label_key, self.requested_clusters = data_dir, label_key, n_clusters
        self.task = task
        self.params = {"input": input, "hvg": int(hvg), "k": int(k), "gene_k": int(gene_k), "gene_graph": gene_graph}
        if graph_pcs is not None:  # only when set, so the cache keys of runs without it stay as they were
            self.params["graph_pcs"] = int(graph_pcs)
        if cell_neighbours != "scanpy":
            self.params["cell_neighbours"] = cell_neighbours
        self.tms = tuple(int(t) for t in tms)
        self.use_cache = cache and adata is None
        self.radius = int(radius or 0)  # the spatial vote's (evaluation, not input: no part of the cache key)
        self.progress = progress
        self.batch = None
        self.prepared = None  # the preprocessed AnnData (HVGs), for results and analyses
        self.timings: dict[str, float] = {}

    @classmethod
    def from_config(cls, config: dict, adata=None) -> "ScRCLDataModule":
        """The DataModule of a resolved run config (``adata`` in memory replaces the config's dataset or file)."""
        return cls(
            dataset=config.get("dataset") if adata is None else None,
            data=config.get("data") if adata is None else None,
            adata=adata,
            data_dir=config.get("data_dir"),
            label_key=config.get("label_key"),
            n_clusters=config.get("n_clusters"),
            task=config.get("task"),
            input=config["input"],
            hvg=config["hvg"],
            k=config["k"],
            gene_k=config["gene_k"],
            tms=config["tms"],
            gene_graph=config.get("gene_graph", "knn"),
            graph_pcs=config.get("graph_pcs"),
            cell_neighbours=config.get("cell_neighbours", "scanpy"),
            cache=config.get("cache", True),
            progress=config.get("progress", True),
            radius=config.get("radius", 0),
        )

    # -- building ---------------------------------------------------------------------------------
    def _locate(self):
        """Where the input lives, without reading it: (files for the cache key, name, task, read())."""
        if self.dataset is not None:
            resolved = resolve_dataset(self.dataset, self.data_dir, progress=self.progress)
            task = self.task or resolved.spec.task
            return resolved.paths, resolved.spec.name, task, lambda: read_resolved(resolved)
        if self.data is not None:
            path = Path(self.data).expanduser()
            files = {"data": path} if path.exists() else None
            return files, path.stem, self.task, lambda: load_file(self.data, label_key=self.label_key, task=self.task)
        return None, "anndata", self.task, lambda: from_anndata(self.adata_in, label_key=self.label_key, task=self.task)

    def _build(self, loaded: Loaded):
        params = self.params
        prepared = preprocess(loaded.adata, task=loaded.task, input=params["input"], hvg=params["hvg"], drop_unlabelled=loaded.task == "st")
        if prepared.n_obs < params["k"] + 1:
            raise UserError(f"only {prepared.n_obs} cells left after filtering but k = {params['k']}; use a smaller --k")
        # the gene graph first: it is cheap, and too few genes for it should stop the run before the cell graph
        if params["gene_graph"] == "identity":
            gene_graph = sp.csr_matrix((prepared.n_vars, prepared.n_vars), dtype=np.float32)
        else:
            gene_graph = graphs.gene_graph(prepared.X, params["gene_k"], symmetric=params["gene_graph"] == "knn_symmetric",
                                           sparse=prepared.uns["preprocess"]["input_used"] != "scaled")
        if loaded.task == "st":
            cell_graph = graphs.spatial_graph(prepared.obsm["spatial"], params["k"])
        else:
            cell_graph = graphs.expression_graph(prepared.layers["lognorm"], params["k"], n_pcs=params.get("graph_pcs"),
                                                 neighbours=params.get("cell_neighbours", "scanpy"))
        prepared.obsp["cell_graph"] = cell_graph
        prepared.varp["gene_graph"] = gene_graph
        prepared.uns["provenance"] = json.dumps(loaded.provenance)
        return prepared

    def _cache_key(self, loaded_files: dict, task: str) -> str:
        payload = {
            "v": CACHE_VERSION,
            "dataset": self.dataset,
            "files": _identity_of(loaded_files),
            "label_key": self.label_key,
            "task": task,
            **self.params,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def _prepared(self):
        import anndata as ad

        files, name, task, read = self._locate()
        path = None
        if self.use_cache and files is not None:
            writable_cache_dir()  # before any data is read
        if self.use_cache and files is not None and task is not None:
            # The key needs only the files' identity, so a hit never reads the raw data.
            path = cache_dir() / f"{name}-{self._cache_key(files, task)}.h5ad"
            if path.exists():
                try:
                    prepared = ad.read_h5ad(path)
                    self.timings["cache"] = "hit"
                    return prepared, task
                except Exception:
                    path.unlink(missing_ok=True)  # a broken cache entry is rebuilt, never trusted
        t0 = time.perf_counter()
        loaded = read()
        if task is not None:
            loaded.task = task
        elif self.use_cache and files is not None:  # the task was only known once the file was read
            path = cache_dir() / f"{name}-{self._cache_key(files, loaded.task)}.h5ad"
        self.timings["load_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        prepared = self._build(loaded)
        self.timings["build_s"] = time.perf_counter() - t1
        self.timings["cache"] = "miss"
        if path is not None:
            with atomic_path(path, suffix=".h5ad") as tmp:  # readers never see a half-written cache file
                prepared.write_h5ad(tmp)
        return prepared, loaded.task

    def setup(self, stage: str | None = None) -> None:
        if self.batch is not None:
            return
        t0 = time.perf_counter()
        prepared, task = self._prepared()
        self.task = task
        self.prepared = prepared
        self.provenance = json.loads(prepared.uns["provenance"])
        self.batch = self._to_batch(prepared)
        self.timings["setup_s"] = time.perf_counter() - t0

    def _to_batch(self, prepared):
        from torch_geometric.data import Data

        # Labels and the number of clusters first: a bad --n-clusters fails before any heavy work.
        self.label_names = None
        codes = None
        if LABEL in prepared.obs and prepared.obs[LABEL].notna().any():
            labels = prepared.obs[LABEL].astype("category")
            labels = labels.cat.remove_unused_categories()
            self.label_names = list(labels.cat.categories)
            codes = labels.cat.codes.to_numpy().astype(np.int64)
        if self.requested_clusters is None and self.label_names and len(self.label_names) < 2:
            # one class would give n_clusters = 1 and a "perfect" score of 1.0 for any model
            raise UserError(f"the labels have a single class ({self.label_names[0]!r}), so they cannot set the number of "
                            "clusters; pass --n-clusters C (C ≥ 2) to cluster anyway (the scores will say how the labels compare)")
        labelled = int((codes >= 0).sum()) if codes is not None else 0
        if self.requested_clusters is None and self.label_names and len(self.label_names) > max(labelled // 2, 2):
            # e.g. a numeric column (a score, a count): a class per cell, and scores of 1.0 for any clustering
            column = f"'{self.label_key}' " if self.label_key else ""
            raise UserError(f"the labels {column}have {len(self.label_names)} classes for {labelled} labelled cells, more "
                            "than one per two cells: they look like a per-cell value, not cell types; choose a cell-type "
                            "column with --label-key, or pass --n-clusters C to cluster anyway")
        n_clusters = self.requested_clusters or (len(self.label_names) if self.label_names else None)
        if n_clusters is None:
            raise UserError("the data have no labels, so the number of clusters is unknown; pass --n-clusters C")
        if n_clusters > prepared.n_obs:
            raise UserError(f"n_clusters = {n_clusters} is more than the {prepared.n_obs} cells; use a smaller --n-clusters")
        self.n_clusters = int(n_clusters)

        x = np.asarray(prepared.X, dtype=np.float32)
        cell_graph = prepared.obsp["cell_graph"].tocsr()
        cell_filter = graphs.normalized_adjacency(cell_graph)
        # PyG's GCNConv sends i → j and counts degrees at the target: the propagation matrix of Gᵀ.
        gene_filter = graphs.normalized_adjacency(prepared.varp["gene_graph"].T.tocsr())
        t_mlp, t_gnn = self.tms
        x_mlp = graphs.smooth(cell_filter, x, t_mlp)
        x_gnn = x_mlp if t_gnn == t_mlp else graphs.smooth(cell_filter, x, t_gnn)
        batch = Data(
            x=torch.from_numpy(x),
            x_mlp=torch.from_numpy(x_mlp),
            x_gnn=torch.from_numpy(x_gnn),
            cell_graph=to_torch_csr(cell_graph),
            cell_filter=to_torch_csr(cell_filter),
            gene_filter=to_torch_csr(gene_filter),
            num_nodes=prepared.n_obs,
        )
        if codes is not None:
            batch.y = torch.from_numpy(codes)
        if "spatial" in prepared.obsm:
            batch.coords = torch.from_numpy(np.asarray(prepared.obsm["spatial"], dtype=np.float32))
        return batch

    # -- facts the model needs ----------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return int(self.batch.num_nodes)

    @property
    def n_genes(self) -> int:
        return int(self.batch.x.shape[1])

    @property
    def has_labels(self) -> bool:
        return getattr(self.batch, "y", None) is not None

    def notes(self) -> list[str]:
        """One line each for what was changed about the input without the user asking: .raw read instead of X, cells
        with no counts dropped, fewer HVGs or principal components than asked for because the data have fewer."""
        info = self.prepared.uns["preprocess"]
        notes = list(self.provenance.get("notes", []))
        if info.get("n_empty_cells_dropped"):
            notes.append(f"{info['n_empty_cells_dropped']} cells with no expressed gene were dropped ({info['n_cells']} remain)")
        if info.get("hvg_requested", info["hvg"]) > info["hvg"]:
            notes.append(f"hvg = {info['hvg_requested']} asked for, but the data have {info['hvg']} expressed genes: all of them are used")
        pcs = self.params.get("graph_pcs")
        if self.task == "sc" and pcs and pcs > self._graph_pcs_used:
            notes.append(f"graph_pcs = {pcs} asked for, but the data allow {self._graph_pcs_used} principal components: "
                         f"the cell graph uses {self._graph_pcs_used}")
        if self.task == "sc" and self.radius:
            notes.append(f"radius = {self.radius} is set, but the spatial vote is for spatial domains (task st): this "
                         "scRNA-seq run has none")
        if self.task == "st" and self.radius > self.n_cells / self.n_clusters:  # no labels: the sizes asked for
            notes.append(f"the spatial vote relabels each spot by its {self.radius} nearest spots (radius), more than a "
                         f"domain holds on average here ({self.n_cells} spots / {self.n_clusters} clusters = "
                         f"{self.n_cells / self.n_clusters:.0f}): it can merge domains into one; a smaller --radius keeps "
                         "them (--radius 0: no vote)")
        return notes

    @property
    def _graph_pcs_used(self) -> int:
        """The principal components the cell graph is built on: those asked for, at most what the data allow."""
        return min(self.params.get("graph_pcs") or 0, min(self.n_cells, self.n_genes) - 1)

    def summary(self) -> str:
        b = self.batch
        info = self.prepared.uns["preprocess"]
        parts = [
            f"{self.provenance['dataset']} ({self.task}): {self.n_cells} cells x {self.n_genes} genes",
            f"input={info['input_used']}" + (" (already normalised)" if info["already_normalised"] else ""),
            f"cell graph {b.cell_graph.values().numel()} edges (k={self.params['k']}"
            + (f", on PCA-{self._graph_pcs_used}" if self.task == "sc" and self.params.get("graph_pcs") else "") + ")",
            f"gene graph {int(b.gene_filter.values().numel()) - self.n_genes} edges",
            f"tms={list(self.tms)}",
            f"clusters={self.n_clusters}",
            f"labels={len(self.label_names)} classes" if self.label_names else "no labels",
        ]
        return "; ".join(parts)

    # -- loaders: one full-graph batch ---------------------------------------------------------------
    def _loader(self) -> DataLoader:
        return DataLoader([self.batch], batch_size=None, collate_fn=lambda b: b, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
