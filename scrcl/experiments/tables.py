"""What the results tables share (benchmarks/paper_table.py, benchmarks/spatial_table.py): which datasets and settings,
the scRCL runs behind a row (resumed, reused only with the same settings), the label-free baselines on the same input
(PCA(30) + k-means, Leiden with a resolution bisected to k clusters), and the rows of the markdown tables.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np

from scrcl.errors import Interrupted, UserError
from scrcl.eval.metrics import SCORES, mean_std_text, paired_difference_text
from scrcl.train.results import code_version  # noqa: F401  (the scripts' and studies' import of it)
from scrcl.train.config import method_keys as config_method_keys, parse_seeds, read_config_file, resolve_config, run_defaults

DEFAULT_SEEDS = "5,15,25,35,45"
# Keys that change what a run computes; an existing run is reused only if all of them agree.
RUN_METHOD_KEYS = ("eval_every", "n_clusters", "label_key")  # besides the method's keys
# What the table runs never need: UMAPs every few evaluations (the final one is still drawn).
TABLE_RUN_SETTINGS = {"logger": "none", "progress": False, "umap_every": 0}


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


def table_datasets(datasets: str | None, data_dir: str | None, task: str) -> list[str]:
    """The datasets a table runs: ``--datasets`` (comma-separated registry names, each checked to be on disk or
    downloadable before any run starts), else every local dataset of ``task``."""
    from datamodules.loading import check_obtainable
    from datamodules.registry import get_spec

    if not datasets:
        return local_datasets(data_dir, task)
    names = [get_spec(n.strip()).name for n in datasets.split(",") if n.strip()]
    for name in names:
        check_obtainable(name, data_dir)
    return names


def table_config(name: str, epochs: int | None, sets: dict, data_dir: str | None) -> dict:
    """The dataset's own resolved config with the table's overrides (``--epochs``, ``--set``)."""
    overrides = {**sets, **TABLE_RUN_SETTINGS, "epochs": epochs, "data_dir": data_dir}
    return resolve_config(dataset=name, overrides=overrides)


def method_keys(config: dict) -> list[str]:
    """The keys a table compares runs on: the method's (``Key.method``) and those that change what a row scores."""
    return sorted(set(config_method_keys()) | set(RUN_METHOD_KEYS))


def table_output(output: Path | None, default: Path, command: str) -> Path:
    """Where a table script writes: ``--output``, else its committed results file, unless that file holds the table of
    another command (a smoke test or a subset would replace the committed table): then one line, before any run."""
    if output is not None or not default.exists():
        return output or default
    recorded = next((line for line in default.read_text(errors="replace").splitlines() if line.startswith("- Command: `")), None)
    if recorded is not None and _tokens(recorded.rstrip()[12:-1]) != _tokens(command):
        raise UserError(f"{shown_path(default)} holds the table of another command ({recorded.rstrip()[12:-1]}); give "
                        f"--output FILE for this one, or --output {shown_path(default)} to replace it")
    return default


