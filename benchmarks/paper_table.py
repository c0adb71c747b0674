#!/usr/bin/env python
"""The results table: scRCL on every local dataset × seeds, beside PCA(30) + k-means and Leiden.

  python benchmarks/paper_table.py                                  every local scRNA-seq dataset, 5 seeds
  python benchmarks/paper_table.py --datasets pbmc10x,pollen --seeds 5,15 --epochs 100
  python benchmarks/paper_table.py --datasets pbmc68k --seeds 5 --epochs 2 --set hidden_dim=32   a smoke test
  python benchmarks/paper_table.py --seeds-for pbmc10x=5,15,25      fewer seeds for one dataset (said in its row)

Each (dataset, seed) is one run directory ``RUNS/<dataset>/seed<s>/`` written by ``scrcl.runner.run``
at the dataset's own settings (``configs/datasets/NAME.yaml`` for the paper's datasets, the generic
defaults otherwise; ``--epochs`` and ``--set key=value`` override them for every dataset). A run whose
``metrics.json`` exists is not run again, so an interrupted table resumes where it stopped; a run
left half-way continues from its last checkpoint. The baselines run on the same preprocessed matrix
scRCL takes as input (the DataModule's ``batch.x``): PCA(30) + k-means with the true number of
clusters, and scanpy Leiden whose resolution is found by bisection to give that number of clusters
(labels are not used for it). Labels only score. The scRCL figures are the final epoch's; the
best-epoch-by-label figures (``oracle_*`` of metrics.json) go to a separate table that says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.quality import mean_std, parse_sets, pca_kmeans  # noqa: E402
from scrcl.config import RUN_DEFAULTS, generic_config, parse_seeds, resolve_config  # noqa: E402
from scrcl.atomic import atomic_write_text  # noqa: E402
from scrcl.errors import UserError, run_entry  # noqa: E402
from scrcl.metrics import SCORES  # noqa: E402

DEFAULT_SEEDS = "5,15,25,35,45"
# Keys that change what a run computes; an existing run is reused only if all of them agree.
RUN_METHOD_KEYS = ("refine", "views", "gene_graph", "graph_pcs", "eval_every", "n_clusters", "label_key")
# What the table runs never need: UMAPs every few evaluations (the final one is still drawn).
TABLE_RUN_SETTINGS = {"logger": "none", "progress": False, "umap_every": 0}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, not a usage dump
        print(f"error: {message} (see python benchmarks/paper_table.py --help)", file=sys.stderr)
        sys.exit(2)


# -- which datasets, which settings ----------------------------------------------------------------
def local_datasets(data_dir: str | None, task: str) -> list[str]:
    """Registry datasets with every file of one source present in the data directory (sources with
    no files, like pbmc68k bundled with scanpy, always count); ``task`` 'sc', 'st' or 'all'."""
    from datamodules.loading import resolve_data_dir
    from datamodules.registry import REGISTRY

    root = resolve_data_dir(data_dir)
    names = []
    for name, spec in sorted(REGISTRY.items()):
        if task != "all" and spec.task != task:
            continue
        if any(all((root / f.path).exists() for f in source.files.values()) for source in spec.sources):
            names.append(name)
    return names


def table_config(name: str, epochs: int | None, sets: dict, data_dir: str | None) -> dict:
    """The dataset's own resolved config with the table's overrides (``--epochs``, ``--set``)."""
    overrides = {**sets, **TABLE_RUN_SETTINGS, "epochs": epochs, "data_dir": data_dir}
    return resolve_config(dataset=name, overrides=overrides)


def method_keys(config: dict) -> list[str]:
    return sorted(set(generic_config(config["task"])) | set(RUN_METHOD_KEYS))


def check_same_settings(run_dir: Path, config: dict) -> None:
    """Refuse to mix runs made with other settings into the table."""
    import yaml

    old = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    differ = [k for k in method_keys(config) if old.get(k, RUN_DEFAULTS.get(k)) != config.get(k)]
    if differ:
        shown = ", ".join(f"{k}: {old.get(k)!r} there, {config.get(k)!r} now" for k in differ)
        raise UserError(f"{run_dir} was run with other settings ({shown}); use another --runs-dir or remove it")


# -- scRCL runs -----------------------------------------------------------------------------------
def scrcl_run(config: dict, run_dir: Path, runs_dir: Path, seed: int, keep_checkpoints: bool) -> dict:
    """One run directory's metrics.json (``run_dir`` under ``runs_dir``); trains only when it does not exist yet."""
    from scrcl import runner

    metrics_path = run_dir / "metrics.json"
    label = run_dir.relative_to(runs_dir)
    if metrics_path.exists():
        check_same_settings(run_dir, config)
        print(f"{label}: done before, reading {metrics_path}", flush=True)
        return json.loads(metrics_path.read_text())
    config = {**config, "seed": seed, "seeds": None, "output": str(runs_dir), "run_name": str(label)}
    resume = run_dir if run_dir.exists() and any(run_dir.iterdir()) else None
    if resume is not None:
        check_same_settings(run_dir, config)
    runner.run(config, resume_dir=resume, log=lambda line: print(f"{label} {line}", flush=True))
    if not keep_checkpoints:  # at d = 1500 each is ~170 MB; the finished run does not need it
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return json.loads(metrics_path.read_text())


