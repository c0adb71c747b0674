"""Run directories: where a run writes (``--output``/``--run-name``), claimed atomically before any data is read.

A run claims its directory by creating ``config.yaml`` exclusively (holding host and pid until the resolved config
replaces it), so two runs never share one; a claim left by a process of this host that is gone is taken over.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from scrcl.errors import UserError, nearest_existing

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
    existing = nearest_existing(root.parent)  # the nearest part of --output that exists must be a directory
    if not existing.is_dir():
        raise UserError(f"--output {root.parent}: {existing} is a file, not a directory; choose another --output")
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
                    f"or continue it with --resume {shlex.quote(str(root))}")


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``--resume`` continues a run from: the newest ``hpc_ckpt_N.ckpt`` (Lightning's, on SLURM's requeue
    signal, in the run directory; newer than any other), else ``checkpoints/last.ckpt`` (a signal's, or a link to the
    newest periodic one), else ``checkpoints/periodic.ckpt`` (what is left once a damaged ``last.ckpt`` was deleted);
    None without any."""
    run_dir = Path(run_dir)
    hpc = sorted(run_dir.glob("hpc_ckpt_*.ckpt"), key=lambda f: int(f.stem.rsplit("_", 1)[1]) if f.stem.rsplit("_", 1)[1].isdigit() else -1)
    if hpc:
        return hpc[-1]
    ckpt_dir = run_dir / "checkpoints"
    return next((ckpt_dir / name for name in ("last.ckpt", "periodic.ckpt") if (ckpt_dir / name).exists()), None)


def resumable(root: Path) -> bool:
    return any(resume_checkpoint(d.parent) for d in root.glob("**/checkpoints")) or any(root.glob("**/hpc_ckpt_*.ckpt"))


# -- who is running in a directory -----------------------------------------------------------------------------------
OWNER = ".owner"  # "host pid" of the process running in a run directory (or holding a launcher's trial), while it runs


def owner_text() -> str:
    import socket

    return f"{socket.gethostname()} {os.getpid()}"


def owner_state(path: Path) -> tuple[str, str]:
    """Who holds ``path`` (a run directory's ``.owner`` or a launcher's lock file): ``("none", "")`` when nobody,
    ``("alive", who)`` for a live process of this host, ``("gone", who)`` for one of this host that has exited, and
    ``("elsewhere", who)`` for a process of another host, which this host cannot see and never takes over."""
    import socket

    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return "none", ""
    except OSError:
        return "alive", "an unreadable owner file"  # never clear what cannot be checked
    host, _, pid = text.rpartition(" ")
    if not host or not pid.isdigit():
        return "alive", f"an owner file holding {text!r}"
    if host != socket.gethostname():
        return "elsewhere", f"pid {pid} on {host}"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "gone", f"pid {pid} on {host}"
    except PermissionError:
        pass  # a live process of another user
    return "alive", f"pid {pid} on {host}"


def take(path: Path) -> bool:
    """Create ``path`` exclusively holding this host and pid; take it over only from a process of this host that has
    exited. False while a live process, or any process of another host, holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if owner_state(path)[0] != "gone":
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(owner_text() + "\n")
        return True
    return False
