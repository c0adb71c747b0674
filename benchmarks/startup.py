#!/usr/bin/env python
"""How long a user waits before training starts: ``train.py --help``, and a run's start-up on a cold and a warm cache.

  python benchmarks/startup.py --dataset pbmc10x
  python benchmarks/startup.py --dataset pollen --repeats 5 --output scratch.md

``train.py --help`` and, each in a fresh interpreter, importing torch, PyTorch Geometric, Lightning and every module a
warm-cache run imports are timed ``--repeats`` times each (medians). Then ``train.py --dataset NAME --epochs 1`` runs twice as a
user would launch it, with a fresh cache directory: the first run builds the preprocessed data and graphs (a cache
miss), the second reads them (a hit). Each run's start-up is the time from its launch to the start of its training,
which the run records (``train_started_at`` of metrics.json, the wall clock when Lightning's training began); its wall
time and its training (``train_seconds``: the epoch, its evaluation, Lightning's loop) are kept beside it. One JSON
line is printed and one row per run appended to ``benchmarks/results/startup.md``. The dataset's own config applies;
``--set key=value`` overrides it.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scrcl.atomic import atomic_write_text
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry, whole_number
from scrcl.experiments.tables import code_version, machine, parse_sets

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = {"torch": "torch", "torch_geometric": "torch_geometric", "lightning": "lightning",
           "run": "scrcl.train.run, datamodules.datamodule, scrcl.train.results, scrcl.eval.clustering, anndata"}
HEADER = ("| date | dataset | threads | `--help` s | import torch s | import torch_geometric s | import lightning s "
          "| import what a run imports s | run | cache | wall s | training s (metrics.json) | launch to training s "
          "| code | machine |")
MEANING = ("Launch to the start of training: from launching `train.py --dataset NAME --epochs 1` to the moment its "
           "training began, which the run records in metrics.json (`train_started_at`). First run: a fresh cache "
           "directory (a miss); second run: the same cache (a hit). Wall s: the whole run, writing its results included; "
           "training s: the training its metrics.json records. The import columns: the wall time of a fresh interpreter (its "
           "start and exit included) importing torch; PyTorch Geometric; Lightning (each with what it imports, torch "
           "included); and every module a warm-cache run imports (`" + IMPORTS["run"] + "`). Medians.")


def launched(command: list[str], env: dict) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds of ``python COMMAND``, the wall clock (Unix seconds) at its launch, and the finished process."""
    at, t0 = time.time(), time.perf_counter()
    done = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise UserError(f"{shlex.join(command)} failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or [''])[-1]}")
    return seconds, at, done


def flags(sets: list[str]) -> list[str]:
    """``--set key=value`` as train.py's own flags (``--key=value``)."""
    out = []
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set takes key=value, got {item!r}")
        out.append(f"--{key.strip().replace('_', '-')}={value}")
    return out


def measure(args) -> dict:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    if args.data_dir:
        env["SCRCL_DATA_DIR"] = str(args.data_dir)
    helps = [launched(["train.py", "--help"], env)[0] for _ in range(args.repeats)]
    # what importing costs before anything of ours runs: torch, PyG, Lightning (torch included), and every module a
    # warm-cache run imports (the training code, the data module, the evaluation, anndata for the cache)
    imports = {name: statistics.median(launched(["-c", f"import {modules}"], env)[0] for _ in range(args.repeats))
               for name, modules in IMPORTS.items()}
    runs = []
    with tempfile.TemporaryDirectory(prefix="scrcl-startup-") as scratch:
        env["SCRCL_CACHE_DIR"] = str(Path(scratch) / "cache")  # a cold cache for the first run, warm for the second
        for name in ("first", "second"):
            command = ["train.py", "--dataset", args.dataset, "--epochs", "1", "--logger", "none", "--no-umap",
                       "--no-progress", "--output", str(Path(scratch) / "runs"), "--run-name", name,
                       *args.flags]
            wall, at, done = launched(command, env)
            path = Path(scratch) / "runs" / name / "metrics.json"
            metrics = json.loads(path.read_text()) if path.exists() else {}
            if not isinstance(metrics.get("train_started_at"), (int, float)):
                raise UserError(f"{shlex.join(command)} wrote no metrics.json with train_started_at; the run's last "
                                f"line: {(done.stdout.strip().splitlines() or [''])[-1]}")
            runs.append({"run": name, "cache": metrics["data"]["setup"].get("cache", "not recorded"), "wall_s": wall,
                         "train_s": metrics["train_seconds"], "startup_s": metrics["train_started_at"] - at,
                         "threads": metrics.get("torch_threads")})
    return {"dataset": args.dataset, "help_s": statistics.median(helps), "import_s": imports, "runs": runs, "code": code_version(ROOT),
            "machine": machine()}


def append_rows(path: Path, result: dict, command: str) -> None:
    """One row per run under the header, written once with what the columns mean; a file whose table has other columns
    (before 2026-12-07 the start-up was wall time less training, an upper bound) gets a new section, so rows of
    different meaning never share a table."""
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    table = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    if not path.exists():
        lines = ["# Start-up (benchmarks/startup.py)", "", MEANING, "", *table]
    else:
        lines = path.read_text().splitlines()
        if HEADER not in lines:
            lines += ["", f"## Rows from {date} on: launch to training as the run records it", "", MEANING, "", *table]
    for run in result["runs"]:
        lines.append(f"| {date} | {result['dataset']} | {run['threads']} | {result['help_s']:.2f} | "
                     + "".join(f"{result['import_s'][name]:.2f} | " for name in IMPORTS) + f"{run['run']} | {run['cache']} | "
                     f"{run['wall_s']:.1f} | {run['train_s']:.1f} | {run['startup_s']:.1f} | {result['code']} | "
                     f"{result['machine']} | <!-- {command} -->")
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = CommandLineParser(prog="startup.py", command="python benchmarks/startup.py", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="pbmc10x")
    parser.add_argument("--repeats", type=whole_number(1), default=3, help="timings of train.py --help and of each import (medians)")
    parser.add_argument("--threads", type=whole_number(1), default=None, help="OMP_NUM_THREADS of the runs (default: as set)")
    parser.add_argument("--set", action="append", default=[], help="config override key=value for both runs")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=output_file, default=ROOT / "benchmarks" / "results" / "startup.md")
    args = parser.parse_args(argv)
    args.flags = flags(args.set)
    from datamodules.loading import resolve_data_dir
    from scrcl.train.config import resolve_config

    # the dataset and the overrides are checked here, in one line, before a minute of timings
    overrides = parse_sets(args.set)
    resolve_config(dataset=args.dataset, overrides=overrides)
    theirs = sorted(set(overrides) & {"seeds", "resume", "run_name", "output", "epochs"})
    if theirs:  # the benchmark times one fresh one-epoch run of one seed in its own scratch folder
        raise UserError(f"--set {', '.join(theirs)}: the benchmark sets this itself (one fresh one-epoch run of one seed)")
    args.data_dir = resolve_data_dir(args.data_dir).resolve()  # absolute: the runs start in the repository root
    from datamodules.registry import get_spec
    from scrcl.experiments.tables import local_datasets

    if get_spec(args.dataset).name not in local_datasets(str(args.data_dir), "all"):  # a download would count as start-up
        raise UserError(f"dataset '{args.dataset}' is not in {args.data_dir}; fetch it first (python train.py --dataset "
                        f"{args.dataset} --epochs 1 downloads it) or pass --data-dir")
    command = "python benchmarks/startup.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    result = measure(args)
    append_rows(args.output, result, command)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
