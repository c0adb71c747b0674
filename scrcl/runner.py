"""One training run from a resolved config: Trainer, loggers, callbacks, and the results writer.

Used by ``train.py`` (the command line) and by :func:`scrcl.fit` (the Python API).
A run directory holds ``config.yaml``, ``metrics.json``, ``result.h5ad``, ``history.csv``,
``umap_final.png``, ``checkpoints/last.ckpt`` and the loggers' files (``csv/``, ``wandb/``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import yaml

from scrcl.atomic import atomic_path, atomic_write_text
from scrcl.errors import Interrupted, UserError
from scrcl.metrics import SCORES

_USER_SET_WANDB_CACHE = "WANDB_CACHE_DIR" in os.environ
_IN_FIT = False  # True while Lightning's fit loop runs: it handles SIGTERM itself (see train.py)


def training_in_progress() -> bool:
    return _IN_FIT


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


def quiet_libraries() -> None:
    """Keep the console for what matters: Lightning's banners and known-harmless warnings go."""
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (
        ".*Sparse CSR tensor support is in beta.*",
        ".*Sparse invariant checks.*",
        ".*does not have many workers.*",
        ".*val_dataloader.*but have no .validation_step.*",  # evaluation runs in a callback
        ".*isinstance.treespec, LeafSpec.*",
        ".*weights_only.*",
        # A run directory is only ever reused by --resume (new runs claim a fresh one), so these are expected:
        ".*Experiment logs directory .* exists and is not empty.*",
        ".*Checkpoint directory .* exists and is not empty.*",
    ):
        warnings.filterwarnings("ignore", message=message)


def make_datamodule(config: dict, adata=None):
    from datamodules.datamodule import ScRCLDataModule

    return ScRCLDataModule(
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
        cache=config.get("cache", True),
        progress=config.get("progress", True),
    )


