#!/usr/bin/env python
"""Where a finished run loses its score, type by type, beside PCA(30) + k-means (an analysis that uses labels).

  python studies/per_type.py runs/paper_table/pbmc10x/seed5 runs/paper_table/pbmc10x/seed15 \
      --output studies/results/per_type_pbmc10x.md

For each finished, labelled run directory: every annotated type's size; how many of the edges of the run's
cell graph that leave its cells stay inside the type (its homophily), and which other type takes most of the
rest; and the fraction of its cells that land in the cluster matched to it (best one-to-one matching,
Hungarian, as ACC uses) for scRCL's final clustering and for PCA(30) + k-means with the true k on the same
preprocessed input, seeded with the run's seed (a spatial run with ``radius`` > 0: both after the same
majority vote over nearby spots). A type whose cells the graph joins to another type is where
the graph-trained views (CVC asks graph neighbours to coincide) can merge what PCA on the expression keeps
apart. The table scores a finished run; nothing here chooses a setting.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from scrcl.experiments.tables import machine
from scrcl.experiments.tables import pca_kmeans
from scrcl.train.loggers import quiet_libraries
from scrcl.atomic import atomic_write_text
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry


def edge_mix(graph, y: np.ndarray, n_types: int) -> np.ndarray:
    """(T, T) row-normalised counts of the graph's edges (i ≠ j, both labelled) from a cell of type a to a cell of type b."""
    coo = graph.tocoo()
    keep = (coo.row != coo.col) & (y[coo.row] >= 0) & (y[coo.col] >= 0)
    counts = np.zeros((n_types, n_types))
    np.add.at(counts, (y[coo.row[keep]], y[coo.col[keep]]), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def matched_recall(y: np.ndarray, pred: np.ndarray, n_types: int) -> np.ndarray:
    """Per true type, the fraction of its cells in the predicted cluster matched to it (0 when unmatched)."""
    from scrcl.eval.metrics import match_clusters

    mapping = match_clusters(y, pred)  # predicted cluster -> true type (or None)
    matched_type = np.array([-1 if mapping[p] is None else mapping[p] for p in pred.tolist()])
    sizes = np.bincount(y, minlength=n_types)
    hits = np.bincount(y[matched_type == y], minlength=n_types)
    return np.divide(hits, sizes, out=np.zeros(n_types), where=sizes > 0)


def run_rows(run_dir: Path, data_dir: str | None) -> dict:
    from scrcl.eval.analyses import CLUSTER
    from scrcl.eval.metrics import clustering_scores
    from scrcl.train.results import load_run

    run = load_run(run_dir, data_dir)
    batch = run.datamodule.batch
    if getattr(batch, "y", None) is None:
        raise UserError(f"{run_dir} has no labels; a per-type table needs an annotated data set")
    y = batch.y.numpy()
    names = run.datamodule.label_names
    pred = np.asarray(run.result.obs[CLUSTER]).astype(str)
    pred = np.unique(pred, return_inverse=True)[1]
    baseline = pca_kmeans(batch.x.numpy(), run.datamodule.n_clusters, seed=run.seed)
    radius = int(run.config.get("radius") or 0) if run.datamodule.task == "st" else 0
    if radius > 0 and getattr(batch, "coords", None) is not None:  # scrcl_cluster is the voted one: vote the baseline too
        from scrcl.eval.clustering import refine_spatial

        baseline = refine_spatial(baseline, batch.coords.numpy(), radius)
    mix = edge_mix(run.datamodule.prepared.obsp["cell_graph"], y, len(names))
    annotated = y >= 0  # cells without a label score nothing
    y, pred, baseline = y[annotated], pred[annotated], baseline[annotated]
    ours, theirs = matched_recall(y, pred, len(names)), matched_recall(y, baseline, len(names))
    rows = []
    for t, name in enumerate(names):
        others = mix[t].copy()
        others[t] = -1.0
        top = int(np.argmax(others))
        rows.append({"type": str(name), "cells": int((y == t).sum()), "homophily": float(mix[t, t]),
                     "joined_to": f"{names[top]} ({mix[t, top]:.2f})" if mix[t, top] > 0 else "–",
                     "scrcl": float(ours[t]), "pca_kmeans": float(theirs[t])})
    rows.sort(key=lambda r: -r["cells"])  # largest type first
    return {"run_dir": str(run_dir), "dataset": run.config.get("dataset") or run.config.get("data"), "seed": run.seed,
            "k": run.config.get("k"), "graph_pcs": run.config.get("graph_pcs"), "radius": radius, "rows": rows,
            "scrcl": clustering_scores(y, pred), "baseline": clustering_scores(y, baseline)}


def render(runs: list[dict], *, command: str, started: str, seconds: float) -> str:
    lines = [
        "# Per annotated type: the cell graph's mixing and what each clustering recovers (an analysis that uses labels)",
        "",
        f"- Command: `{command}`",
        f"- Date: {started}; machine: {machine()}; {seconds / 60:.1f} min",
        "- homophily: share of the edges leaving the type's cells (run's cell graph) that end in the same type; "
        "joined to: the other type taking most of the rest (its share). Recovered: fraction of the type's cells "
        "in the cluster matched to it (Hungarian, as ACC), scRCL final epoch vs PCA(30) + k-means (true k, same "
        "input, the run's seed).",
        "",
    ]
    for run in runs:
        s, b = run["scrcl"], run["baseline"]
        graph = "HVGs" if run["graph_pcs"] in (None, 0) else f"PCA-{run['graph_pcs']}"
        if run["radius"]:
            graph = f"spatial coordinates; both clusterings refined by the vote over {run['radius']} nearest spots"
        lines += [f"## {run['dataset']}, seed {run['seed']} (`{run['run_dir']}`)", "",
                  f"Cell graph: {run['k']}-NN on {graph}. ARI / NMI: scRCL {s['ari']:.3f} / {s['nmi']:.3f}; "
                  f"PCA + k-means {b['ari']:.3f} / {b['nmi']:.3f}.", "",
                  "| type | cells | homophily | joined to | recovered, scRCL | recovered, PCA + k-means |",
                  "|---|---|---|---|---|---|"]
        for r in run["rows"]:
            lines.append(f"| {r['type']} | {r['cells']} | {r['homophily']:.2f} | {r['joined_to']} | "
                         f"{r['scrcl']:.2f} | {r['pca_kmeans']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = CommandLineParser(prog="per_type.py", command="python studies/per_type.py", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="finished run directories (one seed each)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=output_file, default=ROOT / "studies" / "results" / "per_type.md")
    args = parser.parse_args(argv)
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M %Z")
    command = "python studies/per_type.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))

    quiet_libraries()
    runs = [run_rows(d, args.data_dir) for d in args.run_dirs]
    atomic_write_text(args.output, render(runs, command=command, started=started, seconds=time.perf_counter() - t0))
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
