"""Sending SIGTERM to a real command while its child trains, and finding a child that outlived it (through /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def sigterm_while_training(proc: subprocess.Popen, training: Callable[[], bool], marker: str, what: str) -> tuple[str, list[int]]:
    """Wait until ``training()`` (at most 240 s), send ``proc`` SIGTERM and wait for it. Returns its stderr and the
    processes still running whose command line holds ``marker`` (killed here, so a failing test leaves none training)."""
    try:
        deadline = time.monotonic() + 240
        while not training():
            assert proc.poll() is None and time.monotonic() < deadline, f"the {what} did not start training"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        time.sleep(1)
        left = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _holds(p, marker)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    return stderr, left


def _holds(proc_dir: Path, text: str) -> bool:
    try:
        return text.encode() in (proc_dir / "cmdline").read_bytes()
    except OSError:  # the process ended meanwhile, or is not ours to read
        return False
