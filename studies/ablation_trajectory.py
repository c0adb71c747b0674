#!/usr/bin/env python
"""How each ablation variant's score moves over training, read back from a finished batch's history.csv files.

  python studies/ablation_trajectory.py runs/ablations/components-pbmc10x \\
      [--epochs 10,50,100,200,300,400] [--metric ari] [--output studies/results/ablation_trajectory_pbmc10x.md]

An analysis, not a result: the labels score every evaluation of every finished trial
(``<variant>-seed<s>/history.csv``, written by ``python -m scrcl.experiments.ablate``) and the table shows the mean
over seeds at the chosen epochs, beside the last evaluation (``final``), the evaluation ``ablation.md`` reports
(``reported``: the final epoch, or the one the config's label-free ``select`` chose) and the best
evaluation of each run (labels pick it: the reference implementation's protocol, shown only to tell a
variant that never gets there from one that gets there and then loses it). Nothing here chooses a
setting or an epoch to report. Works on restored records too (``benchmarks/records.py restore``).
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import sys
import time
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parent.parent

from scrcl.experiments.ablate import DEFAULT_FILE, load_variants
from scrcl.atomic import atomic_write_text
from scrcl.train.config import parse_int_list
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry

METRICS = ("acc", "nmi", "ari", "f1")
TRIAL = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")


def parse_epochs(text: str) -> list[int]:
    epochs = parse_int_list(text, "--epochs")
    if any(e < 1 for e in epochs):
        raise UserError(f"--epochs needs epoch numbers of 1 or more, e.g. 10,50,100 (got {text!r})")
    return sorted(set(epochs))


def read_trials(batch: Path, metric: str) -> dict[str, dict[int, dict]]:
    """{variant: {seed: {"history": {epoch: score}, "final": score, "reported": score, "reported_epoch": int}}} of
    the finished trials: ``final`` is the last evaluation in history.csv, ``reported`` the figure of metrics.json."""
    if not batch.is_dir():
        raise UserError(f"{batch} is not a directory; give a batch directory of scrcl.experiments.ablate, e.g. runs/ablations/components-pbmc10x")
    trials: dict[str, dict[int, dict]] = {}
    for run in sorted(batch.iterdir()):
        match = TRIAL.match(run.name)
        if not match or not (run / "metrics.json").is_file() or not (run / "history.csv").is_file():
            continue  # not a trial, or not finished
        reported = json.loads((run / "metrics.json").read_text())
        if reported.get(metric) is None:
            raise UserError(f"{run}/metrics.json has no '{metric}': the run had no labels to score it against, "
                            "so there is no trajectory to show")
        history: dict[int, float] = {}
        with (run / "history.csv").open() as handle:
            for row in csv.DictReader(handle):
                if row.get("epoch") and row.get(metric) not in (None, ""):
                    history[int(row["epoch"])] = float(row[metric])
        trials.setdefault(match["variant"], {})[int(match["seed"])] = {
            "history": history, "final": history[max(history)] if history else float(reported[metric]),
            "reported": float(reported[metric]), "reported_epoch": int(reported.get("epoch", max(history, default=0)))}
    if not trials:
        raise UserError(f"{batch} holds no finished trial (<variant>-seed<s>/ with metrics.json and history.csv); "
                        "run python -m scrcl.experiments.ablate first, or python benchmarks/records.py restore")
    return trials


def ordered(trials: dict, variants_file: Path) -> list[str]:
    """The variants in the order of the ablation file; any others after them, alphabetically."""
    listed = [name for name in load_variants(variants_file) if name in trials]
    return listed + sorted(name for name in trials if name not in listed)


def table_rows(trials: dict, names: list[str], epochs: list[int]) -> list[dict]:
    rows = []
    for name in names:
        runs = trials[name]
        at = {}
        for epoch in epochs:
            values = [run["history"][epoch] for run in runs.values() if epoch in run["history"]]
            at[epoch] = fmean(values) if len(values) == len(runs) else None  # a mean over fewer runs would mislead
        best = [max(run["history"].values()) if run["history"] else run["reported"] for run in runs.values()]
        rows.append({"variant": name, "seeds": sorted(runs), "at": at, "final": fmean([r["final"] for r in runs.values()]),
                     "reported": fmean([r["reported"] for r in runs.values()]),
                     "reported_epochs": sorted({r["reported_epoch"] for r in runs.values()}), "best": fmean(best)})
    return rows


def render(rows: list[dict], *, batch: Path, metric: str, epochs: list[int], command: str, started: str) -> str:
    name = metric.upper()
    reported = sorted({e for row in rows for e in row["reported_epochs"]})
    lines = [
        f"# {name} over training, per ablation variant (an analysis: labels score every evaluation; none is chosen)",
        "",
        f"- Command: `{command}`",
        f"- Date: {started}; batch: `{batch}` (each `<variant>-seed<s>/history.csv` of a finished trial)",
        f"- Each cell: the mean {name} over the variant's seeds at that epoch (– where a seed has no evaluation there).",
        "  `final`: each run's last evaluation. `reported`: the figure `ablation.md` reports, the final epoch or the one",
        f"  the run's label-free `select` chose (epoch {', '.join(map(str, reported))}). `best`: the mean of each run's",
        "  highest evaluation, picked by the labels (the reference's protocol; not a result, shown only to tell a",
        "  variant that never reaches a score from one that reaches it and loses it).",
        "",
        "| variant | seeds | " + " | ".join(f"epoch {e}" for e in epochs) + " | final | reported | best (labels pick) |",
        "|---" * (len(epochs) + 5) + "|",
    ]
    for row in rows:
        cells = ["–" if row["at"][e] is None else f"{row['at'][e]:.3f}" for e in epochs]
        lines.append(f"| {row['variant']} | {', '.join(map(str, row['seeds']))} | " + " | ".join(cells)
                     + f" | {row['final']:.3f} | {row['reported']:.3f} | {row['best']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = CommandLineParser(prog="ablation_trajectory.py", command="python studies/ablation_trajectory.py", description=__doc__.split("\n")[0])
    parser.add_argument("batch", type=Path, help="a batch directory of scrcl.experiments.ablate, e.g. runs/ablations/components-pbmc10x")
    parser.add_argument("--epochs", default="10,50,100,200,300,400", help="epochs to show (default: %(default)s)")
    parser.add_argument("--metric", default="ari", choices=METRICS)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="the ablation file, for the variants' order")
    parser.add_argument("--output", type=output_file, help="write the table here (default: print it)")
    args = parser.parse_args(argv)
    epochs = parse_epochs(args.epochs)
    trials = read_trials(args.batch, args.metric)
    rows = table_rows(trials, ordered(trials, args.file), epochs)
    command = "python studies/ablation_trajectory.py" + "".join(
        f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    text = render(rows, batch=args.batch, metric=args.metric, epochs=epochs, command=command,
                  started=time.strftime("%Y-%m-%d %H:%M %Z"))
    if args.output is None:
        print(text, end="")
    else:
        atomic_write_text(args.output, text)
        print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
