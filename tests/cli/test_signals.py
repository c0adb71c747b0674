"""Signals and concurrent runs through the real entry point, in subprocesses: what a batch system sees.

SIGTERM (``kill``, ``docker stop``, SLURM pre-emption) and Ctrl-C end training after the current epoch with a
checkpoint of it, print how to continue, and exit 143 / 130; a run continued from there ends bit for bit where an
uninterrupted run ends. Two runs never share a run directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--dataset", "pbmc68k", "--epochs", "30", "--hidden-dim", "32", "--no-umap", "--no-progress", "--eval-every", "5"]


def env(tmp_path, data_dir, **extra) -> dict:
    return {**os.environ, "SCRCL_DATA_DIR": str(data_dir), "SCRCL_CACHE_DIR": str(tmp_path / "cache"),
            "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", **extra}


def _interruptible():
    """In the child: SIGINT as a terminal gives it. A test run started in the background of a non-interactive shell
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt (by design: Ctrl-C is not for that job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path, data_dir, name, *extra, **environ) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *ARGS, "--output", str(tmp_path / "runs"),
                             "--run-name", name, *extra], cwd=ROOT, env=env(tmp_path, data_dir, **environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_interruptible)


def signal_when(proc: subprocess.Popen, signum: int, line_part: str | None) -> tuple[int, str]:
    """Send ``signum`` once a line containing ``line_part`` was printed (None: after 1 s, during start-up: the imports
    of torch, Lightning and scanpy alone take longer; at 2 s a quiet machine had already started training)."""
    out = ""
    if line_part is None:
        time.sleep(1)
    else:
        for line in proc.stdout:
            out += line
            if line_part in line:
                break
    proc.send_signal(signum)
    rest, _ = proc.communicate(timeout=300)
    return proc.returncode, (out + rest).strip()


def embedding(run_dir: Path) -> np.ndarray:
    return ad.read_h5ad(run_dir / "result.h5ad").obsm["X_scrcl"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("whole")
    proc = start(tmp, data_dir, "whole")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return embedding(tmp / "runs" / "whole")


def test_sigterm_ends_after_the_epoch_and_a_slurm_requeue_continues_bit_for_bit(tmp_path, data_dir, uninterrupted):
    code, out = signal_when(start(tmp_path, data_dir, "t"), signal.SIGTERM, "epoch 10/30")
    run_dir = tmp_path / "runs" / "t"
    assert code == 143, out
    last = out.splitlines()[-1]
    assert last.startswith("interrupted (SIGTERM) at epoch ") and last.endswith(f"continue with: python train.py --resume {run_dir}")
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and not (run_dir / "metrics.json").exists()
    assert "Traceback" not in out
    # SLURM requeues the job with the same command line: it continues the run instead of refusing the name
    proc = start(tmp_path, data_dir, "t", SLURM_RESTART_COUNT="1")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert f"SLURM restart 1: continuing {tmp_path / 'runs' / 't'}" in out
    np.testing.assert_array_equal(embedding(run_dir), uninterrupted)


def test_ctrl_c_ends_after_the_epoch_with_exit_130(tmp_path, data_dir, uninterrupted):
    """With W&B (offline), the resumed run continues the same W&B run: it opened a second one of the same name."""
    wandb = {"WANDB_MODE": "offline", "HOME": str(tmp_path / "home")}
    code, out = signal_when(start(tmp_path, data_dir, "c", **wandb), signal.SIGINT, "epoch 5/30")
    run_dir = tmp_path / "runs" / "c"
    assert code == 130, out
    assert out.splitlines()[-1].startswith("interrupted (SIGINT) at epoch ") and "Traceback" not in out
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(run_dir), "--no-progress"], cwd=ROOT,
                          env=env(tmp_path, data_dir, **wandb), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(embedding(run_dir), uninterrupted)
    segments = sorted((run_dir / "wandb").glob("offline-run-*"))  # one folder per process, named after the run's id
    assert len(segments) == 2 and len({s.name.rsplit("-", 1)[1] for s in segments}) == 1, segments
    assert segments[0].name.endswith((run_dir / "wandb" / "run_id").read_text().strip())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_training_says_there_is_nothing_to_resume_and_leaves_nothing(tmp_path, data_dir, signum):
    code, out = signal_when(start(tmp_path, data_dir, "early"), signum, None)
    assert code == 128 + signum, out
    name = signal.Signals(signum).name
    assert out.splitlines()[-1] == f"interrupted ({name}) before training started; nothing to resume: run the same command again"
    assert not (tmp_path / "runs").exists()


def test_a_second_run_with_the_same_name_is_refused_while_the_first_holds_it(tmp_path, data_dir):
    first = start(tmp_path, data_dir, "same")
    claim = tmp_path / "runs" / "same" / "config.yaml"
    deadline = time.monotonic() + 240
    while not claim.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert claim.exists(), "the first run never claimed its folder"
    second = subprocess.run([sys.executable, str(ROOT / "train.py"), *ARGS, "--lr", "1e-3", "--output", str(tmp_path / "runs"),
                             "--run-name", "same"], cwd=ROOT, env=env(tmp_path, data_dir), capture_output=True, text=True, timeout=300)
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "taken by another run" in lines[0], second.stderr
    assert "lr: 0.001" not in claim.read_text()  # the directory holds the first run's settings only


def test_a_table_script_stopped_during_a_run_says_how_to_continue_in_one_line(tmp_path, data_dir):
    """benchmarks/paper_table.py (any script through scrcl.errors.run_entry) used to end a SIGTERM-stopped run with
    Python's traceback of Interrupted and exit 1; now one line and 143, and the same command continues the run."""
    command = [sys.executable, str(ROOT / "benchmarks" / "paper_table.py"), "--datasets", "pbmc68k", "--seeds", "5",
               "--epochs", "30", "--set", "hidden_dim=32", "--set", "eval_every=5", "--set", "umap=false",
               "--runs-dir", str(tmp_path / "runs"), "--output", str(tmp_path / "R.md")]
    proc = subprocess.Popen(command, cwd=ROOT, env=env(tmp_path, data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=_interruptible)
    code, out = signal_when(proc, signal.SIGTERM, "epoch 10/30")
    run_dir = tmp_path / "runs" / "pbmc68k" / "seed5"
    assert code == 143, out
    assert "Traceback" not in out
    assert out.splitlines()[-1].startswith("interrupted (SIGTERM) at epoch ") and str(run_dir) in out.splitlines()[-1]
    assert "run the same command again to continue" in out.splitlines()[-1] and "train.py" not in out.splitlines()[-1]
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "R.md").exists()
    again = subprocess.run(command, cwd=ROOT, env=env(tmp_path, data_dir), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (run_dir / "metrics.json").exists() and (tmp_path / "R.md").exists()
