"""What a finished run writes and prints: metrics.json, history.csv, result.h5ad, the summary over seeds, the last line.

One results writer for every run (``train.py``, the launchers' trials, the tables' runs).
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass
import resource
from importlib import metadata
from pathlib import Path

import numpy as np

from scrcl.atomic import atomic_path, atomic_write_text
from scrcl.errors import UserError
from scrcl.eval.metrics import SCORES

PACKAGES = ("torch", "lightning", "torch-geometric", "scanpy", "anndata", "scikit-learn", "numpy", "wandb")


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def code_version(root: Path | None = None) -> str:
    """The checkout's commit (short), with ``+changes`` when tracked files other than results differ from it;
    ``unknown`` outside git (e.g. an installed copy). ``root``: the checkout (default: this package's)."""
    import subprocess

    root = Path(__file__).resolve().parents[2] if root is None else Path(root).resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:  # e.g. installed in a venv inside another repo
            return "unknown"
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        # the results files a benchmark appends to are not code: a row written after another row is still clean
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results", ":(exclude)studies/results"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _selection(outcome: dict) -> dict:
    """How the reported evaluation was chosen; with a criterion, the final epoch's figures beside it (``final_*``)."""
    select = outcome.get("select", "final")
    if select == "final":
        return {}
    last, chosen = outcome["last"], outcome["final"]
    return {"selected_by": select, f"selected_{select}": float(chosen["internal"][select]),
            "final_epoch": int(last["epoch"]), **{f"final_{k}": float(v) for k, v in last["scores"].items()}}


def write_results(run_dir: Path, config: dict, datamodule, seed: int, outcome: dict, total_seconds: float) -> dict:
    """The one results writer: metrics.json, history.csv, result.h5ad."""
    import anndata as ad
    import pandas as pd

    final = outcome["final"]
    pred = final["pred"]
    sizes = np.bincount(pred, minlength=datamodule.n_clusters).tolist()
    metrics = {
        **{k: float(v) for k, v in final["scores"].items()},
        **outcome["oracle"],
        "epoch": int(final["epoch"]),
        **_selection(outcome),
        "seed": int(seed),
        "dataset": datamodule.provenance.get("dataset"),
        "task": datamodule.task,
        "n_cells": datamodule.n_cells,
        "n_genes": datamodule.n_genes,
        "n_clusters": datamodule.n_clusters,
        "cluster_sizes": sizes,
        "seconds": float(total_seconds),
        "train_seconds": float(outcome["train_seconds"]),
        "seconds_per_epoch": float(outcome["train_seconds"]) / max(int((outcome.get("last") or final)["epoch"]), 1),
        "train_started_at": outcome.get("train_started_at"),  # Unix time this process began training; None when a resume found it done
        "peak_memory_mb": peak_memory_mb(),
        "gpu_peak_memory_mb": outcome["gpu_peak_mb"],
        # On the CPU the same seed gives the same figures only at the same thread count: another count sums
        # in another order, and 500 epochs amplify the last-bit differences (README, "Reproducibility").
        "torch_threads": torch_threads(),
        "data": {**datamodule.provenance, **datamodule.prepared.uns["preprocess"], "setup": datamodule.timings},
        "versions": package_versions(),
        "code": code_version(),  # the commit the run was made with: a table reading old runs says which
    }
    write_json(run_dir / "metrics.json", metrics)
    if outcome["history"]:
        atomic_write_text(run_dir / "history.csv", pd.DataFrame(outcome["history"]).to_csv(index=False))
    prepared = datamodule.prepared
    result = ad.AnnData(
        X=prepared.layers["lognorm"],
        obs=prepared.obs.copy(),
        var=prepared.var.copy(),
    )
    result.obsm["X_scrcl"] = final["embedding"]
    result.obs["scrcl_cluster"] = pd.Categorical(pred.astype(str))
    if not np.array_equal(final["pred_unrefined"], pred):
        result.obs["scrcl_cluster_unrefined"] = pd.Categorical(final["pred_unrefined"].astype(str))
    if "spatial" in prepared.obsm:
        result.obsm["spatial"] = np.asarray(prepared.obsm["spatial"])
    with atomic_path(run_dir / "result.h5ad", suffix=".h5ad") as tmp:
        result.write_h5ad(tmp)
    return metrics


def summarise(metrics: list[dict]) -> dict:
    """Mean ± std (population std over the seeds) of each score across seeds."""
    out: dict = {"seeds": [m["seed"] for m in metrics], "n_runs": len(metrics)}
    keys = [k for k in metrics[0] if k in SCORES or k.endswith("_unrefined") or k.startswith(("oracle_", "final_"))
            and k != "final_epoch"]
    for key in keys:
        values = np.array([m[key] for m in metrics if key in m], dtype=float)
        out[key] = {"mean": float(values.mean()), "std": float(values.std()), "values": values.tolist()}
    return out


def conditions_text(runs, source: str) -> str:
    """The sentence a table states its runs' precision, device and torch threads in, from ``(config, metrics)`` pairs of
    finished runs: precision from the config, device and threads from metrics.json (a GPU run records its peak GPU
    memory there, a CPU run None); every value found when the runs differ, ``–`` when none says. ``source``: where
    the figures were read, shown in brackets."""
    runs = list(runs)

    def values(get) -> str:  # numbers in numeric order (2 before 10)
        found = {str(get(config, metrics)) for config, metrics in runs}
        return ", ".join(sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))) or "–"

    device = values(lambda c, m: "cpu" if m.get("gpu_peak_memory_mb") is None else "gpu")
    return (f"Precision {values(lambda c, m: c.get('precision', '–'))}; device {device}; torch threads "
            f"{values(lambda c, m: m.get('torch_threads', '–'))} ({source}).")


