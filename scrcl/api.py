"""The Python API for scanpy users."""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager

from datamodules.datamodule import ScRCLDataModule
from scrcl.train.config import resolve_config
from scrcl.errors import UserError

# the process-wide settings a run makes (seeds, warning filters) are one per process: two fits in threads take turns
_ONE_FIT_AT_A_TIME = threading.Lock()
# config keys for a run on disk: through fit (one seed, in memory, nothing written) they would do nothing
_RUN_ON_DISK_KEYS = ("data", "output", "run_name", "seeds", "logger", "checkpoint_every", "resume")


def _in_api_words(message: str) -> str:
    """A message written for the command line, in the words of this function's arguments: ``--n-clusters C`` becomes
    ``n_clusters=C``, ``--task sc`` ``task='sc'``, ``--label-key=label`` ``label_key='label'``, ``a smaller --k or``
    ``a smaller k or``. Only config keys are renamed (``python train.py --help`` and a launcher's ``--gpus`` stay), and
    the word after a flag is read as its value only when it is a placeholder (``C``, ``COLUMN``), a number or one of
    the key's choices."""
    from scrcl.train.config import KEYS

    keys = {k.name: k for k in KEYS}

    def argument(m: re.Match) -> str:
        name, value = m[1].replace("-", "_"), m[2] or m[3]
        if name not in keys:
            return m[0]
        if value is None:
            return name
        if value.isupper() or re.fullmatch(r"-?[\d.]+(e-?\d+)?", value):
            return f"{name}={value}"
        if m[2] or value in map(str, keys[name].choices):  # --key=value is a value whatever it reads like
            return f"{name}={value!r}"
        return f"{name} {value}"

    return re.sub(r"--([a-z][a-z0-9-]*)(?:=([^\s,;)]+)| ([A-Za-z0-9_.-]*[A-Za-z0-9_])(?=[\s,;:.)]|$))?", argument, message)


