"""The run's loggers: a CSV log always (continued on resume), and an offline W&B run unless ``--logger csv|none``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from scrcl.atomic import atomic_write_text

_USER_SET_WANDB_CACHE = "WANDB_CACHE_DIR" in os.environ

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


def make_loggers(config: dict, run_dir: Path, seed: int, resume_epoch: int | None = None):
    from lightning.pytorch.loggers import CSVLogger

    # One row per epoch, written as it comes (flushed every step: one step per epoch), so that a killed
    # run's log survives up to its last checkpoint and a resume continues it.
    csv_logger = CSVLogger(save_dir=str(run_dir), name="csv", version="", flush_logs_every_n_steps=1)
    if resume_epoch is not None:
        _keep_csv_rows(csv_logger, resume_epoch)
    loggers = [csv_logger]
    if config.get("logger") == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; `wandb sync` uploads later
        if os.environ.get("WANDB_MODE") != "disabled":
            if not _USER_SET_WANDB_CACHE:  # W&B's own debug logs (wandb-core) go under the run, not ~/.cache/wandb
                os.environ["WANDB_CACHE_DIR"] = str(run_dir / "wandb" / "cache")
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(
                WandbLogger(
                    project=os.environ.get("WANDB_PROJECT", "scrcl"),
                    name=f"{run_dir.parent.name}-{run_dir.name}" if run_dir.name.startswith("seed") else run_dir.name,
                    group=config.get("wandb_group") or run_dir.parent.name,
                    save_dir=str(run_dir),
                    config={**{k: v for k, v in config.items()}, "seed": seed},
                    **_wandb_identity(run_dir, resume_epoch is not None),
                )
            )
    return loggers


def _wandb_identity(run_dir: Path, resuming: bool) -> dict:
    """The W&B run id, kept in RUN/wandb/run_id: a resumed run continues its W&B run (its steps following on from the
    checkpoint's) instead of opening a second one of the same name; a new run gets a new id."""
    path = Path(run_dir) / "wandb" / "run_id"
    if resuming and path.is_file():
        kept = path.read_text().strip()
        if kept:
            return {"id": kept, "resume": "allow"}  # (Lightning's default too; said here, where it matters)
    import secrets
    import string

    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's own id form
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, run_id + "\n")
    return {"id": run_id}