def _checkpoint_epoch(path: str) -> int:
    """The epoch a Lightning checkpoint was saved at (memory-mapped: the weights are not read). A damaged file is
    one UserError naming it."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["epoch"])
    except Exception as err:  # truncated (a copy cut short), not a checkpoint, another format
        raise UserError(f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else 'damaged'}); "
                        "it may be truncated: delete it to resume from the periodic checkpoint beside it, or start a new run") from None


def _keep_csv_rows(csv_logger, last_epoch: int) -> None:
    """On resume, keep the CSV log's rows up to the checkpoint's epoch. Lightning's CSV writer deletes
    an existing ``metrics.csv`` when it starts; without this a resumed run's loss log would begin at
    the resumed epoch. Rows of epochs after the checkpoint (run again now) are dropped."""
    import csv
    import io

    from lightning.fabric.utilities.rank_zero import rank_zero_only

    path = Path(csv_logger.log_dir) / "metrics.csv"
    if rank_zero_only.rank != 0 or not path.exists():
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [r for r in reader if (r.get("epoch") or "").strip() and int(float(r["epoch"])) <= last_epoch]
        keys = list(reader.fieldnames or [])
    writer = csv_logger.experiment  # creating the writer removes the old file
    if not rows or not hasattr(writer, "metrics_keys"):
        return
    writer.metrics_keys = keys
    text = io.StringIO()
    out = csv.DictWriter(text, fieldnames=keys)
    out.writeheader()
    out.writerows(rows)
    atomic_write_text(path, text.getvalue())


def _loggers(config: dict, run_dir: Path, seed: int, resume_epoch: int | None = None):
    from lightning.pytorch.loggers import CSVLogger

    # One row per epoch, written as it comes (flushed every step: one step per epoch), so that a killed
    # run's log survives up to its last checkpoint and a resume continues it.
    csv_logger = CSVLogger(save_dir=str(run_dir), name="csv", version="", flush_logs_every_n_steps=1)
    if resume_epoch is not None:
        _keep_csv_rows(csv_logger, resume_epoch)
    loggers = [csv_logger]
    if config.get("logger") == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; `wandb sync` uploads later
        if not _USER_SET_WANDB_CACHE:  # W&B's own debug logs (wandb-core) go under the run, not ~/.cache/wandb
            os.environ["WANDB_CACHE_DIR"] = str(run_dir / "wandb" / "cache")
        if os.environ.get("WANDB_MODE") != "disabled":
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(
                WandbLogger(
                    project=os.environ.get("WANDB_PROJECT", "scrcl"),
                    name=f"{run_dir.parent.name}-{run_dir.name}" if run_dir.name.startswith("seed") else run_dir.name,
                    group=config.get("wandb_group") or run_dir.parent.name,
                    save_dir=str(run_dir),
                    config={**{k: v for k, v in config.items()}, "seed": seed},
                )
            )
    return loggers


def build_module(config: dict, datamodule):
    """The LightningModule of a resolved config for a set-up DataModule (every run, benchmark and analysis)."""
    from scrcl.module import ScRCLModule

    return ScRCLModule(
        n_cells=datamodule.n_cells, n_genes=datamodule.n_genes, n_clusters=datamodule.n_clusters,
        hidden_dim=config["hidden_dim"], gene_dim=config.get("gene_dim"), dropout=config["dropout"],
        alpha=config["alpha"], beta=config["beta"], tau=config["tau"], hea_weight=config["hea_weight"],
        loss_impl=config["loss_impl"], lr=config["lr"], weight_decay=config["weight_decay"],
        optimizer=config.get("optimizer", "adam"), views=config.get("views", "both"), refine=config.get("refine", True),
    )


def train_one(config: dict, datamodule, seed: int, run_dir: Path | None, resume: bool = False) -> dict:
    """Train one model with one seed; returns the final result (scores, embedding, predictions)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from scrcl.callbacks import ClusteringEvaluator, GracefulStop, InterruptCheckpoint, TrainClock
    from scrcl.checkpoint_io import AtomicCheckpointIO

    quiet_libraries()
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule.setup("fit")
    module = build_module(config, datamodule)
    evaluator = ClusteringEvaluator(
        datamodule.batch,
        datamodule.n_clusters,
        seed=seed,
        every=config["eval_every"],
        run_dir=run_dir,
        umap_every=config.get("umap_every", 5) if run_dir is not None else 0,
        umap=config.get("umap", True),
        radius=config.get("radius", 0) if datamodule.task == "st" else 0,
        label_names=datamodule.label_names,
        # no progress bar (e.g. a launcher's trial writing to a log file): one line per evaluation instead
        echo=(lambda line: print(line, flush=True)) if run_dir is not None and not config.get("progress", True) else None,
    )
    clock = TrainClock()
    stop = GracefulStop()
    callbacks = [evaluator, clock, stop]
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    if ckpt_dir is not None:
        callbacks += [
            # One rolling periodic checkpoint (at d = 1500 each is ~170 MB with Adam's state); last.ckpt links to it.
            ModelCheckpoint(dirpath=str(ckpt_dir), filename="periodic", save_top_k=1, save_last="link", enable_version_counter=False,
                            every_n_epochs=config["checkpoint_every"], save_on_train_epoch_end=True),
            InterruptCheckpoint(ckpt_dir / "last.ckpt"),  # a signal: last.ckpt of the epoch just finished
        ]
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    ckpt_path = None
    if resume and ckpt_dir is not None and (ckpt_dir / "last.ckpt").exists():
        ckpt_path = str(ckpt_dir / "last.ckpt")
    hpc = sorted(run_dir.glob("hpc_ckpt_*.ckpt"), key=lambda f: int(f.stem.rsplit("_", 1)[1])) if resume and run_dir else []
    if hpc:  # saved by Lightning on SLURM's requeue signal (SIGUSR1), newer than any periodic checkpoint
        ckpt_path = str(hpc[-1])
    try:
        trainer = L.Trainer(
            max_epochs=config["epochs"],
            accelerator=config.get("accelerator", "auto"),
            devices=config.get("devices", 1),
            precision=config.get("precision", "32-true"),
            logger=_loggers(config, run_dir, seed, _checkpoint_epoch(ckpt_path) if ckpt_path else None) if run_dir is not None else False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],  # a kill while a checkpoint is written leaves the previous one loadable
            log_every_n_steps=1,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            enable_progress_bar=bool(config.get("progress", True)),
            enable_model_summary=False,
            enable_checkpointing=ckpt_dir is not None,
            default_root_dir=str(run_dir) if run_dir is not None else None,
            deterministic="warn" if config.get("deterministic", True) else False,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot set up training ({text}); check --accelerator, --devices and --precision") from None
    global _IN_FIT
    _IN_FIT = True
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:  # Lightning's stop after a signal (SystemExit(None): it would exit 0)
        raise Interrupted(stop.signum or signal.SIGTERM, trainer.current_epoch, run_dir) from None
    finally:
        _IN_FIT = False
    seconds = clock.seconds()  # including the seconds before a resume
    if evaluator.final is None:  # e.g. resuming a run whose training had already finished
        result, scores = evaluator.cluster(module)
        evaluator.final = {"epoch": trainer.current_epoch, "scores": scores, **result}
    if ckpt_dir is not None:
        trainer.save_checkpoint(str(ckpt_dir / "last.ckpt"))
    for logger in trainer.loggers:  # close W&B now, so its sign-off is not printed after our result line
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()
    final = evaluator.final
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "final": final,
        "history": evaluator.history,
        "oracle": evaluator.oracle(),
        "train_seconds": seconds,
        "seconds_before_resume": clock.before,
        "gpu_peak_mb": gpu_peak,
        "module": module,
    }


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


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
        "seed": int(seed),
        "dataset": datamodule.provenance.get("dataset"),
        "task": datamodule.task,
        "n_cells": datamodule.n_cells,
        "n_genes": datamodule.n_genes,
        "n_clusters": datamodule.n_clusters,
        "cluster_sizes": sizes,
        "seconds": float(total_seconds),
        "train_seconds": float(outcome["train_seconds"]),
        "seconds_per_epoch": float(outcome["train_seconds"]) / max(int(final["epoch"]), 1),
        "peak_memory_mb": peak_memory_mb(),
        "gpu_peak_memory_mb": outcome["gpu_peak_mb"],
        # On the CPU the same seed gives the same figures only at the same thread count: another count sums
        # in another order, and 500 epochs amplify the last-bit differences (README, "Reproducibility").
        "torch_threads": torch_threads(),
        "data": {**datamodule.provenance, **datamodule.prepared.uns["preprocess"], "setup": datamodule.timings},
        "versions": package_versions(),
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
    keys = [k for k in metrics[0] if k in SCORES or k.endswith("_unrefined") or k.startswith("oracle_")]
    for key in keys:
        values = np.array([m[key] for m in metrics if key in m], dtype=float)
        out[key] = {"mean": float(values.mean()), "std": float(values.std()), "values": values.tolist()}
    return out


