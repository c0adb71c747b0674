"""One training run from a resolved config: the Trainer with its callbacks, every seed, and what is kept.

Used by ``train.py`` (the command line), by :func:`scrcl.fit` (the Python API) and by the tables' runs.
A run directory holds ``config.yaml``, ``metrics.json``, ``result.h5ad``, ``history.csv``,
``umap_final.png``, ``checkpoints/last.ckpt`` and the loggers' files (``csv/``, ``wandb/``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import time
from pathlib import Path

import yaml

from scrcl.atomic import atomic_write_text
from scrcl.errors import Interrupted, UserError
from scrcl.train.loggers import make_loggers, quiet_libraries
from scrcl.train.module import build_module
from scrcl.train.results import final_line, summarise, write_json, write_results
from scrcl.train.rundir import OWNER, claim_run_dir, owner_state, resumable, resume_checkpoint, run_dir_for, take

_IN_FIT = False  # True while Lightning's fit loop runs: it handles SIGTERM itself (see train.py)


def training_in_progress() -> bool:
    return _IN_FIT


def _first_sentence(err: BaseException, limit: int = 160) -> str:
    """The first sentence of an error's message, whole (cut at a word when it runs past ``limit``)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else "damaged"
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _checkpoint_epoch(path: str) -> int:
    """The epoch a Lightning checkpoint was saved at (memory-mapped: the weights are not read). A damaged file is
    one UserError naming it."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["epoch"])
    except Exception as err:  # truncated (a copy cut short), not a checkpoint, another format
        raise UserError(f"checkpoint {path} cannot be read ({type(err).__name__}: {_first_sentence(err)}); "
                        f"it may be truncated: {_what_to_delete(Path(path))}, or start a new run") from None


def _what_to_delete(damaged: Path) -> str:
    """The advice for a damaged checkpoint: a ``last.ckpt`` of its own has the periodic checkpoint beside it to resume
    from; a damaged periodic one (or the link to it) leaves nothing, and the run trains again from its first epoch."""
    periodic = damaged.parent / "periodic.ckpt"
    if damaged.name.startswith("hpc_ckpt_"):  # a requeue's, in the run directory: the run's other checkpoints remain
        return "delete it and --resume continues from the run's previous checkpoint, if it has one"
    if damaged.name == "last.ckpt" and not damaged.is_symlink() and periodic.exists():
        return "delete it and --resume continues from the periodic checkpoint beside it"
    return f"delete {damaged.parent} and --resume trains the run again from its first epoch"


def train_one(config: dict, datamodule, seed: int, run_dir: Path | None, resume: bool = False) -> dict:
    """Train one model with one seed; returns the final result (scores, embedding, predictions)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from scrcl.train.callbacks import (AveragedWeights, ClusteringEvaluator, GracefulStop, InterruptCheckpoint, RandomStates,
                                       TrainClock, WeightScale)
    from scrcl.train.checkpoint_io import AtomicCheckpointIO

    quiet_libraries()
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule.setup("fit")
    module = build_module(config, datamodule.n_cells, datamodule.n_genes, datamodule.n_clusters)
    averaging = config.get("weight_averaging", "none")
    averaged = (AveragedWeights(averaging, decay=config.get("ema_decay", 0.98), start=config.get("average_from", 0.5))
                if averaging != "none" else None)
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
        select=config.get("select", "final"),
        averaged=averaged,
    )
    clock = TrainClock()
    stop = GracefulStop()
    # the averaged weights are updated after each step, before the evaluator reads them at the epoch's end
    callbacks = [*([averaged] if averaged is not None else []), evaluator, clock, stop, WeightScale(), RandomStates()]
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    if ckpt_dir is not None:
        callbacks += [
            # One rolling periodic checkpoint (at d = 1500 each is ~170 MB with Adam's state); last.ckpt links to it.
            ModelCheckpoint(dirpath=str(ckpt_dir), filename="periodic", save_top_k=1, save_last="link", enable_version_counter=False,
                            every_n_epochs=config["checkpoint_every"], save_on_train_epoch_end=True),
            InterruptCheckpoint(ckpt_dir / "last.ckpt"),  # a signal: last.ckpt of the epoch just finished
        ]
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    found = resume_checkpoint(run_dir) if resume and run_dir is not None else None  # a requeue's, a signal's, a periodic one
    ckpt_path = str(found) if found is not None else None
    try:
        trainer = L.Trainer(
            max_epochs=config["epochs"],
            accelerator=config.get("accelerator", "auto"),
            devices=config.get("devices", 1),
            precision=config.get("precision", "32-true"),
            logger=make_loggers(config, run_dir, seed, _checkpoint_epoch(ckpt_path) if ckpt_path else None) if run_dir is not None else False,
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
        signum = stop.signum or signal.SIGTERM
        _finish_wandb(trainer, exit_code=128 + signum)  # marked as stopped (it said exit 0), before the line that says so
        raise Interrupted(signum, trainer.current_epoch, run_dir) from None
    finally:
        _IN_FIT = False
    seconds = clock.seconds()  # including the seconds before a resume
    if evaluator.final is None:  # e.g. resuming a run whose training had already finished
        result, scores = evaluator.cluster(module, averaged.network() if averaged is not None else None)
        evaluator.final = {"epoch": trainer.current_epoch, "scores": scores, **result}
    if ckpt_dir is not None:
        trainer.save_checkpoint(str(ckpt_dir / "last.ckpt"))
    final = evaluator.reported()  # the final epoch, or the evaluation chosen by ``select`` (no labels)
    _finish_wandb(trainer, summary=_reported_summary(final, evaluator))  # now: its sign-off before our result line
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "final": final,
        "last": evaluator.final,
        "select": evaluator.select,
        "history": evaluator.history,
        "oracle": evaluator.oracle(),
        "train_seconds": seconds,
        "seconds_before_resume": clock.before,
        "train_started_at": clock.started_at,
        "epoch_seconds": list(clock.epoch_seconds),
        "gpu_peak_mb": gpu_peak,
        "module": module,
    }