def _tokens(command: str) -> list[str]:
    """A command line as its words, ``--key=value`` as ``--key value``: the same command however it was spelled."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:
        return [command]
    return [part for word in words for part in (word.split("=", 1) if word.startswith("--") else [word])]


def check_same_settings(run_dir: Path, config: dict) -> None:
    """Refuse to mix runs made with other settings into the table: the method keys, and the precision (it changes the
    numbers, and the table's header states the table's own)."""
    old = read_config_file(run_dir / "config.yaml", "the run's config")
    defaults = run_defaults()
    differ = [k for k in (*method_keys(config), "precision") if old.get(k, defaults.get(k)) != config.get(k, defaults.get(k))]
    if differ:
        shown = ", ".join(f"{k}: {old.get(k)!r} there, {config.get(k)!r} now" for k in differ)
        raise UserError(f"{run_dir} was run with other settings ({shown}); use another --runs-dir or remove it")


# -- scRCL runs -----------------------------------------------------------------------------------
def own_file(name: str, data_dir: str | None) -> tuple[Path, str]:
    """A registry dataset's local .h5ad (absolute: a run may start in another folder) and its label column: what a
    user would pass as --data FILE --label-key KEY (``--config generic`` of the tables and studies, which runs a local
    dataset as a user's own file). A dataset read from another format stops here, before anything is fetched."""
    from datamodules.loading import check_obtainable, resolve_data_dir, resolve_dataset

    root = resolve_data_dir(data_dir).resolve()
    if check_obtainable(name, root).reader != "h5ad":
        raise UserError(f"--config generic runs a dataset's .h5ad as a user's own file, but '{name}' has none here (its "
                        "data are read from another format); give a dataset with a local .h5ad")
    resolved = resolve_dataset(name, root, progress=False)
    return resolved.paths["data"], resolved.source.label_key or resolved.spec.label_key


def h5ad_datasets(data_dir: str | None, task: str) -> list[str]:
    """The local datasets of ``task`` (:func:`local_datasets`) that are read from an .h5ad: what ``--config generic``
    can run as a user's own file."""
    from datamodules.loading import check_obtainable

    return [name for name in local_datasets(data_dir, task) if check_obtainable(name, data_dir).reader == "h5ad"]


def scrcl_run(config: dict, run_dir: Path, runs_dir: Path, seed: int, keep_checkpoints: bool) -> dict:
    """One run directory's metrics.json (``run_dir`` under ``runs_dir``); trains only when it does not exist yet."""
    from scrcl.train import run as runner

    metrics_path = run_dir / "metrics.json"
    label = run_dir.relative_to(runs_dir)
    if metrics_path.exists():
        check_same_settings(run_dir, config)
        done = json.loads(metrics_path.read_text())
        if done.get("seed") != seed:
            raise UserError(f"{run_dir} holds a run of seed {done.get('seed')}, not seed {seed}; link or move the right run there")
        print(f"{label}: done before, reading {metrics_path}", flush=True)
        return finished_run(run_dir)
    config = {**config, "seed": seed, "seeds": None, "output": str(runs_dir), "run_name": str(label)}
    resume = run_dir if run_dir.exists() and any(run_dir.iterdir()) else None
    if resume is not None:
        check_same_settings(run_dir, config)
        started = read_config_file(run_dir / "config.yaml", "the run's config").get("seed")
        if started != seed:
            raise UserError(f"{run_dir} holds a run of seed {started}, not seed {seed}; move it or remove it")
    try:
        runner.run(config, resume_dir=resume, log=lambda line: print(f"{label} {line}", flush=True))
    except Interrupted as err:  # the table's own command continues this run, and keeps the finished ones
        raise Interrupted(err.signum, err.epoch, err.run_dir, same_command=True) from None
    if not keep_checkpoints:  # at d = 1500 each is ~170 MB; the finished run does not need it
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return finished_run(run_dir)


def finished_run(run_dir: Path) -> dict:
    """A finished run's metrics.json, with the live weights' final-epoch scores beside it (:func:`live_final`)."""
    done = json.loads((run_dir / "metrics.json").read_text())
    return {**done, **live_final(run_dir, done.get("final_epoch", done.get("epoch")))}


def live_final(run_dir: Path, final_epoch: int | None = None) -> dict:
    """For a run that clusters averaged weights (``weight_averaging``): the live weights' scores at its last evaluation
    (``live_*`` of history.csv's last row), as ``live_final_<score>``: the trained weights at the final epoch, without
    averaging, as the reference trains, on the same trajectory. Empty for other runs, and when that row is not the
    run's ``final_epoch``."""
    import pandas as pd

    path = run_dir / "history.csv"
    if not path.exists():
        return {}
    last = pd.read_csv(path).iloc[-1]
    if final_epoch is not None and int(last["epoch"]) != int(final_epoch):
        return {}
    return {f"live_final_{k[len('live_'):]}": float(v) for k, v in last.items()
            if k.startswith("live_") and k[len("live_"):].removesuffix("_unrefined") in SCORES and pd.notna(v)}


# Part of each cached baseline's key: a cache written by an older version is recomputed.
# 2: PCA and the neighbour graph on one BLAS/OpenMP thread (before, the figures moved with the thread count).
BASELINE_VERSION = 2


def cached_baselines(path: Path, params: dict) -> dict | None:
    """A baseline cache written with these ``params`` (preprocessing, k, version), or None: recompute."""
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("params") == params:
            return cached
    return None


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


def pca_kmeans(lognorm, n_clusters: int, seed: int) -> np.ndarray:
    """PCA(30) + seeded k-means; on one BLAS/OpenMP thread so that the figure does not depend on the
    calling process's thread count (see ``leiden_with_k``)."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    from scrcl.eval.clustering import kmeans

    x = lognorm.toarray() if sp.issparse(lognorm) else np.asarray(lognorm)
    with threadpool_limits(limits=1):
        pcs = PCA(n_components=min(30, min(x.shape) - 1), random_state=seed).fit_transform(x)
        return kmeans(pcs.astype(np.float32), n_clusters, seed=seed)


def mean_std(rows: list[dict], key: str) -> str:
    return mean_std_text(r[key] for r in rows if key in r)


def parse_sets(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set takes key=value, got '{item}'")
        key, value = item.split("=", 1)
        try:
            out[key.replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item}: the value is not valid YAML (e.g. --set tms=[10,8], --set lr=1e-4)") from None
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


def shown_path(path) -> str:
    """A path as a results file shows it: relative to the working directory when inside it (a table travels with the
    repository; the machine it was made on is named once, in the header), else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def has_live_final(result: dict) -> bool:
    """Whether every run of a table row has the live weights' final-epoch scores (:func:`live_final`: runs with
    averaged weights)."""
    return all("live_final_ari" in m for m in result["scrcl"])


def method_rows(results: list[dict], keys, extra_note=lambda r: "") -> list[str]:
    """Table rows per dataset: scRCL's reported evaluation, PCA(30) + k-means, Leiden; mean ± std of ``keys``.

    The reported evaluation is the final epoch's, or (runs with ``select``) the one the label-free criterion chose; then
    a further row gives the final epoch of the same runs (``final_*`` of metrics.json), so both are always shown."""
    lines = []
    for r in results:
        m0 = r["scrcl"][0]
        head = [r["dataset"], str(m0["n_cells"]), str(m0["n_genes"]), str(m0["n_clusters"])]
        seeds = f"seeds {', '.join(str(m['seed']) for m in r['scrcl'])}{extra_note(r)}"
        selected = m0.get("selected_by")
        label = f"scRCL (best {selected.replace('_', '-')}, no labels)" if selected else "scRCL (final epoch)"
        lines.append(table_row([*head, label, *[mean_std(r["scrcl"], k) for k in keys],
                                f"epoch {', '.join(str(m['epoch']) for m in r['scrcl'])}; {seeds}"]))
        if selected:
            finals = [{k: m[f"final_{k}"] for k in keys if f"final_{k}" in m} for m in r["scrcl"]]
            lines.append(table_row([*head, "scRCL (final epoch)", *[mean_std(finals, k) for k in keys],
                                    f"epoch {', '.join(str(m.get('final_epoch', '–')) for m in r['scrcl'])}"]))
        if has_live_final(r):  # averaged weights: the live ones' final epoch too
            live = [{k: m[f"live_final_{k}"] for k in keys if f"live_final_{k}" in m} for m in r["scrcl"]]
            lines.append(table_row([*head, "scRCL (final epoch, live weights: no averaging, as the reference trains)",
                                    *[mean_std(live, k) for k in keys], "the same runs' trained weights, not averaged"]))
        km = [b["pca_kmeans"] for b in r["baselines"]]
        lines.append(table_row([*head, "PCA(30) + k-means", *[mean_std(km, k) for k in keys], ""]))
        ld = [b["leiden"] for b in r["baselines"]]
        found = sorted({b["n_found"] for b in ld})
        lines.append(table_row([*head, "Leiden (resolution for k)", *[mean_std(ld, k) for k in keys],
                           f"resolution {mean_std(ld, 'resolution')}; clusters found {', '.join(map(str, found))}"]))
    return lines


def margin(result: dict, baseline: str, key: str, ours_key: str | None = None) -> str:
    """scRCL's reported ``ours_key`` (default ``key``) − the baseline's ``key``, paired by seed (a row's runs and
    baselines are made for the same seeds, in the same order): the mean difference with its 95% interval and whether
    it is within noise (``scrcl.eval.metrics.paired_difference_text``)."""
    ours = [m[ours_key or key] for m in result["scrcl"]]
    theirs = [b[baseline][key] for b in result["baselines"]]
    return paired_difference_text(ours, theirs)


def selection_section(results: list[dict], label: str) -> list[str]:
    """What a label-free report (``select``) changed, from the same runs, paired by seed: the reported evaluation −
    the final epoch (``final_*`` of metrics.json) in ARI and NMI; the reported ARI − the live weights' at the final
    epoch (``live_final_*``, runs with averaged weights: no averaging, as the reference trains, on the same trajectory);
    and the oracle epoch's ARI − the reported ARI (``oracle_*``: the epoch the labels pick by the oracle table's rule,
    best NMI or, for spatial data, best ARI; only a yardstick, and negative where the best-NMI epoch has a lower ARI).
    A last row averages each dataset's mean difference. Empty when no run selects."""
    rows = [r for r in results if all(m.get("selected_by") and "final_ari" in m for m in r["scrcl"])]
    if not rows:
        return []
    criteria = sorted({m["selected_by"].replace("_", "-") for r in rows for m in r["scrcl"]})
    by_ari = all(r.get("config", {}).get("task") == "st" for r in rows)  # the spatial oracle picks by ARI itself
    oracle_rule = ("in ARI: what a label-free report leaves behind (the spatial oracle picks the best ARI, so never negative)."
                   if by_ari else "in ARI: what a label-free report leaves behind, negative where the oracle's best-NMI "
                   "epoch has a lower ARI.")
    lines = ["", "## The label-free report against the final epoch and the oracle epoch, paired by seed", "",
             "Each cell: the mean over seeds of the paired difference on the same run, with the 95% interval of that mean "
             f"(Student's t, scipy's); 'within noise' when the interval contains 0. *reported − final*: what choosing the "
             f"evaluation by its own k-means' {' / '.join(criteria)} (no labels) gained over the final epoch of the same "
             "weights. *reported − live final*: the whole label-free report (averaged weights and the choice) against the "
             "trained weights at the final epoch without averaging, as the reference trains. *oracle − reported*: the "
             "oracle table's epoch (picked with the labels by that table's rule; not a result) against the reported one, "
             + oracle_rule, "",
             table_row([label, "ARI: reported − final", "NMI: reported − final", "ARI: reported − live final",
                        "ARI: oracle − reported"]), "|---|---|---|---|---|"]
    pairs = (("ari", "final_ari"), ("nmi", "final_nmi"), ("ari", "live_final_ari"), ("oracle_ari", "ari"))

    def has(r, a, b):
        return all(a in m and b in m for m in r["scrcl"])

    for r in rows:
        lines.append(table_row([r["dataset"], *[paired_difference_text([m[a] for m in r["scrcl"]], [m[b] for m in r["scrcl"]])
                                                if has(r, a, b) else "–" for a, b in pairs]]))
    if len(rows) > 1:  # the yardstick: each dataset's mean difference, averaged over the datasets
        cells = []
        for a, b in pairs:
            means = [np.mean([m[a] - m[b] for m in r["scrcl"]]) for r in rows if has(r, a, b)]
            shown = f"{np.mean(means):+.3f}" if means else "–"
            cells.append(shown if len(means) in (0, len(rows)) else f"{shown} ({len(means)} of {len(rows)})")
        lines.append(table_row([f"mean of the {len(rows)} {label}s' means", *cells]))
    return lines


MARGINS_NOTE = ("Each cell: the mean over seeds of (scRCL's reported score − the baseline's score on the same seed), "
                "with the 95% interval of that mean (Student's t on the paired differences, scipy's); 'within noise' when the "
                "interval contains 0, 'beyond noise' otherwise. A negative figure beyond noise is where scRCL falls below the "
                "baseline.")


def run_conditions(results: list[dict]) -> str:
    """The header line a results table states its runs' precision, device and threads in: precision from the table's
    config (runs made with another are refused), device and threads from each run's metrics.json."""
    from scrcl.train.results import conditions_text

    return "- " + conditions_text(((r["config"], m) for r in results for m in r["scrcl"]),
                           "the table's config and the runs' metrics.json")


def header_lines(results: list[dict], *, command: str, started: str, seconds: float) -> list[str]:
    """The lines every results table opens with after its title: the command, date and machine, the runs'
    precision, device and threads, and the time of this invocation beside the runs' summed training time."""
    n_runs = sum(len(r["scrcl"]) for r in results)
    train_s = sum(m.get("seconds", 0.0) for r in results for m in r["scrcl"])
    from collections import Counter

    codes = Counter(m.get("code", "not recorded") for r in results for m in r["scrcl"])
    code_line = "- Code of the runs (metrics.json): " + ", ".join(f"{c} ({n} run{'s' if n > 1 else ''})" for c, n in sorted(codes.items()))
    return [f"- Command: `{command}`", f"- Date: {started}; machine: {machine()}", run_conditions(results), code_line,
            f"- Total time of this invocation: {seconds / 60:.1f} min; scRCL run time summed over the {n_runs} runs "
            f"(from their metrics.json, including runs done by earlier invocations): {train_s / 60:.1f} min"]


def seeds_line(results: list[dict], seeds: list[int]) -> str:
    """'Mean ± std … over seeds …', naming the datasets run with other seeds."""
    other = [r["dataset"] for r in results if r["seeds"] != seeds]
    return (f"- Mean ± std (population) [95% interval of the mean, Student's t] over seeds {', '.join(map(str, seeds))}"
            + (f" (other seeds where the note says so: {', '.join(other)})" if other else ""))


def settings_section(results: list[dict], label: str) -> list[str]:
    """The method keys of each dataset's scRCL runs, as a two-column table."""
    lines = ["", "## Settings of the scRCL runs", "", table_row([label, "config (method keys)"]), "|---|---|"]
    for r in results:
        shown = {k: r["config"].get(k) for k in method_keys(r["config"]) if k not in ("label_key", "n_clusters")}
        lines.append(table_row([r["dataset"], f"`{json.dumps(shown, sort_keys=True)}`"]))
    return lines


def oracle_section(results: list[dict], label: str, keys, explanation: str) -> list[str]:
    """The label-picked epoch's figures (``oracle_*``), in their own clearly named table."""
    lines = ["", "## Oracle epoch — uses the labels to pick the epoch (not a result)", "", explanation, "",
             table_row([label, *[f"oracle {k.upper()}" for k in keys], "epochs picked"]), "|---|" + "---|" * len(keys) + "---|"]
    for r in results:
        picked = ", ".join(str(m.get("oracle_epoch", "–")) for m in r["scrcl"])
        lines.append(table_row([r["dataset"], *[mean_std(r["scrcl"], f"oracle_{k}") for k in keys], picked]))
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


