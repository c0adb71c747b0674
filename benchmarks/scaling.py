#!/usr/bin/env python
"""Scaling benchmark (issue 4): per-epoch time and peak memory of scRCL, linear vs dense objective.

  python benchmarks/scaling.py            # N = 2k, 8k, 32k, 128k cells (30-60 min on 2 CPU cores)
  python benchmarks/scaling.py --quick    # N = 2k and 8k only (a few minutes)

The cells are made from real data: pbmc10x cells drawn with replacement, every count redrawn as
Poisson(count), then the DataModule's normal preprocessing and graphs (generic scRNA-seq config,
d = --hidden-dim, 1500 by default as in the paper). Each configuration runs in its own process, so
its peak memory (``ru_maxrss``) is its own: one process builds the data (and times the graphs), one
per implementation trains — a warm-up epoch, then the median of 5 timed epochs, each split into
encoders (forward + backward), losses (forward + backward) and optimiser. The dense (paper) form
runs only while its predicted peak fits under ``--memory-limit-gb`` (null otherwise), and a watchdog
stops any process that grows past that limit. When dense stops fitting before the largest size, one
more size is added: the largest N (a multiple of 2000) at which dense is predicted to fit in 80% of
the limit, so that the speed-up is also measured where dense can still run at all. Without ``--quick``, a last process trains 5 epochs
at the largest N through the real Trainer path (``runner.train_one``: Lightning, k-means, UMAP plot).
A further process measures item 4's question: is a sparse (CSR) count matrix times a dense weight
faster than the dense product, at the real sparsity of pbmc10x's counts?

Writes ``benchmarks/results/scaling.md`` and ``scaling.png``; the last line printed is one JSON
object: ``{"n": [...], "linear_s_per_epoch": [...], "dense_s_per_epoch": [...],
"linear_peak_mb": [...], "dense_peak_mb": [...]}`` (null where a run did not fit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from datamodules.datamodule import ScRCLDataModule
from datamodules.registry import DATA_DIR_HELP
from scrcl.experiments.launcher import run_child, stop_if_signalled
from scrcl.experiments.tables import parse_sets
from scrcl.experiments.timing import autocast_dtype, first_optimizer, timed_epoch
from scrcl.train.module import build_module
from scrcl.train.loggers import quiet_libraries
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry, whole_number  # noqa: E402

SIZES = (2000, 8000, 32000, 128000)
QUICK_SIZES = (2000, 8000)
DENSE_SQUARES_GUESS = 12.0  # N x N float32 arrays alive at the dense form's peak, before one is measured
SOURCE = "pbmc10x"
LOAD: list[float] = []  # 1-minute load average before and after every worker: the machine is shared


# --------------------------------------------------------------------------------------------------
# Worker side: each function below runs in its own process
# --------------------------------------------------------------------------------------------------


def peak_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def start_memory_guard(limit_mb: float) -> None:
    """Stop this process (exit 3) as soon as its resident memory passes ``limit_mb``."""

    def watch():
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        while True:
            with open("/proc/self/statm") as f:
                rss_mb = int(f.read().split()[1]) * page_mb
            if rss_mb > limit_mb:
                print(f"scaling worker: resident memory {rss_mb:.0f} MB passed the limit of {limit_mb:.0f} MB; stopping",
                      file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def resample_cells(n: int, data_dir: str | None, seed: int):
    """``n`` pbmc10x cells drawn with replacement, each count redrawn as Poisson(count); labels kept."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from datamodules.loading import LABEL, load_dataset

    source = load_dataset(SOURCE, data_dir, progress=False).adata
    counts = sp.csr_matrix(source.X, dtype=np.float32)
    if not np.all(np.mod(counts.data, 1) == 0):
        raise UserError(f"{SOURCE} does not hold raw counts here; the benchmark resamples counts")
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, source.n_obs, n)
    rows = counts[picked]
    rows.data = rng.poisson(rows.data).astype(np.float32)  # Poisson(0) = 0: zeros stay zeros
    rows.eliminate_zeros()
    obs = pd.DataFrame({LABEL: source.obs[LABEL].to_numpy()[picked]}, index=[f"cell{i}" for i in range(n)])
    return ad.AnnData(X=rows, obs=obs, var=pd.DataFrame(index=source.var_names.astype(str)))