def spread_line(summary: dict) -> str | None:
    """For several seeds, the line before the last: each score's mean ± std and the seeds (the last line keeps its
    one-number-per-score form for scripts); None for one run."""
    if "n_runs" not in summary or "acc" not in summary:
        return None
    scores = "  ".join(f"{k.upper()} {summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}" for k in SCORES)
    return f"mean ± std (population) over seeds {', '.join(map(str, summary['seeds']))}: {scores}"


def final_line(metrics: dict) -> str:
    """The last line a run prints."""
    if "acc" in metrics:
        def get(k):
            v = metrics[k]
            return v["mean"] if isinstance(v, dict) else v

        return " ".join(f"{k.upper()} {get(k):.4f}" for k in SCORES)
    sizes = metrics.get("cluster_sizes")
    return "clusters " + " ".join(f"{i}:{n}" for i, n in enumerate(sizes)) if sizes else "no result"


# -- a finished run read back -------------------------------------------------------------------------
@dataclass
class FinishedRun:
    """A run directory read back: its result, its config, and its preprocessed input rebuilt."""

    run_dir: Path
    result: "AnnData"  # result.h5ad: obsm['X_scrcl'], obs['scrcl_cluster'], obs['label'] if labelled
    config: dict
    datamodule: "ScRCLDataModule"

    @property
    def seed(self) -> int:
        """The run's own seed (a seed directory's metrics.json; else the config's)."""
        import json

        metrics = self.run_dir / "metrics.json"
        if metrics.exists():
            return int(json.loads(metrics.read_text()).get("seed", 0))
        return int(self.config.get("seed") or 0)


def find_config(run_dir: Path) -> Path | None:
    """config.yaml of the run, or None; a seed directory of a multi-seed run (``seed15/``) keeps it one level up."""
    run_dir = Path(run_dir)
    candidates = [run_dir / "config.yaml"]
    if re.fullmatch(r"seed\d+", run_dir.name):
        candidates.append(run_dir.parent / "config.yaml")
    return next((c for c in candidates if c.exists()), None)


def _config_path(run_dir: Path) -> Path:
    path = find_config(run_dir)
    if path is None:
        raise UserError(f"{run_dir} has no config.yaml (nor its parent); give a run directory written by train.py")
    return path


def check_run_dir(run_dir: Path) -> None:
    """A finished run directory (result.h5ad in it), else one UserError saying what it is instead."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory; give a run directory written by train.py (runs/NAME)")
    if (run_dir / "result.h5ad").exists():
        return
    seeds = sorted(p.name for p in run_dir.glob("seed*") if (p / "result.h5ad").exists())
    if seeds:
        raise UserError(f"{run_dir} holds several seeds; give one of them, e.g. {run_dir / seeds[0]}")
    raise UserError(f"{run_dir} has no result.h5ad; is it a finished run directory?")


def load_run(run_dir: Path, data_dir: str | None = None) -> FinishedRun:
    """Read result.h5ad and config.yaml, and rebuild the run's preprocessed input (from the cache when
    it is there) through the same DataModule; raises UserError when they no longer belong together."""
    import anndata as ad

    from datamodules.datamodule import ScRCLDataModule
    from scrcl.train.config import resolve_config

    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    try:
        result = ad.read_h5ad(run_dir / "result.h5ad")
    except Exception as err:
        raise UserError(f"cannot read {run_dir / 'result.h5ad'} ({type(err).__name__}); is the run finished?") from None
    missing = [k for k, where in (("X_scrcl", result.obsm), ("scrcl_cluster", result.obs)) if k not in where]
    if missing:
        raise UserError(f"{run_dir / 'result.h5ad'} lacks {', '.join(missing)}; it was not written by train.py")
    overrides = {"progress": False, "data_dir": data_dir}
    config = resolve_config(config_file=str(_config_path(run_dir)), overrides=overrides)
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    prepared = datamodule.prepared
    if not (prepared.obs_names.equals(result.obs_names) and prepared.var_names.equals(result.var_names)):
        raise UserError(f"the input data of {run_dir} changed since the run (cells or genes differ); re-run training first")
    return FinishedRun(run_dir, result, config, datamodule)
