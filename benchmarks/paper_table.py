#!/usr/bin/env python
"""The results table: scRCL on every local dataset × seeds, beside PCA(30) + k-means and Leiden.

  python benchmarks/paper_table.py                                  every local scRNA-seq dataset, 5 seeds
  python benchmarks/paper_table.py --datasets pbmc10x,pollen --seeds 5,15 --epochs 100
  python benchmarks/paper_table.py --datasets pbmc68k --seeds 5 --epochs 2 --set hidden_dim=32 \
      --runs-dir runs/smoke --output runs/smoke/RESULTS.md                                       a smoke test
  python benchmarks/paper_table.py --seeds-for pbmc10x=5,15,25      fewer seeds for one dataset (said in its row)

The committed benchmarks/results/RESULTS.md is written only by the command recorded in it, or when ``--output`` names
it: another command's table (a smoke test, a subset) needs its own ``--output``.

Each (dataset, seed) is one run directory ``RUNS/<dataset>/seed<s>/`` written by ``scrcl.train.run.run``
at the dataset's own settings (``configs/datasets/NAME.yaml`` for the paper's datasets, the generic
defaults otherwise; ``--epochs`` and ``--set key=value`` override them for every dataset). A run whose
``metrics.json`` exists is not run again, so an interrupted table resumes where it stopped; a run
left half-way continues from its last checkpoint. The baselines run on the same preprocessed matrix
scRCL takes as input (the DataModule's ``batch.x``): PCA(30) + k-means with the true number of
clusters, and scanpy Leiden whose resolution is found by bisection to give that number of clusters
(labels are not used for it). Labels only score. The scRCL figures are the final epoch's, or, for runs with
``select`` (a label-free criterion), the evaluation it chose, with the final epoch's in a row beside it (and, for
runs with averaged weights, the live weights' final epoch: no averaging, as the reference trains); the
best-epoch-by-label figures (``oracle_*`` of metrics.json) go to a separate table that says so, followed by the
paired differences reported − final, reported − live final and oracle − reported of the same runs.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from datamodules.datamodule import ScRCLDataModule
from datamodules.registry import DATA_DIR_HELP
from scrcl.atomic import atomic_write_text
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry, whole_number
from scrcl.eval.metrics import SCORES
from scrcl.experiments.tables import (
    BASELINE_VERSION, DEFAULT_SEEDS, MARGINS_NOTE, cached_baselines, header_lines, margin, method_rows, oracle_section, seeds_line, selection_section, parse_seeds_for, parse_sets, table_datasets,
    pca_kmeans, leiden_with_k, scrcl_run, settings_section, table_config, table_output, shown_path, table_row,
)
from scrcl.train.config import parse_seeds
from scrcl.train.loggers import quiet_libraries
from scrcl.train.results import write_json

ROOT = Path(__file__).resolve().parent.parent


# -- baselines ------------------------------------------------------------------------------------
def baselines(datamodule, config: dict, seed: int, runs_dir: Path) -> dict:
    """PCA(30) + k-means and Leiden scores for one seed, cached beside the runs (recomputed when the
    preprocessing changed)."""
    from scrcl.eval.metrics import clustering_scores

    params = {"input": config["input"], "hvg": config["hvg"], "n_clusters": datamodule.n_clusters, "n_cells": datamodule.n_cells,
              "version": BASELINE_VERSION}
    path = runs_dir / config["dataset"] / f"baselines_seed{seed}.json"
    cached = cached_baselines(path, params)
    if cached is not None:
        return cached
    x = datamodule.batch.x.numpy()
    y = datamodule.batch.y.numpy()
    known = y >= 0
    t0 = time.perf_counter()
    km = pca_kmeans(x, datamodule.n_clusters, seed)
    t1 = time.perf_counter()
    leiden = leiden_with_k(x, datamodule.n_clusters, seed)
    t2 = time.perf_counter()
    out = {
        "params": params,
        "pca_kmeans": {**clustering_scores(y[known], km[known]), "seconds": t1 - t0},
        "leiden": {**clustering_scores(y[known], leiden["pred"][known]), "resolution": leiden["resolution"],
                   "n_found": leiden["n_found"], "seconds": t2 - t1},
    }
    write_json(path, out)
    return out


def render(results: list[dict], *, command: str, started: str, seconds: float, seeds: list[int], runs_dir: Path) -> str:
    """RESULTS.md: header, the reported and final-epoch table, the margins, settings, the separate oracle table, and
    what the label-free report changed against the final and oracle epochs."""
    lines = [
        "# Results table: scRCL vs PCA(30) + k-means vs Leiden",
        "",
        *header_lines(results, command=command, started=started, seconds=seconds),
        f"- Runs: `{shown_path(runs_dir)}/<dataset>/seed<s>/` (config.yaml, metrics.json, history.csv, result.h5ad)",
        *linked_runs_line(results),
        seeds_line(results, seeds)
        + ". Labels only score a finished clustering.",
        "- Baselines run on the same preprocessed matrix scRCL takes as input (the DataModule's `batch.x`: the "
        "dataset's top-h HVGs, `input` as in its config). PCA(30) + k-means: seeded, the true number of clusters k. "
        "Leiden: scanpy, 15-NN graph of PCA(30), resolution bisected until it gives k clusters (no labels used).",
        "",
        "## Reported evaluation (labels choose nothing)",
        "",
        table_row(["dataset", "cells", "genes", "k", "method", *[k.upper() for k in SCORES], "note"]),
        "|---|---|---|---|---|" + "---|" * len(SCORES) + "---|",
    ]
    lines += method_rows(results, SCORES)
    lines += ["", "## Margins: scRCL minus each baseline, paired by seed", "", MARGINS_NOTE, "",
              table_row(["dataset", "ARI − PCA + k-means", "ARI − Leiden", "NMI − PCA + k-means", "NMI − Leiden"]),
              "|---|---|---|---|---|"]
    lines += [table_row([r["dataset"], margin(r, "pca_kmeans", "ari"), margin(r, "leiden", "ari"),
                         margin(r, "pca_kmeans", "nmi"), margin(r, "leiden", "nmi")]) for r in results]
    lines += settings_section(results, "dataset")
    lines += oracle_section(results, "dataset", SCORES,
                            "The epoch with the best NMI (ARI for spatial data) against the annotations among the evaluations every "
                            "`eval_every` epochs, as the reference implementation reports it. Labels choose the epoch here, so these "
                            "figures are optimistic and are shown only for comparison with the paper's protocol.")
    lines += selection_section(results, "dataset")
    return "\n".join(lines) + "\n"


def linked_runs_line(results: list[dict]) -> list[str]:
    """A line naming the run directories that are links to another study's runs (their settings were checked)."""
    linked = [f"{r['dataset']} seed {seed} → `{target}`" for r in results for seed, target in r.get("linked", {}).items()]
    if not linked:
        return []
    return ["- Runs that are links to another study's run directory with the same settings (checked against this "
            "table's config), not runs of their own: " + "; ".join(linked)]


