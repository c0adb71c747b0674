"""The trial launcher behind ``python -m scrcl.experiments.sweep`` and ``python -m scrcl.experiments.ablate``.

A *trial* is one ``train.py`` run in its own subprocess, with a fixed run directory
(``--output OUT --run-name NAME``). The launcher

- resolves every trial's config before anything runs (a bad flag or value stops the batch at once);
- skips a trial whose run directory holds a ``metrics.json`` made with the same settings, and
  continues one left half-way from its last checkpoint: re-running the same command resumes the
  batch and runs nothing that finished;
- runs the rest in a pool of *slots*: one per GPU (``CUDA_VISIBLE_DEVICES=<id>``, at most one trial
  per GPU at a time) or N CPU workers;
- logs each trial to ``OUT/logs/NAME.log``; a failed trial is reported and does not stop the others.

Every trial is a W&B run (offline unless ``WANDB_MODE`` says otherwise) in the group named after
``OUT`` (the runner groups a run by its parent directory; ``WANDB_RUN_GROUP`` is set to the same).
"""

from __future__ import annotations

import argparse
import functools
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from scrcl.train import rundir
from scrcl.train.config import (absolute_path, bookkeeping_keys, key as config_key, read_config_file, resolve_config,
                                run_defaults)
from scrcl.errors import UserError, nearest_existing, run_entry
from scrcl.eval.metrics import SCORES, mean_std_text as _cell_text, paired_difference_text

DEFAULT_DATASET = "pbmc68k"  # train.py's own default when neither --dataset nor --data is given
# train.py flags the launcher sets itself, per trial.
RESERVED_FLAGS = ("--output", "--run-name", "--resume", "--seeds", "--list-datasets")
@dataclass(frozen=True)
class Trial:
    """One train.py run: ``params`` are what varies between trials (table columns, seed included)."""

    name: str
    params: dict
    args: tuple[str, ...]
    run_dir: Path


@dataclass(frozen=True)
class Slot:
    """Where a trial runs: a label for messages and the environment variables that pin it there."""

    label: str
    env: dict = field(default_factory=dict)


# -- train.py's flags and configs -------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def train_parser() -> argparse.ArgumentParser:
    """train.py's own argument parser (every config key has a flag), raising UserError instead of exiting."""
    from scrcl.train.cli import build_parser

    parser = build_parser()

    def error(message):
        raise UserError(f"{message} (train.py flags; see python train.py --help)")

    parser.error = error
    return parser


def train_action(key: str) -> argparse.Action | None:
    """The train.py argument that sets config key ``key`` (``hea_weight`` -> ``--hea-weight``), or None."""
    for action in train_parser()._actions:
        if action.dest == key and action.option_strings:
            return action
    return None


def flag_action(flag: str) -> argparse.Action | None:
    """The train.py argument spelled ``flag`` (``--hea-weight``), or None."""
    return train_parser()._option_string_actions.get(flag)


def key_to_args(key: str, value) -> list[str]:
    """One config key as train.py arguments, written the way W&B agents write them (``--key=value``)."""
    action = train_action(key)
    if action is None:
        raise UserError(f"'{key}' is not a config key with a train.py flag (see python train.py --help)")
    flag = action.option_strings[0]
    if config_key(key).kind is bool:  # switches read best as --refine / --no-refine
        if not isinstance(value, bool):
            raise UserError(f"'{key}' takes true or false, got {value!r}")
        return [flag] if value else [f"--no-{flag[2:]}"]
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return [f"{flag}={value}"]


def keys_set_by(args: Sequence[str]) -> dict:
    """Config keys (and values) that these train.py arguments set; an unknown flag is a UserError."""
    parsed = vars(train_parser().parse_args(list(args)))
    return {k: v for k, v in parsed.items() if v is not None and not (k == "list_datasets" and v is False)}