def bench_config(data_path: Path, args, impl: str = "linear", **extra) -> dict:
    from scrcl.train.config import resolve_config

    overrides = {
        "data": str(data_path), "label_key": "label", "task": "sc", "hidden_dim": args.hidden_dim,
        "loss_impl": impl, "logger": "none", "progress": False, "seed": args.seed, **parse_sets(args.set), **extra,
    }
    return resolve_config(task="sc", overrides=overrides)


def data_path(work: Path, n: int) -> Path:
    return work / f"{SOURCE}_resampled_{n}.h5ad"


def timed_graph_functions() -> dict:
    """Wrap the graph builders of ``datamodules.graphs`` so each call adds its seconds to the dict returned."""
    from datamodules import graphs

    seconds: dict = {}
    for name in ("expression_graph", "gene_graph", "normalized_adjacency", "smooth"):
        original = getattr(graphs, name)

        def timed(*a, _original=original, _name=name, **k):
            t0 = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                seconds[_name] = seconds.get(_name, 0.0) + time.perf_counter() - t0

        setattr(graphs, name, timed)
    return seconds


def worker_prepare(args, work: Path) -> dict:
    """Resample the cells, then preprocess and build the graphs once (the DataModule caches them)."""

    t0 = time.perf_counter()
    adata = resample_cells(args.n, args.data_dir, args.seed)
    adata.write_h5ad(data_path(work, args.n))
    resample_s = time.perf_counter() - t0
    seconds = timed_graph_functions()
    datamodule = ScRCLDataModule.from_config(bench_config(data_path(work, args.n), args))
    t0 = time.perf_counter()
    datamodule.setup("fit")
    setup_s = time.perf_counter() - t0
    return {
        "n": args.n,
        "resample_s": resample_s,
        "setup_s": setup_s,
        "graph_s": dict(seconds),
        "graph_total_s": sum(seconds.values()),
        "n_genes": datamodule.n_genes,
        "cell_graph_nnz": int(datamodule.batch.cell_graph.values().numel()),
        "count_density": float(adata.X.nnz / (adata.n_obs * adata.n_vars)),
        "peak_mb": peak_mb(),
    }


def worker_train(args, work: Path) -> dict:
    """Warm-up epoch(s), then ``--epochs`` timed epochs of one implementation; medians and peak memory."""
    import lightning as L
    import torch


    quiet_libraries()
    config = bench_config(data_path(work, args.n), args, args.impl)
    datamodule = ScRCLDataModule.from_config(config)
    t0 = time.perf_counter()
    datamodule.setup("fit")
    setup_s = time.perf_counter() - t0
    L.seed_everything(args.seed, verbose=False)
    device = torch.device(args.device)
    module = build_module(config, datamodule.n_cells, datamodule.n_genes, datamodule.n_clusters).to(device)
    module.train()
    batch = datamodule.batch.to(device)
    optimizer = first_optimizer(module.configure_optimizers())
    epochs = [timed_epoch(module, optimizer, batch, device, autocast_dtype(config["precision"])) for _ in range(args.warmup + args.epochs)]
    timed = epochs[args.warmup:]
    medians = {key: statistics.median(e[key] for e in timed) for key in ("total_s", "encoders_s", "losses_s", "optimiser_s")}
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"n": args.n, "impl": args.impl, "setup_s": setup_s, **medians, "epochs": timed, "peak_mb": peak_mb(),
            "gpu_peak_mb": gpu_peak}


