#!/usr/bin/env python
"""Side-by-side traces of finished runs from their CSV logs: scores, loss terms and weight scales per evaluation.

  python studies/run_trace.py runs/spatial_table_adam/published/dlpfc_151673/seed5 \\
      runs/spatial_table/published/dlpfc_151673/seed5 --output studies/results/trace.md

Reads each run directory's ``csv/metrics.csv`` (written by every run, whatever the logger) and its
``config.yaml``. For every evaluation epoch it lists the refined and raw ARI (labels score the run; nothing is
chosen), the training loss terms, and the root-mean-square of the refinement projector's and the MLP view's
weights (``weights/rms_*``). It also lists the label-free warning sign this project found on spatial data:
the epochs where the CVC loss exceeds twice its median over the run (the refined representation Z flipping).
"""

from __future__ import annotations

import csv
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from scrcl.atomic import atomic_write_text
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry

COLUMNS = (("val/ari", "ARI"), ("val/ari_unrefined", "ARI raw"), ("train/loss", "loss"), ("train/ndc", "NDC"),
           ("train/cvc", "CVC"), ("weights/rms_refinement.projector", "RMS projector"), ("weights/rms_view_m.linear", "RMS MLP view"))


def read_run(run_dir: Path) -> dict:
    """Per-epoch values of the run's CSV log (one merged row per epoch) and its settings."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file() or not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory with a CSV log (no csv/metrics.csv or config.yaml)")
    from scrcl.train.config import read_config_file

    epochs: dict[int, dict] = {}
    try:
        with path.open() as handle:
            for row in csv.DictReader(handle):
                if row.get("epoch"):
                    epochs.setdefault(int(row["epoch"]), {}).update({k: float(v) for k, v in row.items() if k and v not in ("", None)})
    except (UnicodeDecodeError, csv.Error):  # before ValueError: UnicodeDecodeError is one
        raise UserError(f"{path} is not a CSV file; give run directories written by train.py --logger csv") from None
    except (ValueError, TypeError):
        raise UserError(f"{path} is not a CSV log written by train.py (a value that is not a number)") from None
    if not epochs:
        raise UserError(f"{path} holds no finished epoch (the run stopped before its first, or the file is not "
                        "train.py's CSV log); leave that run out")
    config = read_config_file(run_dir / "config.yaml", "the run's config")
    return {"dir": run_dir, "config": config, "epochs": epochs}


def cvc_spikes(run: dict, factor: float = 2.0) -> list[int]:
    """Epochs where the CVC loss exceeds ``factor`` times its median over the run (label-free)."""
    values = {e: r["train/cvc"] for e, r in run["epochs"].items() if "train/cvc" in r}
    if not values:
        return []
    median = float(np.median(list(values.values())))
    return [e for e, v in sorted(values.items()) if v > factor * median]


def _ranges(epochs: list[int]) -> str:
    """1-based epoch numbers as compact ranges: 220-250, 265."""
    if not epochs:
        return "none"
    out, start, prev = [], epochs[0], epochs[0]
    for e in epochs[1:] + [None]:
        if e is not None and e == prev + 1:
            prev = e
            continue
        out.append(f"{start + 1}" if start == prev else f"{start + 1}-{prev + 1}")
        if e is not None:
            start = prev = e
    return ", ".join(out)


def render(runs: list[dict], command: str, started: str) -> str:
    lines = [
        "# Run traces from the CSV logs (labels score each evaluation; nothing is chosen by them)",
        "",
        f"- Command: `{command}`",
        f"- Date: {started}. Epochs are 1-based (the CSV's epoch + 1). RMS: root-mean-square of a layer's weights.",
        "- CVC spikes: epochs where the CVC loss exceeds twice its median over the run, a sign visible without labels.",
        "",
    ]
    for run in runs:
        cfg = run["config"]
        spikes = cvc_spikes(run)
        lines += [f"## {run['dir']}", "",
                  f"{cfg.get('dataset') or cfg.get('data')}, seed {cfg.get('seed')}, optimizer {cfg.get('optimizer')}, "
                  f"lr {cfg.get('lr')}, weight decay {cfg.get('weight_decay')}, d = {cfg.get('hidden_dim')}. "
                  f"CVC spikes at epochs: {_ranges(spikes)}.", "",
                  "| epoch | " + " | ".join(name for _, name in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for epoch, row in sorted(run["epochs"].items()):
            if "val/ari" not in row:
                continue
            lines.append(f"| {epoch + 1} | " + " | ".join(f"{row[key]:.4g}" if key in row else "—" for key, _ in COLUMNS) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = CommandLineParser(prog="run_trace.py", command="python studies/run_trace.py", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--output", type=output_file, required=True)
    args = parser.parse_args(argv)
    command = "python studies/run_trace.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    runs = [read_run(d) for d in args.runs]
    atomic_write_text(args.output, render(runs, command, time.strftime("%Y-%m-%d %H:%M %Z")))
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
