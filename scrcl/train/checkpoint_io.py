"""Checkpoints written atomically beside their target: a kill mid-write leaves the previous one loadable.

Lightning's ``TorchCheckpointIO`` serialises the checkpoint into memory, then writes it through an
fsspec transaction. For a local path that transaction writes a temporary file in the *system* temp
directory (``$TMPDIR``, often a small node-local ``/tmp`` on a cluster) and then ``shutil.move``s it
onto the target. When the run directory is on another filesystem (NFS, Lustre, a scratch volume)
that move is a copy onto the target itself, so a job killed during it (a pre-empted or timed-out
batch job) leaves a truncated ``periodic.ckpt``; ``last.ckpt`` links to it and ``--resume`` fails.
A full ``$TMPDIR`` fails the save outright (at d = 1500 a checkpoint is about 170 MB).

:class:`AtomicCheckpointIO` writes to a temporary file in the target's own directory and renames it
onto the target (``os.replace``, atomic on one filesystem). Remote paths (``s3://`` ...) keep
Lightning's own handling.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from scrcl.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path, suffix=".tmp") as tmp:
            torch.save(checkpoint, tmp)
