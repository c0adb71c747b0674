#!/usr/bin/env python
"""What the low-pass smoothing of the input does by itself: PCA(30) + k-means on Fᵗ X (an analysis that uses labels).

  python studies/smoothing.py                                   every local scRNA-seq dataset
  python studies/smoothing.py --datasets pollen,pbmc10x --ks 5,15 --passes 0,2 --seeds 5 --graph-pcs default,50
  python studies/smoothing.py --datasets dlpfc_151673,dlpfc_151674,dlpfc_151675 --ks 5,15 --passes 0,2,5,8,10 \
      --output studies/results/smoothing_spatial.md               spatial slices: the spatial k-NN graph

The generic scRNA-seq config feeds the MLP view F^{t₁} X with t₁ = 2 passes of F = D̃^{-1/2}(A + I)D̃^{-1/2}
over the k-NN cell graph (``tms: [2, 0]``, ``k: 15``). This measures, with no training, how much cell-type
structure that smoothing keeps: for each graph size k and number of passes t, PCA(30) + k-means with the
true number of clusters on Fᵗ X, on the same preprocessed matrix ``X`` scRCL takes as input. It also gives
each graph's edge homophily (the fraction of edges joining two cells of the same annotated type), which is
what decides whether averaging over neighbours blurs the types. A spatial slice is smoothed over its graph of
the k nearest spots (its published settings otherwise) and also scored after the spatial majority vote. ``--graph-pcs`` compares the features the
graph is built on: ``default`` (the reference's rule: the HVGs below 10 000 cells) and P principal components
(config key ``graph_pcs``). Writes ``studies/results/smoothing.md``.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from scrcl.experiments.tables import machine, table_config, table_datasets
from scrcl.experiments.tables import pca_kmeans
from datamodules.datamodule import ScRCLDataModule
from scrcl.train.loggers import quiet_libraries
from scrcl.atomic import atomic_write_text
from scrcl.train.config import parse_int_list, parse_seeds
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry


def homophily(graph, y: np.ndarray) -> float:
    """Fraction of the graph's edges (i ≠ j, both annotated) that join cells of the same label."""
    coo = graph.tocoo()
    keep = (coo.row != coo.col) & (y[coo.row] >= 0) & (y[coo.col] >= 0)
    return float(np.mean(y[coo.row[keep]] == y[coo.col[keep]])) if keep.any() else float("nan")


def graph_features_label(n_pcs: int | None) -> str:
    return "default (HVGs)" if n_pcs is None else ("HVGs" if n_pcs == 0 else f"PCA-{n_pcs}")


def dataset_rows(name: str, ks: list[int], passes: list[int], seeds: list[int], data_dir: str | None,
                 graph_pcs: tuple = (None,)) -> list[dict]:
    """One row per (graph features, k, t): homophily of the k-NN graph and PCA + k-means scores on Fᵗ X,
    mean over seeds."""
    from datamodules import graphs
    from scrcl.eval.clustering import refine_spatial
    from scrcl.eval.metrics import clustering_scores

    config = table_config(name, None, {}, data_dir)
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    if not datamodule.has_labels:
        raise UserError(f"dataset '{name}' has no labels; this analysis needs them")
    x = datamodule.batch.x.numpy()
    y = datamodule.batch.y.numpy()
    known = y >= 0
    spatial = config["task"] == "st"
    coords = datamodule.batch.coords.numpy() if spatial else None
    lognorm = None if spatial else datamodule.prepared.layers["lognorm"]
    rows = []
    # A spatial slice's graph is the k nearest spots on the coordinates: there are no graph features to compare.
    for n_pcs, k in ((p, k) for p in ((None,) if spatial else graph_pcs) for k in ks):
        if n_pcs is None and k == config["k"] and config.get("graph_pcs") is None:
            graph = datamodule.prepared.obsp["cell_graph"]  # the very graph a run gets
        elif spatial:
            graph = graphs.spatial_graph(coords, k)
        else:
            graph = graphs.expression_graph(lognorm, k, n_pcs=n_pcs)
        filt = graphs.normalized_adjacency(graph)
        for t in passes:
            xt = graphs.smooth(filt, x, t)
            preds = [pca_kmeans(xt, datamodule.n_clusters, s) for s in seeds]
            scores = [clustering_scores(y[known], p[known]) for p in preds]
            row = {"dataset": name, "n_cells": datamodule.n_cells, "n_clusters": datamodule.n_clusters,
                   "graph": "spatial coordinates" if spatial else graph_features_label(n_pcs), "k": k, "t": t,
                   "homophily": homophily(graph, y),
                   **{m: float(np.mean([sc[m] for sc in scores])) for m in ("ari", "nmi")},
                   "ari_std": float(np.std([sc["ari"] for sc in scores]))}
            if spatial:  # the same majority vote a spatial run applies (the config's radius)
                refined = [clustering_scores(y[known], refine_spatial(p, coords, config["radius"])[known]) for p in preds]
                row.update(radius=config["radius"], ari_refined=float(np.mean([sc["ari"] for sc in refined])),
                           ari_refined_std=float(np.std([sc["ari"] for sc in refined])))
            rows.append(row)
            print(f"{name} graph on {row['graph']} k={k} t={t}: homophily {row['homophily']:.3f}, PCA+k-means ARI {row['ari']:.4f} "
                  f"NMI {row['nmi']:.4f}" + (f", refined ARI {row['ari_refined']:.4f}" if spatial else ""), flush=True)
    return rows