def check_extra_args(extras: Sequence[str]) -> dict:
    """The train.py flags a user added to every trial: known, and none the launcher sets itself."""
    for arg in extras:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_FLAGS:
            raise UserError(f"{flag} is set by the launcher for every trial; leave it out (--output DIR names the batch's directory)")
    return keys_set_by(extras)


def trial_config(args: Sequence[str]) -> dict:
    """The config train.py resolves from these arguments (the same layers, the same checks)."""
    parsed = vars(train_parser().parse_args(list(args)))
    overrides = {k: v for k, v in parsed.items() if k not in ("config", "resume", "list_datasets")}
    if not (overrides.get("dataset") or overrides.get("data")):
        overrides["dataset"] = DEFAULT_DATASET
    return resolve_config(config_file=parsed.get("config"), overrides=overrides)


def dataset_label(args: Sequence[str]) -> str:
    """What the trials run on, for directory names: the registry name or the data file's stem."""
    config = trial_config(args)
    return config.get("dataset") or Path(str(config.get("data"))).stem


# -- which trials still need to run ---------------------------------------------------------------
def differing_settings(run_dir: Path, expected: dict) -> list[str]:
    """Config keys whose value in ``run_dir/config.yaml`` differs from ``expected`` (bookkeeping keys aside)."""
    old = read_config_file(run_dir / "config.yaml", "the run's config")
    if isinstance(old.get("data"), str):  # a run recorded relative (before paths were made absolute) or portable
        old["data"] = absolute_path(old["data"])  # ($SCRCL_DATA_DIR/...): read as this batch resolves its own
    want = yaml.safe_load(yaml.safe_dump(expected))  # the same normal form as the file (lists, floats)
    defaults, ignored = run_defaults(), bookkeeping_keys()
    return [f"{k}: {old.get(k, defaults.get(k))!r} there, {want[k]!r} now" for k in sorted(want)
            if k not in ignored and old.get(k, defaults.get(k)) != want[k]]


def trial_state(trial: Trial, expected: dict) -> str:
    """'done' (finished with these settings), 'resume' (left half-way with a checkpoint) or 'new'."""
    run_dir = trial.run_dir
    finished = (run_dir / "metrics.json").exists()
    resumable = (run_dir / "config.yaml").exists() and rundir.resume_checkpoint(run_dir) is not None
    if not (finished or resumable):
        if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / "config.yaml").exists():
            raise UserError(f"{run_dir} exists and is not a train.py run directory; move it away or choose another --output")
        return "new"
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir} has a metrics.json but no config.yaml; move it away or choose another --output")
    differ = differing_settings(run_dir, expected)
    if differ:
        raise UserError(f"{run_dir} was run with other settings ({'; '.join(differ[:3])}); "
                        "repeat the earlier flags, or choose another --output")
    return "done" if finished else "resume"


def trial_command(trial: Trial, state: str) -> list[str]:
    """The train.py command line of a trial: a fresh run, or ``--resume`` of one left half-way. Both without
    the progress bar (its redraws would fill the trial's log): train.py prints a line per evaluation instead."""
    if state == "resume":
        return [sys.executable, "-m", "scrcl.train", "--resume", str(trial.run_dir), "--no-progress"]
    return [sys.executable, "-m", "scrcl.train", *trial.args, "--no-progress"]


# -- where trials run -----------------------------------------------------------------------------
_GPU_ID = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")  # what CUDA_VISIBLE_DEVICES takes


def parse_gpus(text: str) -> list[str]:
    """``0,1,2,3`` (or GPU UUIDs) -> device ids; each must be given once."""
    ids = [g.strip() for g in text.split(",")]
    if not ids or any(not g for g in ids):
        raise UserError(f"--gpus takes device ids like 0,1,2,3, got '{text}'")
    bad = [g for g in ids if not _GPU_ID.match(g)]
    if bad:
        raise UserError(f"--gpus takes device ids like 0,1,2,3 (or GPU-… / MIG-… UUIDs), got '{bad[0]}'")
    if len(set(ids)) != len(ids):
        raise UserError(f"--gpus lists a device twice ('{text}'); each GPU runs one trial at a time")
    return ids