# -- baselines ------------------------------------------------------------------------------------
# Part of each cached baseline's key: a cache written by an older version is recomputed.
# 2: PCA and the neighbour graph on one BLAS/OpenMP thread (before, the figures moved with the thread count).
BASELINE_VERSION = 2


def leiden_with_k(x, n_clusters: int, seed: int, max_steps: int = 40) -> dict:
    """scanpy Leiden on the 15-NN graph of PCA(30) of ``x`` (N, h), its resolution bisected until it
    gives ``n_clusters`` clusters (else the closest count found). Label-free: only the count is used.
    Returns {'pred', 'resolution', 'n_found'}.

    PCA and the neighbour graph run on one BLAS/OpenMP thread: with two threads the summation order
    changes the last bits of the PCs, the graph's ties and then the partition, and the figure
    depended on how many threads the calling process had."""
    import anndata as ad
    import scanpy as sc
    from threadpoolctl import threadpool_limits

    adata = ad.AnnData(np.asarray(x, dtype=np.float32))
    with threadpool_limits(limits=1):
        sc.pp.pca(adata, n_comps=min(30, min(adata.shape) - 1), random_state=seed)
        sc.pp.neighbors(adata, n_neighbors=15, random_state=seed)

    def cluster(resolution: float) -> np.ndarray:
        sc.tl.leiden(adata, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
        return adata.obs["leiden"].cat.codes.to_numpy().astype(np.int64)

    tried: list[tuple[int, float, np.ndarray]] = []

    def attempt(resolution: float) -> int:
        pred = cluster(resolution)
        n = int(len(np.unique(pred)))
        tried.append((abs(n - n_clusters), resolution, pred))
        return n

    lo, hi = 0.0, 1.0
    while attempt(hi) < n_clusters and hi < 1024:  # grow the bracket until it holds enough clusters
        lo, hi = hi, hi * 2
    for _ in range(max_steps):
        if tried[-1][0] == 0:
            break
        mid = (lo + hi) / 2
        if attempt(mid) < n_clusters:
            lo = mid
        else:
            hi = mid
    _, resolution, pred = min(tried, key=lambda t: (t[0], t[1]))
    return {"pred": pred, "resolution": float(resolution), "n_found": int(len(np.unique(pred)))}


def baselines(datamodule, config: dict, seed: int, runs_dir: Path) -> dict:
    """PCA(30) + k-means and Leiden scores for one seed, cached beside the runs (recomputed when the
    preprocessing changed)."""
    from scrcl.metrics import clustering_scores
    from scrcl.runner import write_json

    params = {"input": config["input"], "hvg": config["hvg"], "n_clusters": datamodule.n_clusters, "n_cells": datamodule.n_cells,
              "version": BASELINE_VERSION}
    path = runs_dir / config["dataset"] / f"baselines_seed{seed}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("params") == params:
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


# -- the table ------------------------------------------------------------------------------------
def machine() -> str:
    """Host, CPU model and cores, and the accelerator torch sees."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()}, {cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def method_rows(results: list[dict], keys, extra_note=lambda r: "") -> list[str]:
    """Three table rows per dataset: scRCL (final epoch), PCA(30) + k-means, Leiden; mean ± std of ``keys``."""
    lines = []
    for r in results:
        m0 = r["scrcl"][0]
        head = [r["dataset"], str(m0["n_cells"]), str(m0["n_genes"]), str(m0["n_clusters"])]
        epochs = sorted({m["epoch"] for m in r["scrcl"]})
        lines.append(_row([*head, "scRCL (final epoch)", *[mean_std(r["scrcl"], k) for k in keys],
                           f"epoch {', '.join(map(str, epochs))}; seeds {', '.join(str(m['seed']) for m in r['scrcl'])}{extra_note(r)}"]))
        km = [b["pca_kmeans"] for b in r["baselines"]]
        lines.append(_row([*head, "PCA(30) + k-means", *[mean_std(km, k) for k in keys], ""]))
        ld = [b["leiden"] for b in r["baselines"]]
        found = sorted({b["n_found"] for b in ld})
        lines.append(_row([*head, "Leiden (resolution for k)", *[mean_std(ld, k) for k in keys],
                           f"resolution {mean_std(ld, 'resolution')}; clusters found {', '.join(map(str, found))}"]))
    return lines


def render(results: list[dict], *, command: str, started: str, seconds: float, seeds: list[int], runs_dir: Path) -> str:
    """RESULTS.md: header, final-epoch table, settings, and the separate oracle table."""
    n_runs = sum(len(r["scrcl"]) for r in results)
    train_s = sum(m.get("seconds", 0.0) for r in results for m in r["scrcl"])
    lines = [
        "# Results table: scRCL (final epoch) vs PCA(30) + k-means vs Leiden",
        "",
        f"- Command: `{command}`",
        f"- Date: {started}; machine: {machine()}",
        f"- Total time of this invocation: {seconds / 60:.1f} min; scRCL run time summed over the {n_runs} runs "
        f"(from their metrics.json, including runs done by earlier invocations): {train_s / 60:.1f} min",
        f"- Runs: `{runs_dir}/<dataset>/seed<s>/` (config.yaml, metrics.json, history.csv, result.h5ad)",
        f"- Mean ± std (population) over seeds {', '.join(map(str, seeds))}"
        + (f" (other seeds where the note says so: {', '.join(r['dataset'] for r in results if r['seeds'] != seeds)})"
           if any(r["seeds"] != seeds for r in results) else "")
        + ". Labels only score a finished clustering.",
        "- Baselines run on the same preprocessed matrix scRCL takes as input (the DataModule's `batch.x`: the "
        "dataset's top-h HVGs, `input` as in its config). PCA(30) + k-means: seeded, the true number of clusters k. "
        "Leiden: scanpy, 15-NN graph of PCA(30), resolution bisected until it gives k clusters (no labels used).",
        "",
        "## Final epoch (labels choose nothing)",
        "",
        _row(["dataset", "cells", "genes", "k", "method", *[k.upper() for k in SCORES], "note"]),
        "|---|---|---|---|---|" + "---|" * len(SCORES) + "---|",
    ]
    lines += method_rows(results, SCORES)
    lines += settings_section(results, "dataset")
    lines += oracle_section(results, "dataset", SCORES,
                            "The epoch with the best NMI (ARI for spatial data) against the annotations among the evaluations every "
                            "`eval_every` epochs, as the reference implementation reports it. Labels choose the epoch here, so these "
                            "figures are optimistic and are shown only for comparison with the paper's protocol.")
    return "\n".join(lines) + "\n"


def settings_section(results: list[dict], label: str) -> list[str]:
    """The method keys of each dataset's scRCL runs, as a two-column table."""
    lines = ["", "## Settings of the scRCL runs", "", _row([label, "config (method keys)"]), "|---|---|"]
    for r in results:
        shown = {k: r["config"].get(k) for k in method_keys(r["config"]) if k not in ("label_key", "n_clusters")}
        lines.append(_row([r["dataset"], f"`{json.dumps(shown, sort_keys=True)}`"]))
    return lines


def oracle_section(results: list[dict], label: str, keys, explanation: str) -> list[str]:
    """The label-picked epoch's figures (``oracle_*``), in their own clearly named table."""
    lines = ["", "## Oracle epoch — uses the labels to pick the epoch (not a result)", "", explanation, "",
             _row([label, *[f"oracle {k.upper()}" for k in keys], "epochs picked"]), "|---|" + "---|" * len(keys) + "---|"]
    for r in results:
        picked = ", ".join(str(m.get("oracle_epoch", "–")) for m in r["scrcl"])
        lines.append(_row([r["dataset"], *[mean_std(r["scrcl"], f"oracle_{k}") for k in keys], picked]))
    return lines


def parse_seeds_for(items: list[str]) -> dict[str, list[int]]:
    """``['pbmc10x=5,15,25']`` -> ``{'pbmc10x': [5, 15, 25]}`` (registry names resolved)."""
    from datamodules.registry import get_spec

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UserError(f"--seeds-for takes NAME=SEEDS (e.g. pbmc10x=5,15,25), got '{item}'")
        out[get_spec(name.strip()).name] = parse_seeds(value)
    return out


def table_rows(name: str, args, seeds: list[int], sets: dict) -> dict:
    """Every seed of one dataset: scRCL runs (or their existing metrics) and the baselines."""
    from scrcl import runner

    config = table_config(name, args.epochs, sets, args.data_dir)
    datamodule = runner.make_datamodule(config)
    datamodule.setup("fit")
    if not datamodule.has_labels:
        raise UserError(f"dataset '{name}' has no labels to score; leave it out of --datasets")
    rows = {"dataset": name, "config": config, "seeds": list(seeds), "scrcl": [], "baselines": []}
    for seed in seeds:
        rows["baselines"].append(baselines(datamodule, config, seed, args.runs_dir))
        rows["scrcl"].append(scrcl_run(config, args.runs_dir / name / f"seed{seed}", args.runs_dir, seed, args.keep_checkpoints))
        b, m = rows["baselines"][-1], rows["scrcl"][-1]
        print(f"{name} seed {seed}: scRCL ARI {m['ari']:.4f} | PCA+k-means ARI {b['pca_kmeans']['ari']:.4f} | "
              f"Leiden ARI {b['leiden']['ari']:.4f}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = _Parser(prog="paper_table.py", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", help="comma-separated registry names (default: every dataset available locally)")
    parser.add_argument("--task", default="sc", choices=("sc", "st", "all"), help="which local datasets by default")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS)
    parser.add_argument("--seeds-for", action="append", default=[], metavar="NAME=SEEDS",
                        help="other seeds for one dataset, e.g. pbmc10x=5,15,25 (repeatable); its row lists them")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every dataset (default: each dataset's config)")
    parser.add_argument("--set", action="append", default=[], help="config override key=value for every dataset")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $SCRCL_DATA_DIR, then ./data)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "paper_table", help="where the run directories go")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's checkpoints")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "RESULTS.md")
    args = parser.parse_args(argv)
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M %Z")
    command = "python benchmarks/paper_table.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))

    from datamodules.registry import get_spec
    from scrcl import runner

    seeds = parse_seeds(args.seeds)
    sets = parse_sets(args.set)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    names = [get_spec(n).name for n in args.datasets.split(",") if n.strip()] if args.datasets else local_datasets(args.data_dir, args.task)
    if not names:
        raise UserError("no dataset to run: none is available in the data directory; pass --data-dir or --datasets")
    runner.quiet_libraries()
    seeds_for = parse_seeds_for(args.seeds_for)
    unknown = sorted(set(seeds_for) - set(names))
    if unknown:
        raise UserError(f"--seeds-for names {', '.join(unknown)}, which is not among the table's datasets ({', '.join(names)})")
    results = [table_rows(name, args, seeds_for.get(name, seeds), sets) for name in names]
    text = render(results, command=command, started=started, seconds=time.perf_counter() - t0, seeds=seeds, runs_dir=args.runs_dir)
    atomic_write_text(args.output, text)
    print(text, end="")
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