def final_line(metrics: dict) -> str:
    """The last line a run prints."""
    if "acc" in metrics:
        def get(k):
            v = metrics[k]
            return v["mean"] if isinstance(v, dict) else v

        return " ".join(f"{k.upper()} {get(k):.4f}" for k in SCORES)
    sizes = metrics.get("cluster_sizes")
    return "clusters " + " ".join(f"{i}:{n}" for i, n in enumerate(sizes)) if sizes else "no result"


def run_dir_for(config: dict) -> Path:
    """``--output``/``--run-name`` (default: ``<data>-<date>-<time>``). The name must stay inside ``--output``."""
    name = config.get("run_name")
    if name is not None:
        parts = Path(str(name)).parts
        if not parts or Path(str(name)).is_absolute() or ".." in parts:
            raise UserError(f"--run-name {name!r} must be a name inside --output (no absolute path, no '..'); "
                            "choose the parent directory with --output")
    else:
        name = f"{config.get('dataset') or Path(str(config.get('data'))).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(config.get("output") or "runs") / name


CLAIM = "config.yaml"  # created exclusively when a run claims its directory, then filled with the resolved config


CLAIM_LINE = "# claimed by host {host} pid {pid}; the resolved config follows once the data are loaded\n"


def _claim(directory: Path, retake_stale: bool = True) -> bool:
    """Create ``directory/config.yaml`` exclusively, holding this host and pid: True if this process now owns the
    directory. A claim left by a process of this host that is gone (killed while loading the data) is taken over."""
    import socket

    path = directory / CLAIM
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if retake_stale and _stale_claim(path, socket.gethostname()):
            path.unlink(missing_ok=True)
            return _claim(directory, retake_stale=False)
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(CLAIM_LINE.format(host=socket.gethostname(), pid=os.getpid()))
    return True