def _finish_wandb(trainer, *, summary: dict | None = None, exit_code: int = 0) -> None:
    """End the W&B run (if any), with the reported figures in its summary or the exit status of a stopped run."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", True) is not None:  # started
            if summary:
                logger.experiment.summary.update(summary)
            logger.experiment.finish(exit_code=exit_code)


def _reported_summary(final: dict, evaluator) -> dict:
    """What the run reports, for the W&B summary (whose ``val/*`` hold the last evaluation logged, the final epoch's):
    ``reported/*`` the evaluation metrics.json reports (the final epoch, or the one the label-free ``select`` chose),
    ``final/*`` the final epoch's, and the best-by-label figures under their ``oracle_`` names."""
    out = {f"reported/{k}": float(v) for k, v in final["scores"].items()}
    out["reported/epoch"] = int(final["epoch"])
    out["reported/selected_by"] = evaluator.select if final is not evaluator.final else "final epoch"
    out.update({f"final/{k}": float(v) for k, v in (evaluator.final or {}).get("scores", {}).items()})
    out.update({k: v for k, v in evaluator.oracle().items() if k.startswith("oracle_")})
    return out


def _undo(made: Path, keep_folder: bool) -> None:
    """What a failed run created goes: ``made`` and everything in it, or, when ``made`` is an empty folder the user had
    made for the run, only what is in it."""
    if not keep_folder:
        shutil.rmtree(made, ignore_errors=True)
        return
    for child in made.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def check_accelerator(accelerator: str, precision: str = "32-true", cuda: bool | None = None) -> None:
    """The accelerator and precision can run here (``cuda``: whether a CUDA GPU is visible; None: ask torch)."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if accelerator in ("gpu", "cuda") and not cuda:
        raise UserError(f"--accelerator {accelerator} but torch sees no GPU on this machine; use --accelerator cpu or auto")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise UserError("--accelerator mps but torch sees no Apple GPU on this machine; use --accelerator cpu or auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not (cuda or torch.backends.mps.is_available()))
    if precision == "16-mixed" and on_cpu:
        # Lightning runs it as bf16-mixed with a warning, and the run's records would say 16-mixed
        raise UserError("--precision 16-mixed (float16) needs a GPU; on the CPU use --precision bf16-mixed")


def run(config: dict, *, adata=None, resume_dir: Path | None = None, log=print) -> dict:
    """Every seed of a config; writes each run directory and, for several seeds, a summary.

    The run directory is claimed before any data is read. If the run fails before it has a checkpoint to
    resume from, the directory is removed again, so it never blocks the same ``--run-name``."""
    t_start = time.perf_counter()
    seeds = config.get("seeds") or [config["seed"]]
    made = None  # what to remove if the run fails before it can be resumed: the run dir and any parent it created
    kept = False  # the user's own (empty) --run-name folder: emptied again, not removed
    if resume_dir is not None:
        root = Path(resume_dir)
    else:
        wanted = run_dir_for(config)
        missing = [d for d in (wanted, *wanted.parents) if not d.exists()]
        root = claim_run_dir(wanted, named=bool(config.get("run_name")))
        made = missing[-1] if missing and missing[-1] != wanted else root
        kept = root == wanted and not missing
    owner = root / OWNER  # this process runs here until it returns: a launcher never clears a directory in use
    if not take(owner):
        raise UserError(f"{root} is being run by {owner_state(owner)[1]}; wait for it to finish or stop it, then --resume {shlex.quote(str(root))}")
    try:
        quiet_libraries()
        check_accelerator(config.get("accelerator", "auto"), str(config.get("precision", "32-true")))  # before the data: preprocessing can take minutes
        from datamodules.datamodule import ScRCLDataModule

        datamodule = ScRCLDataModule.from_config(config, adata)
        datamodule.setup("fit")  # bad input fails here, before anything but the claim is written
        log(datamodule.summary())
        for note in datamodule.notes():
            log(f"note: {note}")
        atomic_write_text(root / "config.yaml", yaml.safe_dump({k: v for k, v in config.items() if k != "resume"}, sort_keys=True))
        all_metrics = _run_seeds(config, datamodule, seeds, root, resume_dir, log)
    except (Interrupted, KeyboardInterrupt) as err:  # a signal: resumable if a checkpoint exists, else nothing kept
        signum, epoch = (err.signum, err.epoch) if isinstance(err, Interrupted) else (signal.SIGINT, None)
        if made is not None and not resumable(root):
            _undo(made, kept)
            raise Interrupted(signum) from None
        raise Interrupted(signum, epoch, root) from None
    except BaseException:
        if made is not None and not resumable(root):  # nothing to resume: leave nothing half-written behind
            _undo(made, kept)
        raise
    finally:
        owner.unlink(missing_ok=True)
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
        chosen = f"; epoch {metrics['epoch']} by {metrics['selected_by']}" if "selected_by" in metrics else ""
        log(f"seed {seed}: {final_line(metrics)}  ({metrics['train_seconds']:.1f}s{chosen}, run dir {run_dir})")
        all_metrics.append(metrics)
    return all_metrics