def worker_trainer(args, work: Path) -> dict:
    """``--epochs`` epochs through ``runner.train_one`` (Lightning, evaluation callback, k-means, UMAP)."""
    import numpy as np

    from scrcl.eval import plots
    from scrcl.eval.clustering import kmeans
    from scrcl.train import run as runner

    umap_seconds = []
    original = plots.umap_coordinates

    def timed_umap(*a, **k):
        t0 = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            umap_seconds.append(time.perf_counter() - t0)

    plots.umap_coordinates = timed_umap
    config = bench_config(data_path(work, args.n), args, "linear", epochs=args.epochs, eval_every=args.epochs,
                          accelerator="gpu" if args.device == "cuda" else "cpu")
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    run_dir = work / f"trainer_{args.n}"
    run_dir.mkdir(parents=True, exist_ok=True)
    outcome = runner.train_one(config, datamodule, args.seed, run_dir)
    embedding = outcome["final"]["embedding"]
    t0 = time.perf_counter()
    again = kmeans(embedding, datamodule.n_clusters, seed=args.seed)
    kmeans_s = time.perf_counter() - t0
    return {
        "n": args.n,
        "epochs": args.epochs,
        "train_s": outcome["train_seconds"],
        "eval_s": outcome["history"][-1]["kmeans_s"] if outcome["history"] else None,
        "umap_s": sum(umap_seconds),
        "kmeans_s": kmeans_s,
        "kmeans_shape": list(embedding.shape),
        "kmeans_clusters": datamodule.n_clusters,
        "kmeans_repeatable": bool(np.array_equal(again, outcome["final"]["pred_unrefined"])),
        "final_loss": outcome["history"][-1].get("loss") if outcome["history"] else None,
        "peak_mb": peak_mb(),
    }


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker_sparse(args, work: Path) -> dict:
    """Item 4: the first layer on pbmc10x's raw counts (input counts, no smoothing), dense vs CSR input.

    Forward + backward of ``x W^T + b`` for the (N, h) count matrix at its real sparsity, d = --hidden-dim.
    """
    import torch

    from scrcl.train.config import resolve_config

    overrides = {"data_dir": args.data_dir, "input": "counts", "tms": [0, 0], "logger": "none", "progress": False}
    datamodule = ScRCLDataModule.from_config(resolve_config(dataset=SOURCE, overrides=overrides))
    datamodule.setup("fit")
    x = datamodule.batch.x
    x_csr = x.to_sparse_csr()
    layer = torch.nn.Linear(x.shape[1], args.hidden_dim)

    def step(inputs, sparse: bool):
        def run():
            layer.zero_grad(set_to_none=True)
            out = torch.sparse.mm(inputs, layer.weight.t()) + layer.bias if sparse else layer(inputs)
            out.sum().backward()
        return run

    dense_s = median_seconds(step(x, False), 5)
    sparse_s = median_seconds(step(x_csr, True), 5)
    return {
        "n": int(x.shape[0]), "n_genes": int(x.shape[1]), "hidden_dim": args.hidden_dim,
        "density": float(x_csr.values().numel() / x.numel()),
        "dense_s": dense_s, "sparse_s": sparse_s, "peak_mb": peak_mb(),
    }


WORKERS = {"prepare": worker_prepare, "train": worker_train, "trainer": worker_trainer, "sparse": worker_sparse}