def linked_runs(dataset_dir: Path, seeds: list[int]) -> dict[int, str]:
    """The seeds whose run directory is a link to another study's run, with where it leads (as results files show
    paths). A link must lead to a finished run of that seed: the table neither trains in another study's directory
    nor counts a run of another seed. Checked before any work is done."""
    linked = {}
    for seed in seeds:
        run_dir = dataset_dir / f"seed{seed}"
        if not run_dir.is_symlink():
            continue
        target = run_dir.resolve()
        metrics = target / "metrics.json"
        if not metrics.exists():
            raise UserError(f"{run_dir} links to {target}, which holds no finished run; finish it in its own study or "
                            "remove the link")
        found = json.loads(metrics.read_text()).get("seed")
        if found != seed:
            raise UserError(f"{run_dir} links to a run of seed {found}, not seed {seed}; link the right run or remove the link")
        linked[seed] = shown_path(target)
    return linked


def table_rows(name: str, args, seeds: list[int], sets: dict) -> dict:
    """Every seed of one dataset: scRCL runs (or their existing metrics) and the baselines."""
    config = table_config(name, args.epochs, sets, args.data_dir)
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    if not datamodule.has_labels:
        raise UserError(f"dataset '{name}' has no labels to score; leave it out of --datasets")
    rows = {"dataset": name, "config": config, "seeds": list(seeds), "scrcl": [], "baselines": [],
            "linked": linked_runs(args.runs_dir / name, seeds)}
    for seed in seeds:
        run_dir = args.runs_dir / name / f"seed{seed}"
        rows["baselines"].append(baselines(datamodule, config, seed, args.runs_dir))
        rows["scrcl"].append(scrcl_run(config, run_dir, args.runs_dir, seed, args.keep_checkpoints))
        b, m = rows["baselines"][-1], rows["scrcl"][-1]
        print(f"{name} seed {seed}: scRCL ARI {m['ari']:.4f} | PCA+k-means ARI {b['pca_kmeans']['ari']:.4f} | "
              f"Leiden ARI {b['leiden']['ari']:.4f}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = CommandLineParser(prog="paper_table.py", command="python benchmarks/paper_table.py", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", help="comma-separated registry names (default: every dataset available locally)")
    parser.add_argument("--task", default="sc", choices=("sc", "st", "all"), help="which local datasets by default")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS)
    parser.add_argument("--seeds-for", action="append", default=[], metavar="NAME=SEEDS",
                        help="other seeds for one dataset, e.g. pbmc10x=5,15,25 (repeatable); its row lists them")
    parser.add_argument("--epochs", type=whole_number(1), default=None, help="epochs for every dataset (default: each dataset's config)")
    parser.add_argument("--set", action="append", default=[], help="config override key=value for every dataset")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "paper_table", help="where the run directories go")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's checkpoints")
    parser.add_argument("--output", type=output_file, default=None,
                        help="markdown file (default: benchmarks/results/RESULTS.md, unless it holds another command's "
                             "table: then this is refused, so a smoke test never replaces the committed table)")
    args = parser.parse_args(argv)
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M %Z")
    command = "python benchmarks/paper_table.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))

    seeds = parse_seeds(args.seeds)
    sets = parse_sets(args.set)
    if args.epochs is not None and sets.get("epochs", args.epochs) != args.epochs:
        raise UserError(f"--epochs {args.epochs} and --set epochs={sets['epochs']} disagree; give one")
    names = table_datasets(args.datasets, args.data_dir, args.task)
    if not names:
        raise UserError("no dataset to run: none is available in the data directory; pass --data-dir or --datasets")
    quiet_libraries()
    seeds_for = parse_seeds_for(args.seeds_for)
    unknown = sorted(set(seeds_for) - set(names))
    if unknown:
        raise UserError(f"--seeds-for names {', '.join(unknown)}, which is not among the table's datasets ({', '.join(names)})")
    output = table_output(args.output, ROOT / "benchmarks" / "results" / "RESULTS.md", command)  # before any run
    results = [table_rows(name, args, seeds_for.get(name, seeds), sets) for name in names]
    text = render(results, command=command, started=started, seconds=time.perf_counter() - t0, seeds=seeds, runs_dir=args.runs_dir)
    atomic_write_text(output, text)
    print(text, end="")
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
