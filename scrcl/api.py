"""The Python API for scanpy users."""

from __future__ import annotations

from scrcl.config import resolve_config


def fit(adata, n_clusters: int | None = None, *, label_key: str | None = None, task: str | None = None, seed: int = 5, **config):
    """Train scRCL on ``adata`` and cluster its cells.

    Fills ``adata.obsm['X_scrcl']`` (the clustered embedding, cells that survived filtering; others
    get NaN) and ``adata.obs['scrcl_cluster']``; returns ``adata``. Labels are optional
    (``label_key`` only scores the result, stored in ``adata.uns['scrcl']``). Without labels,
    ``n_clusters`` is required. Other keyword arguments are config keys (``epochs=100``, ``lr=1e-4``…);
    the generic defaults of ``task`` apply otherwise. Nothing is written to disk; use ``train.py --data FILE`` for a tracked run directory.
    """
    import numpy as np
    import pandas as pd

    from scrcl import runner

    overrides = {**config, "n_clusters": n_clusters, "label_key": label_key, "seed": seed, "task": task}
    overrides.setdefault("logger", "none")
    overrides.setdefault("progress", False)
    cfg = resolve_config(task=task, overrides=overrides)
    datamodule = runner.make_datamodule(cfg, adata=adata)
    datamodule.setup("fit")
    outcome = runner.train_one(cfg, datamodule, seed, run_dir=None)
    final = outcome["final"]
    embedding, clusters, names = final["embedding"], final["pred"], datamodule.prepared.obs_names
    scores = final["scores"]
    full = np.full((adata.n_obs, embedding.shape[1]), np.nan, dtype=np.float32)
    position = pd.Index(adata.obs_names).get_indexer(names)
    full[position] = embedding
    adata.obsm["X_scrcl"] = full
    labels = np.full(adata.n_obs, None, dtype=object)
    labels[position] = clusters.astype(str)
    adata.obs["scrcl_cluster"] = pd.Categorical(labels)
    adata.uns["scrcl"] = {"scores": scores, "n_clusters": int(datamodule.n_clusters), "config": {k: v for k, v in cfg.items() if v is not None and not isinstance(v, (list, dict))}}
    return adata