def run_worker(args) -> int:
    import torch

    start_memory_guard(args.memory_limit_gb * 1024)
    torch.set_num_threads(args.threads)
    result = WORKERS[args.worker](args, Path(args.work))
    result["threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------


def call_worker(kind: str, n: int, args, work: Path, **options) -> dict | None:
    """Run one configuration in a fresh process; its result dict, or None with the reason on stderr."""
    result = work / f"{kind}_{n}_{options.get('impl', '')}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--n", str(n), "--work", str(work),
               "--result", str(result), "--hidden-dim", str(args.hidden_dim), "--threads", str(args.threads),
               "--seed", str(args.seed), "--memory-limit-gb", str(args.memory_limit_gb), "--device", args.device,
               *[f"--set={item}" for item in args.set]]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "SCRCL_CACHE_DIR": str(work / "cache"), "WANDB_MODE": "disabled",
           "MPLBACKEND": "Agg", **{var: str(args.threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    t0 = time.perf_counter()
    print(f"[scaling] {kind} N={n} {options or ''} ...", file=sys.stderr, flush=True)
    LOAD.append(os.getloadavg()[0])
    done = run_child(command, env=env, cwd=ROOT)  # a SIGTERM to the driver stops its worker too
    code = done.returncode
    stop_if_signalled(done, f"{kind} N={n}")  # SIGTERM or Ctrl-C: the benchmark stops, not just this worker
    LOAD.append(os.getloadavg()[0])
    if code != 0 or not result.exists():
        print(f"[scaling] {kind} N={n} {options or ''} failed (exit {code})", file=sys.stderr, flush=True)
        return None
    out = json.loads(result.read_text())
    out["wall_s"] = time.perf_counter() - t0
    print(f"[scaling] {kind} N={n} done in {out['wall_s']:.0f}s, peak {out['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    return out


def predict_dense_mb(n: int, linear: dict | None, squares: float) -> float:
    """Dense peak ≈ the linear run's peak + ``squares`` N x N float32 arrays."""
    base = linear["peak_mb"] if linear else 0.0
    return base + squares * 4.0 * n * n / 2**20


def measure_size(n: int, args, work: Path, squares: list[float], with_dense: bool = True) -> dict:
    """Prepare N cells, train linear, and dense while its predicted peak fits under the limit."""
    prep = call_worker("prepare", n, args, work)
    if prep is None:
        raise RuntimeError(f"building the data for N={n} failed; see the messages above")
    linear = call_worker("train", n, args, work, impl="linear", epochs=args.epochs, warmup=args.warmup)
    predicted = predict_dense_mb(n, linear, max(squares, default=DENSE_SQUARES_GUESS))
    dense = None
    if with_dense and "dense" in args.impls and predicted <= args.memory_limit_gb * 1024:
        dense = call_worker("train", n, args, work, impl="dense", epochs=args.epochs, warmup=args.warmup)
    if dense and linear and n >= 4000:  # below that the N² term is lost in the process's baseline
        squares.append((dense["peak_mb"] - linear["peak_mb"]) * 2**20 / (4.0 * n * n))
    return {"n": n, "prepare": prep, "linear": linear, "dense": dense, "dense_predicted_mb": predicted}


def largest_dense_size(rows: list[dict], squares: list[float], limit_mb: float, step: int = 2000) -> int | None:
    """The largest N (a multiple of ``step``) whose predicted dense peak stays under 80% of the limit.

    Linear peaks are interpolated (and extrapolated) linearly in N between the measured sizes.
    """
    import numpy as np

    measured = [(r["n"], r["linear"]["peak_mb"]) for r in rows if r["linear"]]
    if len(measured) < 2 or not squares:
        return None
    ns, peaks = map(np.array, zip(*measured))
    slope_mb = (peaks[-1] - peaks[-2]) / (ns[-1] - ns[-2])
    n, best = step, None
    while True:
        linear_mb = np.interp(n, ns, peaks) if n <= ns[-1] else peaks[-1] + slope_mb * (n - ns[-1])
        if linear_mb + max(squares) * 4.0 * n * n / 2**20 > 0.8 * limit_mb:
            return best
        best, n = n, n + step


def measure_sizes(sizes, args, work: Path) -> list[dict]:
    """Every size in turn; then, if dense stopped fitting before the largest size, the largest N it fits."""
    squares: list[float] = []  # measured N² coefficients of the dense form
    rows = [measure_size(n, args, work, squares) for n in sizes]
    dense_ns = [r["n"] for r in rows if r["dense"]]
    if args.dense_max and dense_ns and dense_ns[-1] < sizes[-1]:
        n = largest_dense_size(rows, squares, args.memory_limit_gb * 1024)
        if n and n > dense_ns[-1] and n not in sizes:
            rows.append(measure_size(n, args, work, squares))
            rows.sort(key=lambda r: r["n"])
    return rows


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gb": mem_kb / 2**20, "torch": torch.__version__,
        "python": platform.python_version(), "os": platform.platform(), "gpu": torch.cuda.is_available(),
    }


def slope(rows: list[dict], impl: str, key: str, lo: int, hi: int) -> float | None:
    """log-log slope of ``key`` between N = lo and N = hi."""
    by_n = {r["n"]: r[impl] for r in rows if r[impl]}
    if lo not in by_n or hi not in by_n:
        return None
    return math.log(by_n[hi][key] / by_n[lo][key]) / math.log(hi / lo)


def targets(rows: list[dict], trainer: dict | None) -> list[tuple[str, str, bool | None]]:
    """Item 4's targets: (target, measured, met?) with None where it was not measured."""
    by_n = {r["n"]: r for r in rows}
    out = []
    r8 = by_n.get(8000)
    if r8 and r8["linear"] and r8["dense"]:
        ratio = r8["linear"]["peak_mb"] / r8["dense"]["peak_mb"]
        out.append(("8k cells: linear peak memory ≤ 1/4 of dense's", f"{r8['linear']['peak_mb']:.0f} / {r8['dense']['peak_mb']:.0f} MB = {ratio:.3f}", ratio <= 0.25))
    else:
        out.append(("8k cells: linear peak memory ≤ 1/4 of dense's", "not measured", None))
    both = [r for r in rows if r["linear"] and r["dense"]]
    at = by_n.get(32000) if by_n.get(32000) and by_n[32000]["dense"] else (both[-1] if both else None)
    if at:
        speed = at["dense"]["total_s"] / at["linear"]["total_s"]
        out.append((f"32k cells (or the largest N dense survives: {at['n']}): linear ≥ 5x faster per epoch",
                    f"{at['dense']['total_s']:.2f} s / {at['linear']['total_s']:.2f} s = {speed:.1f}x", speed >= 5))
    else:
        out.append(("32k cells (or the largest N dense survives): linear ≥ 5x faster per epoch", "not measured", None))
    for key, name in (("total_s", "per-epoch time"), ("peak_mb", "peak memory")):
        s = slope(rows, "linear", key, 8000, 128000)
        out.append((f"8k → 128k cells: {name} log-log slope ≤ 1.15", "not measured" if s is None else f"{s:.2f}", None if s is None else s <= 1.15))
    if trainer and trainer["n"] == 128000:
        ok = trainer["peak_mb"] <= 24 * 1024
        out.append(("128k cells train 5 epochs inside 24 GB", f"{trainer['epochs']} epochs, peak {trainer['peak_mb'] / 1024:.1f} GB", ok))
    else:
        out.append(("128k cells train 5 epochs inside 24 GB", "not measured", None))
    return out


def fmt(value, spec: str = ".2f", none: str = "null") -> str:
    return none if value is None else format(value, spec)


def report(rows, trainer, sparse, args, info, elapsed_s: float, command: str) -> str:
    """The markdown of benchmarks/results/scaling.md."""
    from scrcl.eval.plots import UMAP_MAX_CELLS

    lines = [
        "# Scaling: linear vs dense scRCL objective",
        "",
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}; wall time {elapsed_s / 60:.1f} min.  ",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']:.1f} GB RAM; {info['os']}; "
        f"Python {info['python']}, torch {info['torch']}, {args.threads} threads per process, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')} (see below).  ",
        f"1-minute load average sampled before and after each step: {min(LOAD, default=0):.1f}–{max(LOAD, default=0):.1f} "
        f"(on {info['cores']} cores; above {args.threads} other jobs were competing for the CPU).  ",
        f"Device: {args.device}. GPU: "
        + ("present." if info["gpu"] else "none on this machine (torch.cuda.is_available() is False): no GPU timings were measured."),
    ]
    if args.note:
        lines += ["", f"Note: {args.note}"]
    lines += [
        "",
        f"Cells: {SOURCE} cells drawn with replacement, each count redrawn as Poisson(count); then the DataModule's "
        f"preprocessing and graphs (generic scRNA-seq config: lognorm input, tms [2, 0], k = 15, 2000 genes). "
        f"d = {args.hidden_dim}; config overrides: {', '.join(args.set) or 'none'} (precision 32-true unless they say otherwise). Per-epoch time: median of {args.epochs} epochs after {args.warmup} warm-up epoch(s), one "
        "full-graph step each (model forward, objective, backward, Adam). Peak memory: `ru_maxrss` of the process that "
        "trained (each configuration in its own process; it includes loading the cached preprocessed data). Dense runs "
        f"only where its predicted peak (linear peak + c·N² float32, c measured from 8k on) is under {args.memory_limit_gb:g} GB; "
        "null otherwise. A size outside 2k/8k/32k/128k is the largest N dense was predicted to fit in 80% of that limit.",
        "",
        "The machine is shared: other jobs run beside the benchmark (load average above). Its processes run with "
        "OMP_WAIT_POLICY=PASSIVE unless the caller set it: with the default (spinning) policy, a thread whose partner "
        "was pre-empted by another job spins at every barrier, which slows the objective's many block-sized "
        "operations several-fold when other jobs compete for the two cores; on an idle machine the policies time alike.",
        "",
        "| N | graph build (s) | linear s/epoch | encoders / losses / optimiser (s) | linear peak (MB) | dense s/epoch | dense losses (s) | dense peak (MB) | dense predicted (MB) | speed-up | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lin, den, prep = r["linear"], r["dense"], r["prepare"]
        split = f"{lin['encoders_s']:.2f} / {lin['losses_s']:.2f} / {lin['optimiser_s']:.2f}" if lin else "null"
        speed = f"{den['total_s'] / lin['total_s']:.1f}x" if lin and den else "–"
        ratio = f"{lin['peak_mb'] / den['peak_mb']:.3f}" if lin and den else "–"
        lines.append(
            f"| {r['n']} | {fmt(prep['graph_total_s'], '.1f')} | {fmt(lin and lin['total_s'])} | {split} | "
            f"{fmt(lin and lin['peak_mb'], '.0f')} | {fmt(den and den['total_s'])} | {fmt(den and den['losses_s'])} | "
            f"{fmt(den and den['peak_mb'], '.0f')} | {r['dense_predicted_mb']:.0f} | {speed} | {ratio} |"
        )
    lines += ["", "Graph building (s) per step, and the data:", "",
              "| N | cell graph (kNN) | gene graph | filters F | smoothing FᵗX | cell-graph nnz | count density |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        g = r["prepare"]["graph_s"]
        lines.append(f"| {r['n']} | {fmt(g.get('expression_graph'))} | {fmt(g.get('gene_graph'))} | {fmt(g.get('normalized_adjacency'))} | "
                     f"{fmt(g.get('smooth'))} | {r['prepare']['cell_graph_nnz']} | {r['prepare']['count_density']:.3f} |")
    lines += ["", "## Targets (issue 4, item 4)", "", "| target | measured | met |", "|---|---|---|"]
    for name, measured, met in targets(rows, trainer):
        lines.append(f"| {name} | {measured} | {'–' if met is None else ('yes' if met else 'NO')} |")
    lines += ["", "Log-log slopes of the linear form between consecutive sizes (time, memory):", ""]
    sizes = [r["n"] for r in rows if r["linear"]]
    for lo, hi in zip(sizes, sizes[1:]):
        lines.append(f"- {lo} → {hi}: time {fmt(slope(rows, 'linear', 'total_s', lo, hi))}, memory {fmt(slope(rows, 'linear', 'peak_mb', lo, hi))}")
    lines += ["", "Peak memory per cell of the linear form, marginal (Δ peak / Δ N between consecutive sizes, so what every size "
              "shares — libraries, the gene graph, the weights that do not grow with N — drops out):", ""]
    by_n = {r["n"]: r["linear"] for r in rows if r["linear"]}
    for lo, hi in zip(sizes, sizes[1:]):
        per_cell = (by_n[hi]["peak_mb"] - by_n[lo]["peak_mb"]) / (hi - lo)
        lines.append(f"- {lo} → {hi}: {per_cell:.3f} MB per cell")
    gpu = {n: r["gpu_peak_mb"] for n, r in by_n.items() if r.get("gpu_peak_mb") is not None}
    if gpu:
        lines += ["", "GPU memory (`torch.cuda.max_memory_allocated`, the training process):", ""]
        lines += [f"- N = {n}: peak {mb:.0f} MB ({mb / n:.3f} MB per cell)" for n, mb in sorted(gpu.items())]
    lines += ["", "## Through the real Trainer path", ""]
    if trainer:
        lines.append(
            f"N = {trainer['n']}: {trainer['epochs']} epochs with `runner.train_one` (Lightning, the evaluation callback after the "
            f"last epoch: k-means on the {trainer['kmeans_shape'][1]}-column embedding, UMAP plot on at most {UMAP_MAX_CELLS} cells) in "
            f"{trainer['train_s']:.0f} s; peak memory {trainer['peak_mb']:.0f} MB. Embedding + k-means in the callback "
            f"{fmt(trainer['eval_s'], '.1f')} s, UMAP {trainer['umap_s']:.1f} s."
        )
        lines += ["", "## k-means at scale (item 6)", "",
                  f"scikit-learn KMeans (k-means++, Lloyd, n_init = 10) on the final embedding, {trainer['kmeans_shape'][0]} x "
                  f"{trainer['kmeans_shape'][1]}, {trainer['kmeans_clusters']} clusters: {trainer['kmeans_s']:.2f} s; "
                  f"a second call with the same seed gave {'identical' if trainer['kmeans_repeatable'] else 'DIFFERENT'} labels."]
    else:
        lines.append("Not run (`--quick`, or the run failed).")
    lines += ["", "## Sparse input (item 4)", ""]
    if sparse:
        faster = sparse["sparse_s"] < sparse["dense_s"]
        lines.append(
            f"First layer on the raw counts (input counts, tms [0, 0]), N = {sparse['n']}, {sparse['n_genes']} genes "
            f"({sparse['density']:.1%} non-zero) → d = {sparse['hidden_dim']}, forward + backward, median of 5: dense "
            f"{sparse['dense_s'] * 1000:.0f} ms, CSR {sparse['sparse_s'] * 1000:.0f} ms. "
            + ("The sparse product is faster here." if faster else "The sparse product is slower, so the encoders keep the dense input.")
        )
    else:
        lines.append("Not measured (the run failed).")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scrcl.eval.plots import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "total_s", "seconds per epoch"), (axes[1], "peak_mb", "peak memory (MB)")):
        for impl, style in (("linear", "o-"), ("dense", "s--")):
            pts = [(r["n"], r[impl][key]) for r in rows if r[impl]]
            if pts:
                ax.plot(*zip(*pts), style, label=impl)
        ns = [r["n"] for r in rows]
        lin = [r["linear"][key] for r in rows if r["linear"]]
        if lin:
            for power, ls in ((1, ":"), (2, "-.")):
                ax.plot(ns, [lin[0] * (n / ns[0]) ** power for n in ns], ls, color="grey", lw=0.8, label=f"slope {power}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells N")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("scRCL scaling: linear vs dense objective")
    save_figure(fig, path)
    plt.close(fig)


def json_line(rows: list[dict]) -> str:
    def col(impl, key):
        return [r[impl][key] if r[impl] else None for r in rows]

    return json.dumps({
        "n": [r["n"] for r in rows],
        "linear_s_per_epoch": col("linear", "total_s"),
        "dense_s_per_epoch": col("dense", "total_s"),
        "linear_peak_mb": col("linear", "peak_mb"),
        "dense_peak_mb": col("dense", "peak_mb"),
    })


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UserError(f"--sizes takes cell counts like 2000,8000, got '{text}'") from None
    if not sizes or sizes[0] < 100:
        raise UserError(f"--sizes needs cell counts of at least 100, got '{text}'")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(prog="scaling.py", command="python benchmarks/scaling.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 2000 and 8000 only, no Trainer run, no extra dense size")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="cell counts, comma-separated")
    parser.add_argument("--hidden-dim", type=whole_number(1), default=1500, help="latent width d (the paper's: 1500)")
    parser.add_argument("--epochs", type=whole_number(1), default=5, help="timed epochs per configuration (median reported)")
    parser.add_argument("--warmup", type=whole_number(0), default=1, help="untimed epochs first")
    parser.add_argument("--trainer-epochs", type=whole_number(0), default=5, help="epochs of the real Trainer run at the largest N (0: skip it)")
    parser.add_argument("--impls", default="linear,dense", help="which implementations (linear always runs)")
    parser.add_argument("--no-dense-max", dest="dense_max", action="store_false",
                        help="do not add the largest N the dense form fits (when it stops fitting before the largest size)")
    parser.add_argument("--threads", type=whole_number(1), default=2, help="torch/OpenMP threads per process")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the timed training runs")
    parser.add_argument("--memory-limit-gb", type=float, default=20.0, help="skip dense beyond this predicted peak; stop any run past it")
    parser.add_argument("--seed", type=whole_number(0), default=0)
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--output", type=output_file, default=ROOT / "benchmarks" / "results" / "scaling.md", help="markdown report (the PNG goes beside it)")
    parser.add_argument("--note", default="", help="a sentence recorded in the report (e.g. about GPUs)")
    parser.add_argument("--keep-work", action="store_true", help="keep the resampled data and caches (printed path)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. precision=bf16-mixed or recompute=true (repeatable)")
    # internal: one configuration in this process
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="linear", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def check_args(args) -> None:
    if not args.memory_limit_gb > 0:
        raise UserError(f"--memory-limit-gb must be positive, got {args.memory_limit_gb}")
    bench_config(Path("check.h5ad"), args)  # the --set keys and values, before any data is built
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU on this machine (torch.cuda.is_available() is False); "
                            "leave --device out to run on the CPU")
    impls = {v.strip() for v in args.impls.split(",") if v.strip()}
    if not impls <= {"linear", "dense"}:
        raise UserError(f"--impls takes linear and/or dense, got '{args.impls}'")
    args.impls = impls | {"linear"}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return run_worker(args)
    t_start = time.perf_counter()
    check_args(args)
    sizes = list(QUICK_SIZES) if args.quick else parse_sizes(args.sizes)
    args.dense_max = args.dense_max and not args.quick
    work = Path(tempfile.mkdtemp(prefix="scrcl-scaling-"))
    try:
        rows = measure_sizes(sizes, args, work)
        sparse = call_worker("sparse", sizes[0], args, work)
        trainer = None
        if not args.quick and args.trainer_epochs > 0:
            trainer = call_worker("trainer", sizes[-1], args, work, epochs=args.trainer_epochs)
    finally:
        if args.keep_work:
            print(f"[scaling] work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    from scrcl.atomic import atomic_write_text

    output = Path(args.output)
    command = "python benchmarks/scaling.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    atomic_write_text(output, report(rows, trainer, sparse, args, machine(), time.perf_counter() - t_start, command.strip()))
    plot(rows, output.with_suffix(".png"))
    print(f"[scaling] wrote {output} and {output.with_suffix('.png')}", file=sys.stderr)
    print(json_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
