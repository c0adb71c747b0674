"""Figures: UMAP of an embedding coloured by predicted cluster and by annotation."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from scrcl.atomic import atomic_path

UMAP_MAX_CELLS = 50_000  # above this the UMAP is fit on a subsample: the plot is for looking, not scoring


def umap_coordinates(embedding: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D UMAP of (a subsample of) the rows; returns (indices plotted, coordinates)."""
    import umap

    n = embedding.shape[0]
    idx = np.arange(n)
    if n > UMAP_MAX_CELLS:
        idx = np.sort(np.random.default_rng(seed).choice(n, UMAP_MAX_CELLS, replace=False))
    reducer = umap.UMAP(n_neighbors=15, min_dist=0.3, random_state=seed, n_jobs=1)
    with torch_threads_kept():
        return idx, reducer.fit_transform(embedding[idx])


@contextmanager
def torch_threads_kept():
    """Restore torch's CPU thread count afterwards. umap-learn's fit resets the process's OpenMP thread count
    to all cores (measured: torch went from 1 thread to 2 on this 2-core machine), so a training run would
    switch thread counts at its first UMAP; that changes its rounding (reproducibility) and oversubscribes the
    cores of a launcher's CPU lanes, which set ``OMP_NUM_THREADS`` per trial."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _scatter(ax, xy, values, title):
    values = np.asarray(values).astype(str)
    cats = sorted(set(values), key=lambda v: (len(v), v))
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, cat in enumerate(cats):
        m = values == cat
        ax.scatter(xy[m, 0], xy[m, 1], s=3, color=cmap(i % 20), label=cat, linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(cats) <= 25:
        ax.legend(markerscale=4, fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))


def save_figure(fig, path: Path) -> None:
    """Write a PNG atomically: a reader never sees half an image."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def umap_figure(embedding, pred, truth, path: Path, title: str = "", seed: int = 0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx, xy = umap_coordinates(embedding, seed)
    panels = [("predicted cluster", pred)] + ([("annotation", truth)] if truth is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels):
        _scatter(ax, xy, np.asarray(values)[idx], name)
    fig.suptitle(title)
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)
