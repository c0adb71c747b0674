#!/usr/bin/env python
"""Where an epoch's time goes, on the CPU or a GPU: one JSON line, and one row appended to benchmarks/results/speed.md.

  python benchmarks/speed.py --dataset pbmc10x --hidden-dim 1500                       # CPU, float32
  python benchmarks/speed.py --dataset pbmc10x --hidden-dim 16 --precision bf16-mixed
  python benchmarks/speed.py --dataset pbmc10x --device cuda --epochs 50

An epoch is one full-graph training step. After ``--warmup`` steps, ``--epochs`` steps are timed one by one and the
median is reported, split into the encoders (forward and backward), the objective (forward and backward), and the
optimiser step. One evaluation, as a run makes it, is timed on its own (median of 3): the evaluator's embedding in
eval mode, k-means, the label-free and the label scores, once per set of weights it clusters (twice with
``weight_averaging``: the live and the averaged weights). Then the same
number of epochs runs through the real Trainer (``scrcl.train.run.train_one``: callbacks, logging, one evaluation
at the end); the median of its epochs after the warm-up (the last one, which holds the evaluation, left out), less the
step, is the Lightning overhead. The dataset's own
config applies (generic for the local sets); ``--set key=value`` overrides it. Labels play no part.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from scrcl.atomic import atomic_write_text
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry, whole_number
from scrcl.experiments.tables import code_version, machine, parse_sets
from scrcl.experiments.timing import autocast_dtype, clock, first_optimizer, saved_for_backward_bytes, timed_epoch

ROOT = Path(__file__).resolve().parent.parent
HEADER = ("| date | dataset | cells | d | device | precision | threads | epoch s | encoders s | objective s | optimiser s "
          "| evaluation as a run makes it s | Trainer epoch s | Lightning overhead s | saved for backward, KB/cell | code "
          "| machine |")


def measure(args) -> dict:
    import lightning as L
    import torch

    from datamodules.datamodule import ScRCLDataModule
    from scrcl.train import run as runner
    from scrcl.train.callbacks import ClusteringEvaluator
    from scrcl.train.config import resolve_config
    from scrcl.train.loggers import quiet_libraries
    from scrcl.train.module import build_module

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no GPU on this machine")
    epochs = args.warmup + args.epochs
    config = resolve_config(dataset=args.dataset, overrides={
        **parse_sets(args.set), "hidden_dim": args.hidden_dim, "precision": args.precision, "epochs": epochs,
        "eval_every": epochs, "logger": "none", "progress": False, "umap": False, "data_dir": args.data_dir,
        "accelerator": "gpu" if device.type == "cuda" else "cpu"})
    datamodule = ScRCLDataModule.from_config(config)
    t0 = time.perf_counter()
    datamodule.setup("fit")
    setup_s = time.perf_counter() - t0
    L.seed_everything(args.seed, verbose=False)
    module = build_module(config, datamodule.n_cells, datamodule.n_genes, datamodule.n_clusters).to(device)
    module.train()
    batch = datamodule.batch.to(device)
    optimizer = first_optimizer(module.configure_optimizers())
    low = autocast_dtype(args.precision)
    steps = [timed_epoch(module, optimizer, batch, device, low) for _ in range(epochs)][args.warmup:]
    step = {k: statistics.median(s[k] for s in steps) for k in ("total_s", "encoders_s", "losses_s", "optimiser_s")}
    # one evaluation as the run makes it: the evaluator's own work (embedding, k-means, the spatial vote, the label-free
    # scores, the label scores), once per set of weights it clusters (the live ones, and the averaged ones if any)
    evaluator = ClusteringEvaluator(datamodule.batch, datamodule.n_clusters, seed=args.seed, every=epochs, umap=False,
                                    radius=config.get("radius", 0) if datamodule.task == "st" else 0)
    weight_sets = 1 if config.get("weight_averaging", "none") == "none" else 2
    evaluations = []
    for _ in range(3):
        t0 = clock(device)
        for _ in range(weight_sets):
            evaluator.cluster(module)
        evaluations.append(clock(device) - t0)
    evaluation_s = statistics.median(evaluations)
    saved = saved_for_backward_bytes(module, batch, low)
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    outcome = runner.train_one(config, datamodule, args.seed, run_dir=None)
    # the Trainer's epochs timed as the bare steps were: the median after the warm-up; the last epoch holds the
    # evaluation and is left out (with a single timed epoch it is used, less the evaluation timed above)
    timed = outcome["epoch_seconds"][args.warmup:-1]
    trainer_epoch_s = statistics.median(timed) if timed else outcome["epoch_seconds"][-1] - evaluation_s
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "dataset": config["dataset"], "n_cells": datamodule.n_cells,
        "n_genes": datamodule.n_genes, "hidden_dim": args.hidden_dim, "device": str(device), "precision": args.precision,
        "threads": torch.get_num_threads(), "setup_s": setup_s, "epoch_s": step["total_s"], "encoders_s": step["encoders_s"],
        "objective_s": step["losses_s"], "optimiser_s": step["optimiser_s"], "evaluation_s": evaluation_s,
        "trainer_epoch_s": trainer_epoch_s, "lightning_overhead_s": trainer_epoch_s - step["total_s"],
        "saved_mb": saved / 2**20, "saved_kb_per_cell": saved / 1024 / datamodule.n_cells, "gpu_peak_mb": gpu_peak,
        "epochs_timed": args.epochs, "code": code_version(ROOT), "machine": machine(),
    }


def row(r: dict) -> str:
    cells = [r["date"], r["dataset"], str(r["n_cells"]), str(r["hidden_dim"]), r["device"], r["precision"], str(r["threads"]),
             *(f"{r[k]:.4f}" for k in ("epoch_s", "encoders_s", "objective_s", "optimiser_s", "evaluation_s",
                                       "trainer_epoch_s", "lightning_overhead_s")), f"{r['saved_kb_per_cell']:.1f}",
             r["code"], r["machine"]]
    return "| " + " | ".join(cells) + " |"


MEANING = ("Median of the timed epochs after warm-up. Encoders and objective include their backward passes. Evaluation: "
           "one evaluation as a run makes it (embedding, k-means, label-free and label scores; twice with weight "
           "averaging: the live and the averaged weights). Trainer epoch: the same number of epochs through the Trainer with "
           "its callbacks and one evaluation at the end; the median of its epochs after the warm-up, the last one (which "
           "holds the evaluation) left out. The Lightning overhead is that less the bare step.")


def append(path: Path, r: dict, command: str) -> None:
    """One row per measurement, under the header (written once, with what the columns mean). A file whose table has
    other columns gets a new section, so rows of different meaning never share a table."""
    if path.exists():
        text = path.read_text()
        if HEADER not in text:
            text += (f"\n## Rows from {r['date']} on\n\n{MEANING}\n\n"
                     f"{HEADER}\n|{'---|' * (HEADER.count('|') - 1)}\n")
    else:
        text = f"# Epoch time, split (benchmarks/speed.py)\n\n{MEANING}\n\n{HEADER}\n|{'---|' * (HEADER.count('|') - 1)}\n"
    atomic_write_text(path, text + row(r) + f" <!-- {command} -->\n")


def main(argv=None) -> int:
    parser = CommandLineParser(prog="speed.py", command="python benchmarks/speed.py", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="pbmc10x")
    parser.add_argument("--hidden-dim", type=whole_number(1), default=1500)
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed", "16-mixed"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--epochs", type=whole_number(1), default=10, help="timed epochs (after --warmup)")
    parser.add_argument("--warmup", type=whole_number(0), default=2)
    parser.add_argument("--threads", type=whole_number(1), default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=whole_number(0), default=5)
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=output_file, default=ROOT / "benchmarks" / "results" / "speed.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/speed.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    result = measure(args)
    print(json.dumps(result))
    append(args.output, result, command)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