def _stale_claim(path: Path, host: str) -> bool:
    import re

    try:
        text = path.read_text()
    except OSError:
        return False
    found = re.fullmatch(r"# claimed by host (\S+) pid (\d+);[^\n]*\n", text)
    if not found or found[1] != host:  # a real config, or another machine's claim: never taken over
        return False
    try:
        os.kill(int(found[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim_run_dir(root: Path, named: bool) -> Path:
    """Claim a run directory before any data is read, atomically: two runs can never share one.

    A name the user gave is claimed as is (an empty directory of that name is fine); a second run given the same
    name while the first holds it is refused with one line. An automatic name (data + start time to the second)
    taken by another run in the same second becomes ``NAME-2``, ``NAME-3``, ... An ``--output`` that is a file or
    cannot be written is one line naming it."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        if named:
            if root.exists() and not root.is_dir():
                raise UserError(f"{root} exists and is not a directory; choose another --run-name or --output")
            root.mkdir(exist_ok=True)
            if _claim(root):
                if len(list(root.iterdir())) > 1:  # files of something else: never mix a run into them
                    (root / CLAIM).unlink()
                    raise UserError(f"run directory {root} exists already and is not empty; choose another --run-name/--output")
                return root
        else:
            for i in range(1, 10_000):
                candidate = root if i == 1 else root.with_name(f"{root.name}-{i}")
                try:
                    candidate.mkdir()
                except FileExistsError:
                    continue
                if _claim(candidate):
                    return candidate
            raise UserError(f"could not create a new run directory beside {root}; pass --run-name or another --output")
    except NotADirectoryError:
        raise UserError(f"--output {root.parent}: a part of that path is a file, not a directory; choose another --output") from None
    except PermissionError:
        raise UserError(f"cannot write run directories under {root.parent} (permission denied); choose another --output") from None
    except OSError as err:
        raise UserError(f"cannot create the run directory {root} ({err.strerror or err}); choose another --output") from None
    raise UserError(f"run directory {root} is taken by another run (it holds a config.yaml); choose another --run-name, "
                    f"or continue it with --resume {root}")


def resumable(root: Path) -> bool:
    return any(root.glob("**/checkpoints/last.ckpt")) or any(root.glob("**/hpc_ckpt_*.ckpt"))


def run(config: dict, *, adata=None, resume_dir: Path | None = None, log=print) -> dict:
    """Every seed of a config; writes each run directory and, for several seeds, a summary.

    The run directory is claimed before any data is read. If the run fails before it has a checkpoint to
    resume from, the directory is removed again, so it never blocks the same ``--run-name``."""
    t_start = time.perf_counter()
    seeds = config.get("seeds") or [config["seed"]]
    made = None  # what to remove if the run fails before it can be resumed: the run dir and any parent it created
    if resume_dir is not None:
        root = Path(resume_dir)
    else:
        wanted = run_dir_for(config)
        missing = [d for d in (wanted, *wanted.parents) if not d.exists()]
        root = claim_run_dir(wanted, named=bool(config.get("run_name")))
        made = missing[-1] if missing and missing[-1] != wanted else root
    try:
        quiet_libraries()
        datamodule = make_datamodule(config, adata)
        datamodule.setup("fit")  # bad input fails here, before anything but the claim is written
        log(datamodule.summary())
        for note in datamodule.notes():
            log(f"note: {note}")
        atomic_write_text(root / "config.yaml", yaml.safe_dump({k: v for k, v in config.items() if k != "resume"}, sort_keys=True))
        all_metrics = _run_seeds(config, datamodule, seeds, root, resume_dir, log)
    except (Interrupted, KeyboardInterrupt) as err:  # a signal: resumable if a checkpoint exists, else nothing kept
        signum, epoch = (err.signum, err.epoch) if isinstance(err, Interrupted) else (signal.SIGINT, None)
        if made is not None and not resumable(root):
            shutil.rmtree(made, ignore_errors=True)
            raise Interrupted(signum) from None
        raise Interrupted(signum, epoch, root) from None
    except BaseException:
        if made is not None and not resumable(root):  # nothing to resume: leave nothing half-written behind
            shutil.rmtree(made, ignore_errors=True)
        raise
    if len(seeds) > 1:
        summary = summarise(all_metrics)
        summary["seconds"] = time.perf_counter() - t_start
        write_json(root / "summary.json", summary)
        return {"run_dir": root, "metrics": all_metrics, "summary": summary, "datamodule": datamodule}
    return {"run_dir": root, "metrics": all_metrics, "summary": all_metrics[0], "datamodule": datamodule}


def _run_seeds(config: dict, datamodule, seeds: list[int], root: Path, resume_dir, log) -> list[dict]:
    all_metrics = []
    for seed in seeds:
        run_dir = root if len(seeds) == 1 else root / f"seed{seed}"
        if resume_dir is not None and (run_dir / "metrics.json").exists():
            all_metrics.append(json.loads((run_dir / "metrics.json").read_text()))
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        outcome = train_one(config, datamodule, seed, run_dir, resume=resume_dir is not None)
        setup_s = datamodule.timings.get("setup_s", 0) if seed == seeds[0] else 0
        total_s = time.perf_counter() - t0 + setup_s + outcome["seconds_before_resume"]
        metrics = write_results(run_dir, config, datamodule, seed, outcome, total_s)
        log(f"seed {seed}: {final_line(metrics)}  ({metrics['train_seconds']:.1f}s, run dir {run_dir})")
        all_metrics.append(metrics)
    return all_metrics
