"""ScRCLDataModule: the on-disk cache, the one-batch loaders, the argument checks."""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.datamodule import ScRCLDataModule, cache_dir
from scrcl.errors import UserError

TENSORS = ("x", "x_mlp", "x_gnn", "y", "cell_graph", "cell_filter", "gene_filter")


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.layout == torch.sparse_csr:
        return (
            a.shape == b.shape
            and torch.equal(a.crow_indices(), b.crow_indices())
            and torch.equal(a.col_indices(), b.col_indices())
            and torch.equal(a.values(), b.values())
        )
    return a.dtype == b.dtype and torch.equal(a, b)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRCL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def pollen(data_dir, **kw):
    """Pollen, the smallest real dataset (301 cells), keeps the cache tests quick."""
    return ScRCLDataModule(dataset="pollen", data_dir=data_dir, progress=False, **{"hvg": 2000, "k": 10, **kw})


def test_second_setup_is_a_cache_hit_with_an_identical_batch(data_dir, own_cache):
    t0 = time.perf_counter()
    first = pollen(data_dir, input="counts")
    first.setup()
    t1 = time.perf_counter()
    second = pollen(data_dir, input="counts")
    second.setup()
    t2 = time.perf_counter()
    print(f"\npollen setup: first (miss) {t1 - t0:.2f} s, second (hit) {t2 - t1:.2f} s; timings {first.timings} / {second.timings}")
    assert cache_dir() == own_cache
    assert first.timings["cache"] == "miss" and second.timings["cache"] == "hit"
    assert "build_s" not in second.timings
    for key in TENSORS:
        assert same_tensor(first.batch[key], second.batch[key]), key
    assert first.label_names == second.label_names and first.n_clusters == second.n_clusters
    assert first.provenance == second.provenance
    files = sorted(p.name for p in own_cache.iterdir())
    assert len(files) == 1 and files[0].startswith("pollen-") and files[0].endswith(".h5ad")  # no temp file left



def test_every_preprocessing_parameter_is_in_the_cache_key(data_dir, own_cache):
    """(k is the parameter the brief names.)"""
    def status(**kw):
        dm = pollen(data_dir, **kw)
        dm.setup()
        return dm.timings["cache"]

    assert status() == "miss" and status() == "hit"
    for change in ({"k": 5}, {"hvg": 1000}, {"input": "scaled"}, {"gene_k": 3}, {"gene_graph": "identity"},
                   {"cell_neighbours": "exact"}, {"graph_pcs": 30}):
        assert status(**change) == "miss", change
        assert status(**change) == "hit", change
    # smoothing is applied after the cache: another tms reuses the cached graphs
    assert status(tms=(1, 0)) == "hit"


def test_a_broken_cache_entry_is_rebuilt(data_dir, own_cache):
    dm = ScRCLDataModule(dataset="pollen", data_dir=data_dir, k=10, progress=False)
    dm.setup()
    (entry,) = list(own_cache.iterdir())
    entry.write_bytes(b"garbage, not an h5ad")
    again = ScRCLDataModule(dataset="pollen", data_dir=data_dir, k=10, progress=False)
    again.setup()
    assert again.timings["cache"] == "miss"
    assert torch.equal(again.batch.x, dm.batch.x)
    assert ad.read_h5ad(entry).n_obs == 249  # rewritten whole


def test_no_cache_writes_nothing(data_dir, own_cache):
    dm = ScRCLDataModule(dataset="pollen", data_dir=data_dir, k=10, cache=False, progress=False)
    dm.setup()
    assert dm.timings["cache"] == "miss"
    assert not own_cache.exists() or not any(own_cache.iterdir())


def test_in_memory_anndata_is_never_cached(own_cache):
    rng = np.random.default_rng(0)
    a = ad.AnnData(rng.poisson(2.0, size=(30, 12)).astype(np.float32))
    a.obs["t"] = pd.Categorical(rng.choice(["a", "b"], 30))
    dm = ScRCLDataModule(adata=a, label_key="t", k=3, progress=False)
    dm.setup()
    assert dm.n_cells == 30 and dm.n_clusters == 2
    assert not own_cache.exists() or not any(own_cache.iterdir())


def test_loaders_serve_the_one_full_graph_batch(built):
    dm = built("pollen")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.predict_dataloader()):
        batches = list(loader)
        assert len(batches) == 1 and batches[0] is dm.batch
    setup_batch = dm.batch
    dm.setup("fit")  # idempotent
    assert dm.batch is setup_batch
    assert dm.has_labels and dm.n_cells == 249


def test_exactly_one_input_is_required(data_dir):
    with pytest.raises(UserError, match="exactly one"):
        ScRCLDataModule()
    with pytest.raises(UserError, match="exactly one"):
        ScRCLDataModule(dataset="pollen", data="x.h5ad")


def test_requested_clusters_override_the_label_count(data_dir):
    dm = ScRCLDataModule(dataset="pollen", data_dir=data_dir, k=10, n_clusters=5, cache=False, progress=False)
    dm.setup()
    assert dm.n_clusters == 5 and len(dm.label_names) == 11


def test_unlabelled_data_need_n_clusters(own_cache):
    x = np.random.default_rng(1).poisson(2.0, size=(20, 8)).astype(np.float32)
    with pytest.raises(UserError, match="--n-clusters"):
        ScRCLDataModule(adata=ad.AnnData(x), k=3, progress=False).setup()
    dm = ScRCLDataModule(adata=ad.AnnData(x), k=3, n_clusters=4, progress=False)
    dm.setup()
    assert not dm.has_labels and dm.n_clusters == 4 and dm.label_names is None


def test_a_cache_hit_never_reads_the_raw_file(data_dir, own_cache, monkeypatch, tmp_path):
    """The cache key needs only the files' identity: on a hit the reader is not called at all."""
    import datamodules.datamodule as dm_module

    ScRCLDataModule(dataset="pollen", data_dir=data_dir, k=10, progress=False).setup()

    def refuse(*args, **kwargs):
        raise AssertionError("the raw file was read on a cache hit")

    monkeypatch.setattr(dm_module, "read_resolved", refuse)
    monkeypatch.setattr(dm_module, "load_file", refuse)
    again = ScRCLDataModule(dataset="pollen", data_dir=data_dir, k=10, progress=False)
    again.setup()
    assert again.timings["cache"] == "hit" and again.n_cells == 249
    # a user's own file: the first run caches once the task is known, the second never reads it
    import shutil

    own = tmp_path / "mine.h5ad"
    shutil.copy(data_dir / "derived/Pollen_SIMLR.h5ad", own)
    monkeypatch.undo()
    monkeypatch.setenv("SCRCL_CACHE_DIR", str(own_cache))
    ScRCLDataModule(data=own, label_key="cell_type1", task="sc", k=10, progress=False).setup()
    monkeypatch.setattr(dm_module, "load_file", refuse)
    hit = ScRCLDataModule(data=own, label_key="cell_type1", task="sc", k=10, progress=False)
    hit.setup()
    assert hit.timings["cache"] == "hit"