def render(rows: list[dict], *, command: str, started: str, seconds: float, seeds: list[int], config_k: int) -> str:
    single_cell = [r for r in rows if "ari_refined" not in r]
    lines = [
        "# Low-pass smoothing of the input by itself: PCA(30) + k-means on Fᵗ X (an analysis that uses labels)",
        "",
        f"- Command: `{command}`",
        f"- Date: {started}; machine: {machine()}; {seconds / 60:.1f} min",
        f"- PCA(30) + k-means with the true number of clusters; mean over seeds {', '.join(map(str, seeds))} (ARI ± std).",
    ]
    if single_cell:
        lines += [
            f"- X: each dataset's preprocessed model input (generic config: log-normalised top-2000 HVGs). F: the GCN filter "
            f"D̃^(-1/2)(A + I)D̃^(-1/2) of the cosine k-NN cell graph (the generic config uses k = {config_k} and feeds the "
            "MLP view F² X). Homophily: fraction of graph edges joining two cells of the same type.",
            "",
            "| dataset | cells | types | graph on | k | homophily | t (passes) | ARI | NMI |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for r in single_cell:
        lines.append(f"| {r['dataset']} | {r['n_cells']} | {r['n_clusters']} | {r['graph']} | {r['k']} | {r['homophily']:.3f} | {r['t']} | "
                     f"{r['ari']:.4f} ± {r['ari_std']:.4f} | {r['nmi']:.4f} |")
    spatial = [r for r in rows if "ari_refined" in r]
    if spatial:
        lines += [
            "",
            "## Spatial slices",
            "",
            "X: the slice's model input (seurat_v3 HVGs, normalised, log1p, scaled without centring). F: the filter of the "
            "k nearest spots on the coordinates (a published DLPFC setting: k = 5, MLP view F¹⁰ X, GNN view F⁸ X). "
            "*refined*: the majority vote over the `radius` nearest spots that spatial runs apply. Homophily: fraction "
            "of graph edges joining two spots of the same annotated domain.",
            "",
            "| slice | spots | domains | k | homophily | t (passes) | ARI raw | NMI raw | ARI refined (radius) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [f"| {r['dataset']} | {r['n_cells']} | {r['n_clusters']} | {r['k']} | {r['homophily']:.3f} | {r['t']} | "
                  f"{r['ari']:.4f} ± {r['ari_std']:.4f} | {r['nmi']:.4f} | {r['ari_refined']:.4f} ± {r['ari_refined_std']:.4f} "
                  f"({r['radius']}) |" for r in spatial]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = CommandLineParser(prog="smoothing.py", command="python studies/smoothing.py", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", help="comma-separated registry names (default: every local scRNA-seq dataset)")
    parser.add_argument("--ks", default="5,10,15", help="cell-graph sizes k")
    parser.add_argument("--passes", default="0,1,2", help="numbers of smoothing passes t")
    parser.add_argument("--seeds", default="5,15,25")
    parser.add_argument("--graph-pcs", default="default,50",
                        help="features of the cell graph: 'default' (the reference's rule) and/or numbers of principal components")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=output_file, default=ROOT / "studies" / "results" / "smoothing.md")
    args = parser.parse_args(argv)
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M %Z")
    command = "python studies/smoothing.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))

    from scrcl.train.config import generic_config

    ks, passes, seeds = parse_int_list(args.ks, "ks"), parse_int_list(args.passes, "passes"), parse_seeds(args.seeds)
    if min(ks) < 1 or min(passes) < 0:
        raise UserError("--ks must be ≥ 1 and --passes ≥ 0")
    graph_pcs = tuple(None if v.strip() == "default" else v.strip() for v in args.graph_pcs.split(",") if v.strip())
    if not graph_pcs or any(v is not None and (not v.isdigit() or int(v) < 1) for v in graph_pcs):
        raise UserError(f"--graph-pcs takes 'default' and/or positive integers, e.g. default,50; got '{args.graph_pcs}'")
    graph_pcs = tuple(None if v is None else int(v) for v in graph_pcs)
    names = table_datasets(args.datasets, args.data_dir, "sc")
    if not names:
        raise UserError("no dataset to run: none is available in the data directory; pass --data-dir or --datasets")
    quiet_libraries()
    rows = [row for name in names for row in dataset_rows(name, ks, passes, seeds, args.data_dir, graph_pcs)]
    text = render(rows, command=command, started=started, seconds=time.perf_counter() - t0, seeds=seeds,
                  config_k=generic_config("sc")["k"])
    atomic_write_text(args.output, text)
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
