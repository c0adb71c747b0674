"""The Python API for scanpy users."""

from __future__ import annotations

import re

from datamodules.datamodule import ScRCLDataModule
from scrcl.train.config import resolve_config
from scrcl.errors import UserError


def _in_api_words(message: str) -> str:
    """A message written for the command line, in the words of this function's arguments:
    ``--n-clusters C`` becomes ``n_clusters=C``, ``--k`` becomes ``k=``."""
    return re.sub(r"--([a-z][a-z0-9-]*)(?: ([A-Z])\b)?", lambda m: f"{m[1].replace('-', '_')}={m[2] or ''}", message)


def fit(adata, n_clusters: int | None = None, *, label_key: str | None = None, task: str | None = None, seed: int = 5, **config):
    """Train scRCL on ``adata`` and cluster its cells.

    Fills ``adata.obsm['X_scrcl']`` (the clustered embedding, cells that survived filtering; others
    get NaN) and ``adata.obs['scrcl_cluster']``; returns ``adata``. Labels are optional
    (``label_key`` only scores the result, stored in ``adata.uns['scrcl']``). Without labels,
    ``n_clusters`` is required. Other keyword arguments are config keys (``epochs=100``, ``lr=1e-4``…);
    the generic defaults of ``task`` apply otherwise. Nothing is written to disk; use ``train.py --data FILE`` for a
    tracked run directory. Cells are matched back by position, so duplicate ``obs_names`` are fine.

    Raises ``TypeError`` for anything but an AnnData, and :class:`scrcl.errors.UserError` (one sentence naming the
    argument) for a bad value.
    """
    import anndata as ad
    import numpy as np
    import pandas as pd

    from scrcl.train import run as runner

    if not isinstance(adata, ad.AnnData):
        kind = f"{type(adata).__module__}.{type(adata).__qualname__}"
        raise TypeError(f"scrcl.fit takes an AnnData (cells x genes), got {kind}; wrap a matrix as anndata.AnnData(X)")
    try:
        overrides = {**config, "n_clusters": n_clusters, "label_key": label_key, "seed": seed, "task": task}
        overrides.setdefault("logger", "none")
        overrides.setdefault("progress", False)
        cfg = resolve_config(task=task, overrides=overrides)
        # A view of the caller's data with positions for names (no copy of X): results go back by position.
        obs = adata.obs.copy()
        obs.index = pd.RangeIndex(adata.n_obs).astype(str)
        positional = ad.AnnData(X=adata.X, obs=obs, var=adata.var, obsm=dict(adata.obsm),
                                raw={"X": adata.raw.X, "var": adata.raw.var} if adata.raw is not None else None)
        datamodule = ScRCLDataModule.from_config(cfg, adata=positional)
        datamodule.setup("fit")
        outcome = runner.train_one(cfg, datamodule, seed, run_dir=None)
    except UserError as err:
        raise type(err)(_in_api_words(str(err))) from None
    final = outcome["final"]
    embedding, clusters = final["embedding"], final["pred"]
    position = datamodule.prepared.obs_names.astype(int).to_numpy()
    full = np.full((adata.n_obs, embedding.shape[1]), np.nan, dtype=np.float32)
    full[position] = embedding
    adata.obsm["X_scrcl"] = full
    labels = np.full(adata.n_obs, None, dtype=object)
    labels[position] = clusters.astype(str)
    adata.obs["scrcl_cluster"] = pd.Categorical(labels)
    adata.uns["scrcl"] = {"scores": final["scores"], "n_clusters": int(datamodule.n_clusters),
                          "config": {k: v for k, v in cfg.items() if v is not None and not isinstance(v, (list, dict))}}
    return adata