def make_slots(gpus: str | None, workers: int | None, env: dict | None = None) -> list[Slot]:
    """One slot per GPU (``CUDA_VISIBLE_DEVICES=<id>``), or ``workers`` CPU slots (no GPU visible, the
    cores shared out through OMP_NUM_THREADS unless it is set), or one slot on the default device."""
    env = os.environ if env is None else env
    if gpus is not None and workers is not None:
        raise UserError("give either --gpus (one trial per GPU) or --workers (CPU processes), not both")
    if gpus is not None:
        return [Slot(f"GPU {g}", {"CUDA_VISIBLE_DEVICES": g}) for g in parse_gpus(gpus)]
    if workers is not None:
        if workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        extra = {} if "OMP_NUM_THREADS" in env else {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
        return [Slot(f"CPU worker {i + 1}", {"CUDA_VISIBLE_DEVICES": "", **extra}) for i in range(workers)]
    return [Slot("default device")]


def check_trials_can_run(trials: Sequence[Trial], slots: Sequence[Slot], env: dict | None = None,
                         cuda_devices: int | None = None) -> None:
    """Before a batch starts anything: the GPUs of ``--gpus`` exist, and every trial still to run has an accelerator and
    precision that can run where its slot puts it (train.py's own check, made once for the batch instead of failing every trial).

    ``cuda_devices``: the CUDA GPUs this process sees (None: ask torch). With CUDA_VISIBLE_DEVICES already set, the ids
    of ``--gpus`` are not the ones this process counts, so they are not checked against the count."""
    from scrcl.train.run import check_accelerator

    trials = [t for t in trials if not (t.run_dir / "metrics.json").exists()]  # finished ones run nothing again
    if not trials:
        return
    env = os.environ if env is None else env
    gpus = [slot.env["CUDA_VISIBLE_DEVICES"] for slot in slots if slot.env.get("CUDA_VISIBLE_DEVICES")]
    workers = any(slot.env.get("CUDA_VISIBLE_DEVICES") == "" for slot in slots)
    if gpus and "CUDA_VISIBLE_DEVICES" not in env:
        if cuda_devices is None:
            import torch

            cuda_devices = torch.cuda.device_count()
        if cuda_devices == 0:
            raise UserError(f"--gpus {','.join(gpus)}: torch sees no CUDA GPU on this machine; run the trials on the CPU "
                            "with --workers N (or neither flag: one trial at a time)")
        beyond = [g for g in gpus if g.isdigit() and int(g) >= cuda_devices]
        if beyond:
            raise UserError(f"--gpus {','.join(gpus)}: there is no GPU {beyond[0]}; torch sees {cuda_devices} "
                            f"(ids 0 … {cuda_devices - 1})")
    settings = set()
    for trial in trials:
        config = trial_config(trial.args)
        settings.add((str(config.get("accelerator") or "auto"), str(config.get("precision") or "32-true")))
    for accelerator, precision in sorted(settings):
        if workers and accelerator in ("gpu", "cuda"):
            raise UserError(f"--accelerator {accelerator} with --workers: CPU workers see no GPU; give --gpus 0,1,… for "
                            "GPU trials")
        check_accelerator(accelerator, precision, cuda=bool(gpus) if gpus or workers else None)


def trial_env(slot: Slot, group: str, project: str | None = None, base: dict | None = None) -> dict:
    """A trial's environment: offline W&B unless WANDB_MODE is set, grouped by ``group``, pinned to ``slot``."""
    env = dict(os.environ if base is None else base)
    env.setdefault("WANDB_MODE", "offline")
    env["WANDB_RUN_GROUP"] = group
    if project:
        env.setdefault("WANDB_PROJECT", project)
    env.update(slot.env)
    return env


def run_pool(items: Sequence, slots: Sequence[Slot], work: Callable) -> list:
    """``work(item, slot)`` for every item, in order, at most one item per slot at any time.

    As many threads as slots; a thread takes a free slot, runs one item and puts the slot back, so no
    two items ever hold the same slot. Returns the results in item order."""
    _STOPPING.clear()  # a new batch (an earlier one in this process may have been stopped)
    free: queue.SimpleQueue = queue.SimpleQueue()
    for index in range(len(slots)):
        free.put(index)

    def task(item):
        index = free.get()
        try:
            return work(item, slots[index])
        finally:
            free.put(index)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        futures = [pool.submit(task, item) for item in items]
        try:
            return [f.result() for f in futures]
        except (KeyboardInterrupt, Stopped):  # no new trial starts; the running ones stop after their epoch
            for f in futures:
                f.cancel()
            stop_running()
            raise


_RUNNING: set = set()
_RUNNING_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set by stop_running: a trial not started yet never starts


class Stopped(BaseException):
    """The launcher was sent SIGTERM (``kill``, ``timeout``, a batch system's pre-emption). Raised by its handler
    wherever the launcher is, like Ctrl-C's ``KeyboardInterrupt``, so the running trials are stopped too (with
    Python's default action the launcher died at once and its trials ran on, orphaned)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_signal(signum, frame):
    raise Stopped(signum)


def stop_running() -> None:
    """Terminate the trial processes still running (on Ctrl-C or SIGTERM): each one ends after its current epoch with
    a checkpoint (train.py's own handling of SIGTERM), and the pool waits for them."""
    with _RUNNING_LOCK:
        _STOPPING.set()
        for proc in list(_RUNNING):
            proc.terminate()


def execute(cmd: list[str], env: dict, log_path: Path) -> int:
    """Run one command with its output appended to ``log_path``; returns its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '(unset)')}\n"
                  f"$ {shlex.join(cmd)}\n")
        log.flush()
        with _RUNNING_LOCK:  # started and registered at once: a stop either sees it or comes before it
            if _STOPPING.is_set():
                log.write("not started: the launcher is stopping\n")
                return 143
            try:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            except OSError as err:
                log.write(f"cannot start: {err}\n")
                return 127
            _RUNNING.add(proc)
        try:
            return proc.wait()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(proc)


def run_child(command: list[str], **popen) -> subprocess.CompletedProcess:
    """``subprocess.run`` for a study's or a benchmark's child process that a SIGTERM to this process stops too
    (``terminate``: a train.py run ends after its epoch with a checkpoint). With Python's default action the parent
    died at once and its child ran on, orphaned. Ctrl-C reaches the child by itself (the terminal signals the whole
    process group), and the parent waits for it. The result's ``stopped_by`` is the signal this process got meanwhile
    (None if none): the caller should stop as well, whatever the child's exit status."""
    import signal

    received: list[int] = []

    def on_sigterm(signum, frame):
        received.append(signum)
        proc.terminate()

    proc = subprocess.Popen(command, **popen)
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while True:
            try:
                stdout, stderr = proc.communicate()
                break
            except KeyboardInterrupt:
                received.append(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    done = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    # the signal this process got while the child ran (the child may have died of it before it could say so itself,
    # e.g. during its imports): the caller stops too
    done.stopped_by = received[0] if received else None
    return done


def stop_if_signalled(done: subprocess.CompletedProcess, during: str, then: str = "run the same command again") -> None:
    """After :func:`run_child`: when this process was signalled meanwhile, one line saying so and the shell's exit
    status 128 + the signal number (the child was stopped too)."""
    import signal

    if done.stopped_by is not None:
        print(f"interrupted ({signal.Signals(done.stopped_by).name}) during {during}; {then}", file=sys.stderr)
        raise SystemExit(128 + done.stopped_by)


def last_line(path: Path) -> str:
    """The last non-empty line of a text file ('' if none)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


# -- a batch of trials ----------------------------------------------------------------------------
@dataclass
class Outcome:
    """What happened to each trial: finished before (skipped), ran now, or failed (with its log)."""

    skipped: list = field(default_factory=list)
    ran: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (trial, exit status, log path)
    left_alone: list = field(default_factory=list)  # finished or running in another launcher since the plan

    @property
    def ok(self) -> bool:
        return not self.failed


def plan(trials: Sequence[Trial]) -> list[tuple[Trial, str]]:
    """Each trial's state after checking its config (any problem stops everything before a trial runs)."""
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise UserError("two trials share a run directory name; make the parameter values distinct")
    return [(t, trial_state(t, trial_config(t.args))) for t in trials]


def _prepare(trial: Trial, state: str) -> None:
    """A run directory left by a trial that failed before its first checkpoint holds nothing to keep. Called only
    when no process owns it (``run_one`` checks its ``.owner``)."""
    if state == "new" and trial.run_dir.exists():
        shutil.rmtree(trial.run_dir)


def run_trials(trials: Sequence[Trial], out_dir: Path, slots: Sequence[Slot], *, group: str, project: str | None = None,
               dry_run: bool = False, report_only: bool = False, keep_checkpoints: bool = False, log=print,
               execute_fn: Callable[[list[str], dict, Path], int] | None = None) -> Outcome:
    """Run the trials not finished yet on ``slots``; ``--dry-run`` prints their commands and runs nothing;
    ``--report`` (``report_only``) runs nothing either and leaves the caller to tabulate the finished ones."""
    blocked = nearest_existing(out_dir)
    if not blocked.is_dir():  # before the plan: nothing has run or been written
        raise UserError(f"--output {out_dir}: {blocked} is a file, not a directory; give a directory for the batch")
    states = plan(trials)
    outcome = Outcome(skipped=[t for t, s in states if s == "done"])
    todo = [(t, s) for t, s in states if s != "done"]
    if report_only:
        if not outcome.skipped:
            raise UserError(f"--report: no trial has finished in {out_dir} yet; run the same command without --report")
        log(f"--report: {len(outcome.skipped)} of {len(trials)} trials finished; the table leaves out the other "
            f"{len(todo)} and nothing runs")
        return outcome
    log(f"{len(trials)} trials: {len(outcome.skipped)} finished before (skipped), {len(todo)} to run on "
        f"{', '.join(s.label for s in slots)}")
    if dry_run:
        for t in outcome.skipped:
            log(f"# done: {t.name} ({t.run_dir / 'metrics.json'})")
        for t, s in todo:
            log(shlex.join(trial_command(t, s)))
        return outcome
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--output {out_dir}: cannot create the batch directory ({err.strerror})") from None
    lock = threading.Lock()
    counter = iter(range(1, len(todo) + 1))

    def say(text: str) -> None:
        with lock:
            log(text)

    def work(item, slot: Slot):
        with lock:
            tag = f"[{next(counter)}/{len(todo)}] {item[0].name}"
        env = trial_env(slot, group, project)
        return run_one(*item, slot, env, out_dir / "logs" / f"{item[0].name}.log", tag=tag, say=say,
                       keep_checkpoints=keep_checkpoints, execute_fn=execute_fn or execute)

    for trial, status, log_path in run_pool(todo, slots, work):
        if status == LEFT_ALONE:
            outcome.left_alone.append(trial)
        elif status == 0:
            outcome.ran.append(trial)
        else:
            outcome.failed.append((trial, status, log_path))
    return outcome


# run_one's status for a trial it left alone: finished or being run by another launcher since the plan.
LEFT_ALONE = -1


def run_one(trial: Trial, state: str, slot: Slot, env: dict, log_path: Path, *, tag: str, say, keep_checkpoints: bool,
            execute_fn: Callable[[list[str], dict, Path], int]) -> tuple[Trial, int, Path]:
    """One trial in its slot; success means exit status 0 *and* a metrics.json. Returns (trial, status, log).

    Two launchers may share a batch directory (two machines, or a second command started while the
    first runs): a trial is locked while it runs, and its state is read again just before it starts,
    so a trial finished or started elsewhere since the plan is left alone (status LEFT_ALONE), never
    cleared and run twice."""
    lock_path = log_path.parent / f"{trial.name}.lock"
    if not rundir.take(lock_path):  # holds host and pid; another host's lock is never taken over
        say(f"{tag}: another launcher is running it ({rundir.owner_state(lock_path)[1]}, {lock_path}); left alone")
        return trial, LEFT_ALONE, log_path
    try:
        state = trial_state(trial, trial_config(trial.args))
        if state == "done":
            say(f"{tag}: finished meanwhile by another launcher; left alone")
            return trial, LEFT_ALONE, log_path
        running, who = rundir.owner_state(trial.run_dir / rundir.OWNER)
        if running in ("alive", "elsewhere"):  # its launcher died but train.py still runs (or runs on another host)
            say(f"{tag}: {trial.run_dir} is in use by {who}; left alone")
            return trial, LEFT_ALONE, log_path
        return _run_claimed(trial, state, slot, env, log_path, tag=tag, say=say, keep_checkpoints=keep_checkpoints,
                            execute_fn=execute_fn)
    finally:
        lock_path.unlink(missing_ok=True)


def _run_claimed(trial: Trial, state: str, slot: Slot, env: dict, log_path: Path, *, tag: str, say,
                 keep_checkpoints: bool, execute_fn: Callable[[list[str], dict, Path], int]) -> tuple[Trial, int, Path]:
    say(f"{tag}: {'resuming' if state == 'resume' else 'started'} on {slot.label}")
    t0 = time.perf_counter()
    try:
        _prepare(trial, state)
        status = execute_fn(trial_command(trial, state), env, log_path)
    except OSError as err:
        status = 127
        say(f"{tag}: cannot run ({err})")
    seconds = time.perf_counter() - t0
    if status == 0 and (trial.run_dir / "metrics.json").exists():
        if not keep_checkpoints:  # at d = 1500 a checkpoint is ~170 MB; a finished trial does not need it
            shutil.rmtree(trial.run_dir / "checkpoints", ignore_errors=True)
        say(f"{tag}: finished in {seconds:.1f}s: {last_line(log_path)}")
        return trial, 0, log_path
    say(f"{tag}: FAILED (exit {status}) after {seconds:.1f}s: {last_line(log_path) or 'no output'}; log {log_path}")
    return trial, status or 1, log_path


def report(outcome: Outcome, log=print) -> None:
    """One closing line per failed trial, then the count."""
    for trial, status, log_path in outcome.failed:
        log(f"failed: {trial.name} (exit {status}); log {log_path}")
    log(f"{len(outcome.ran)} ran, {len(outcome.skipped)} skipped (finished before), {len(outcome.failed)} failed"
        + (f", {len(outcome.left_alone)} left to another launcher" if outcome.left_alone else ""))


# -- results --------------------------------------------------------------------------------------
def read_metrics(trial: Trial) -> dict | None:
    """A finished trial's metrics.json (its reported evaluation), or None if it has none."""
    import json

    path = trial.run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def conditions(trials: Sequence[Trial]) -> str:
    """The finished trials' precision, device and torch threads (``scrcl.train.results.conditions_text``), read from
    each run directory's config.yaml and metrics.json: the sentence a sweep or ablation table states them in."""
    from scrcl.train.results import conditions_text

    runs = []
    for trial in trials:
        metrics = read_metrics(trial)
        if metrics is not None:
            path = trial.run_dir / "config.yaml"
            config = read_config_file(path, "the run's config") if path.exists() else {}
            runs.append((config, metrics))
    return conditions_text(runs, "each run's config.yaml and metrics.json")


def score_summary(metrics: Sequence[dict]) -> dict:
    """(mean, population std, values) of each reported score over ``metrics`` (never the oracle_* keys)."""
    values = {k: np.array([m[k] for m in metrics if k in m], dtype=float) for k in SCORES}
    return {k: (float(v.mean()), float(v.std()), v.tolist()) for k, v in values.items() if v.size}


def mean_std_text(summary: dict, key: str) -> str:
    """The table cell of ``summary[key]`` (``scrcl.eval.metrics.mean_std_text``: one run alone, ``–`` without any)."""
    return _cell_text(summary[key][2] if key in summary else ())


def paired_by_seed(row_metrics: Sequence[dict], base_metrics: Sequence[dict], key: str) -> str:
    """``key`` of one row's runs − the same seed's run of another row, over the seeds both have finished: the mean
    difference with its 95% interval and whether it is within noise (``scrcl.eval.metrics.paired_difference_text``);
    ``–`` when no seed is shared. The ablation table's "− full" and the sweep table's "− best"."""
    base = {m.get("seed"): m[key] for m in base_metrics if key in m}
    pairs = [(m[key], base[m.get("seed")]) for m in row_metrics if key in m and m.get("seed") in base]
    return paired_difference_text([a for a, _ in pairs], [b for _, b in pairs]) if pairs else "–"


def markdown_row(cells: Sequence) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    """A CSV written atomically."""
    import csv
    import io

    from scrcl.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


# -- the command line shared by sweep and ablate ----------------------------------------------------
class LauncherParser(argparse.ArgumentParser):
    """Errors become one line and exit status 2 (through UserError), not a usage dump."""

    def error(self, message):
        raise UserError(f"{message} (see python -m {self.prog} --help)")


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every launcher takes; anything else is passed to every trial's train.py."""
    parser.add_argument("--dataset", default=None, help="registry dataset for every trial (or pass --data FILE through to train.py)")
    parser.add_argument("--seeds", default=None, help="several seeds, e.g. 5,15,25: every setting runs once per seed")
    parser.add_argument("--gpus", default=None, help="device ids, e.g. 0,1,2,3: one trial per GPU at a time (CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--workers", type=int, default=None, help="N trials at a time on the CPU (no GPU visible to them)")
    parser.add_argument("--output", default=None, help="directory of the batch: one run directory per trial, logs/, tables")
    parser.add_argument("--dry-run", action="store_true", help="print the trial command lines and run nothing")
    parser.add_argument("--report", action="store_true",
                        help="write the table from the trials finished so far and run nothing (e.g. while the batch runs)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each finished trial's checkpoints")


def batch_command(module: str, argv: Sequence[str]) -> str:
    """The command line that runs the batch, as tables show it: ``--report`` (which runs nothing) left out."""
    return f"python -m {module} " + shlex.join(a for a in argv if a != "--report")


def entry_point(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a launcher's ``main``: a UserError is one line on stderr and exit 2; Ctrl-C (exit 130) or SIGTERM (exit 143)
    stops the running trials, each after its epoch with a checkpoint, before the launcher exits."""
    import signal

    previous = signal.signal(signal.SIGTERM, _stop_on_signal)
    stopping = False
    try:
        return run_entry(main, argv)
    except (KeyboardInterrupt, Stopped) as err:
        stopping = True  # from here to the exit (the pool's threads are joined then) a further SIGTERM is ignored:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the trials are stopping anyway, and their locks must go
        signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
        stop_running()
        print(f"interrupted ({signal.Signals(signum).name}); run the same command again to resume (finished trials are "
              "skipped, a stopped one continues from its checkpoint if it made one)", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # e.g. `--dry-run | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        if not stopping:
            signal.signal(signal.SIGTERM, previous)