def _outside_scrcl() -> int:
    """The ``stacklevel`` of the first caller outside this package (a warning then points at the user's line)."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "scrcl":
        frame, level = frame.f_back, level + 1
    return level


@contextmanager
def _session_state_kept():
    """What a run sets for itself process-wide (Lightning's seeding of Python's, numpy's and torch's random generators
    and its environment variables, deterministic kernels, cuDNN's benchmark switch, warning filters, library log
    levels) is put back after ``fit``: a notebook's own random draws and settings are not changed by calling it. Fits
    in several threads take turns (these settings are one per process)."""
    import logging
    import random
    import warnings

    import numpy as np
    import torch

    with _ONE_FIT_AT_A_TIME:
        streams = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None  # (not started for a CPU caller)
        kernels = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                   torch.backends.cudnn.benchmark)
        env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG")}
        loggers = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")}
        try:
            with warnings.catch_warnings():
                yield
        finally:
            random.setstate(streams[0])
            np.random.set_state(streams[1])
            torch.random.set_rng_state(streams[2])
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
            torch.use_deterministic_algorithms(kernels[0], warn_only=kernels[1])
            torch.backends.cudnn.benchmark = kernels[2]
            for k, v in env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            for name, level in loggers.items():
                logging.getLogger(name).setLevel(level)


def fit(adata, n_clusters: int | None = None, *, label_key: str | None = None, task: str | None = None, seed: int = 5, **config):
    """Train scRCL on ``adata`` and cluster its cells.

    Fills ``adata.obsm['X_scrcl']`` (the clustered embedding, cells that survived filtering; others
    get NaN) and ``adata.obs['scrcl_cluster']``; returns ``adata``. Labels are optional
    (``label_key`` only scores the result, stored in ``adata.uns['scrcl']``; with ``task='st'`` spots without a label
    are left out, as the published spatial protocol does, and get NaN). Without labels,
    ``n_clusters`` is required. Other keyword arguments are config keys (``epochs=100``, ``lr=1e-4``…);
    the generic defaults of ``task`` apply otherwise. Nothing is written to disk; use ``train.py --data FILE`` for a
    tracked run directory (``data``, ``output``, ``run_name``, ``seeds``, ``logger``, ``checkpoint_every``, ``resume`` are
    refused here). Cells are matched back by position, so duplicate ``obs_names`` are fine. What was changed about the input
    (``.raw`` read instead of a scaled X, empty cells dropped, fewer HVGs than asked) is warned and kept in
    ``adata.uns['scrcl']['notes']``. The session's random generators, deterministic-kernel setting, warning filters and
    environment are as they were afterwards. A backed AnnData is refused: pass ``adata.to_memory()``.

    Raises ``TypeError`` for anything but an AnnData, and :class:`scrcl.errors.UserError` (one sentence naming the
    argument) for a bad value.
    """
    import anndata as ad

    if not isinstance(adata, ad.AnnData):
        kind = f"{type(adata).__module__}.{type(adata).__qualname__}"
        raise TypeError(f"scrcl.fit takes an AnnData (cells x genes), got {kind}; wrap a matrix as anndata.AnnData(X)")
    if adata.isbacked:
        raise UserError(f"adata is backed by {adata.filename} (read with backed='r'); scrcl.fit trains on the whole "
                        "matrix in memory: pass adata.to_memory()")
    for key in _RUN_ON_DISK_KEYS:
        if config.get(key) is not None:
            raise UserError(f"{key}= has no effect in scrcl.fit (one seed, in memory, nothing written); for a run "
                            "directory use python train.py --data FILE")
    if seed is None or isinstance(seed, bool):
        raise UserError(f"seed must be a whole number (e.g. 5), got {seed!r}")
    with _session_state_kept():
        return _fit(adata, n_clusters, label_key, task, seed, config)


def _fit(adata, n_clusters, label_key, task, seed, config):
    import warnings

    import anndata as ad
    import numpy as np
    import pandas as pd

    from scrcl.train import run as runner

    # the caller's AnnData was built already, with anndata's warning about repeated gene names shown then; the copies
    # made here would repeat it several times (the filter ends with fit: _session_state_kept)
    warnings.filterwarnings("ignore", message=".*names are not unique.*")
    try:
        overrides = {**config, "n_clusters": n_clusters, "label_key": label_key, "seed": seed, "task": task}
        overrides.setdefault("logger", "none")
        overrides.setdefault("progress", False)
        cfg = resolve_config(task=task, overrides=overrides)
        # A view of the caller's data with positions for names (no copy of X): results go back by position.
        obs = adata.obs.copy()
        obs.index = pd.RangeIndex(adata.n_obs).astype(str)
        obsm = {k: v.set_axis(obs.index, axis=0) if isinstance(v, pd.DataFrame) else v for k, v in adata.obsm.items()}
        positional = ad.AnnData(X=adata.X, obs=obs, var=adata.var, obsm=obsm,
                                raw={"X": adata.raw.X, "var": adata.raw.var} if adata.raw is not None else None)
        datamodule = ScRCLDataModule.from_config(cfg, adata=positional)
        datamodule.setup("fit")
        outcome = runner.train_one(cfg, datamodule, cfg["seed"], run_dir=None)
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
    adata.obs["scrcl_cluster"] = pd.Categorical(labels, categories=[str(c) for c in sorted(set(clusters.tolist()))])  # 0, 1, 2, … 10
    notes = [_in_api_words(note) for note in datamodule.notes()]
    if task is None and datamodule.task == "sc" and "spatial" in adata.obsm:  # the command line's note for such a file
        notes.insert(0, "adata has spatial coordinates (obsm['spatial']) but runs as scRNA-seq (task='sc'); pass task='st' "
                        "for spatial domains")
    for note in notes:  # what the command line prints: .raw read instead of X, cells dropped, fewer HVGs than asked
        warnings.warn(f"scrcl.fit: {note}", UserWarning, stacklevel=_outside_scrcl())
    adata.uns["scrcl"] = {"scores": final["scores"], "n_clusters": int(datamodule.n_clusters), "notes": notes,
                          "config": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in cfg.items()
                                     if v is not None and not isinstance(v, dict) and k not in _RUN_ON_DISK_KEYS}}
    return adata
