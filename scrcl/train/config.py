"""The run configuration: one declaration per key (``KEYS``), one flat dict per run, resolved in a fixed order.

generic defaults of the task (``configs/generic_{sc,st}.yaml``) < ``configs/datasets/NAME.yaml`` (published settings
of the paper's datasets only) < ``--config FILE`` < command-line flags.

Each :class:`Key` says a key's type, default, allowed values or range, help text and whether it changes what a run
computes; the command line's flags (``scrcl.train.cli``), the validation below, the defaults and ``--help`` are all
made from it, so a new key is one ``Key(...)`` line (and, if a generic config sets it, one YAML line).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datamodules.registry import DATA_DIR_HELP
from scrcl.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/ (an editable install)


@dataclass(frozen=True)
class Key:
    """One config key. ``kind``: int, float, str, bool, "pair" (two integers like 5,0) or "seeds" (5,15,25).

    ``low``/``high``: inclusive bounds, ``above``: exclusive lower bound, ``below``: exclusive upper bound.
    ``method``: a setting of the method (the generic YAMLs set it; tables compare runs on these), else a setting of
    the run. ``bookkeeping``: does not change what a run computes (where it writes, how it shows progress), so two
    runs that differ only there are the same trial. ``flag``: False for keys set only by the program."""

    name: str
    kind: Any
    help: str
    default: Any = None
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None
    method: bool = False
    bookkeeping: bool = False
    flag: bool = True

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


KEYS: tuple[Key, ...] = (
    # -- what to run on
    Key("dataset", str, "registry dataset name (case-insensitive), e.g. lung, pbmc10x, dlpfc_151673"),
    Key("data", str, "your own file: .h5ad, X/Y .h5, Cell BLAST data.h5, or a Visium folder"),
    Key("label_key", str, "obs column with annotations (scores only; never used to train)"),
    Key("n_clusters", int, "number of clusters (default: the number of label classes)", low=2),
    Key("data_dir", str, DATA_DIR_HELP, bookkeeping=True),
    Key("task", str, "sc (cell types) or st (spatial domains)", choices=("sc", "st"), method=True),
    # -- the method: preprocessing and graphs
    Key("input", str, "model input: raw counts of the HVGs (the reference, scRNA-seq), log-normalised, or scaled "
        "without centring (the reference, spatial)", choices=("counts", "lognorm", "scaled"), method=True),
    Key("hvg", int, "number of highly variable genes h", low=1, method=True),
    Key("k", int, "cell-graph neighbours: scRNA-seq with cell_neighbours=scanpy counts the cell itself (scanpy's "
        "n_neighbors), spatial and exact count the others", low=1, method=True),
    Key("cell_neighbours", str, "scRNA-seq cell graph: scanpy (the reference's call: k counts the cell itself; "
        "approximate from 4096 cells) or exact (exact cosine kNN, k others)", default="scanpy", choices=("scanpy", "exact"),
        method=True),
    Key("graph_pcs", int, "scRNA-seq cell graph on the first P principal components (0 = on the HVGs; unset: the "
        "reference's rule, PCA-50 only from 10 000 cells)", low=0, method=True),
    Key("gene_k", int, "gene-graph neighbours k_g (self included)", low=1, method=True),
    Key("gene_graph", str, "knn (directed, as the reference) | knn_symmetric | identity (ablation)", default="knn",
        choices=("knn", "knn_symmetric", "identity"), method=True),
    Key("tms", "pair", "low-pass smoothing passes of the two views' inputs, e.g. 5,0", method=True),
    # -- the method: network
    Key("hidden_dim", int, "latent width d", low=1, method=True),
    Key("gene_dim", int, "gene-embedding width c' (unset: the number of clusters)", low=1, method=True),
    Key("dropout", float, "dropout rate", low=0, below=1, method=True),
    Key("mlp_activation", str, "the MLP view's activation: relu (the reference) or leaky_relu", default="relu",
        choices=("relu", "leaky_relu"), method=True),
    Key("mlp_dropout", bool, "dropout on the MLP view's input (the reference has none)", default=False, method=True),
    Key("gene_input", str, "the gene network's input: smoothed (the MLP view's F^t1 X, as the reference) or raw (X)",
        default="smoothed", choices=("smoothed", "raw"), method=True),
    Key("gene_activation", str, "the gene network's activation: relu (the reference) or leaky_relu", default="relu",
        choices=("relu", "leaky_relu"), method=True),
    Key("views", str, "both | mlp | gnn (ablation: one encoder type for both views)", default="both",
        choices=("both", "mlp", "gnn"), method=True),
    # -- the method: objective and training
    Key("alpha", float, "weight of the NDC loss", low=0, method=True),
    Key("beta", float, "weight of the CVC loss", low=0, method=True),
    Key("hea_weight", float, "weight of the HEA loss (ablations set 0)", low=0, method=True),
    Key("tau", float, "temperature", above=0, method=True),
    Key("loss_impl", str, "linear (exact, O(N k d)) or dense (the paper's N x N form)", choices=("linear", "dense"),
        method=True),
    Key("lr", float, "learning rate", above=0, method=True),
    Key("weight_decay", float, "weight decay", low=0, method=True),
    Key("optimizer", str, "adam (L2 decay in the gradient, as the reference) | adamw (decoupled decay)",
        choices=("adam", "adamw"), method=True),
    Key("epochs", int, "training epochs", low=1, method=True),
    # -- keeping what training found, without labels (off in the published settings: the reference has none)
    Key("lr_schedule", str, "constant (the reference) | cosine (decay to 0 over the epochs: training ends calmly)",
        default="constant", choices=("constant", "cosine"), method=True),
    Key("weight_averaging", str, "none (the reference) | ema (exponential moving average of the weights, ema_decay) | "
        "swa (equal average from average_from of the epochs on); evaluations cluster the averaged weights (before SWA's "
        "first average: the live ones)",
        default="none", choices=("none", "ema", "swa"), method=True),
    Key("ema_decay", float, "EMA decay per epoch (one step per epoch: 0.98 averages over ~50 epochs)", default=0.98,
        above=0, below=1, method=True),
    Key("average_from", float, "SWA: the fraction of the epochs after which weights are averaged", default=0.5, low=0,
        below=1, method=True),
    Key("select", str, "the reported evaluation: final (the last epoch, the reference) or the one whose own k-means "
        "scores best on a label-free criterion of the embedding (silhouette | calinski_harabasz); the final epoch is "
        "recorded beside it", default="final", choices=("final", "silhouette", "calinski_harabasz"), method=True),
    Key("radius", int, "spatial label refinement: majority vote over this many nearest other spots (0 = off)", low=0,
        method=True),
    Key("refine", bool, "cluster the refined Z = [Zm|Zg] (false: the view embeddings [Em|Eg], an ablation)", default=True,
        method=True),
    # -- the run
    Key("seed", int, "random seed", default=5, low=0, high=2**32 - 1),
    # bookkeeping: each run of a seed list computes what a run of that one seed computes
    Key("seeds", "seeds", "several seeds, e.g. 5,15,25,35,45: one run each plus a mean ± std summary", bookkeeping=True),
    Key("eval_every", int, "run k-means and log scores every N epochs", default=10, low=1),
    Key("umap_every", int, "UMAP plot every N evaluations (0 = only at the end)", default=5, low=0, bookkeeping=True),
    Key("umap", bool, "UMAP plots (false saves umap-learn's start-up, ~10-20 s a run; result.h5ad still holds the "
        "embedding)", default=True, bookkeeping=True),
    Key("checkpoint_every", int, "checkpoint every N epochs (0 = only at the end)", default=50, low=0, bookkeeping=True),
    Key("accelerator", str, "where to train: auto (a GPU when torch sees one), cpu, gpu (cuda) or mps", default="auto",
        choices=("auto", "cpu", "gpu", "cuda", "mps"), bookkeeping=True),
    Key("devices", int, "devices for the run: 1 (a run is one full-graph batch; several GPUs run several trials: "
        "python -m scrcl.experiments.sweep / ablate --gpus)", default=1, low=1, high=1, bookkeeping=True),
    Key("precision", str, "32-true | bf16-mixed | 16-mixed", default="32-true", choices=("32-true", "bf16-mixed", "16-mixed")),
    Key("recompute", bool, "recompute the two views' forward pass during the backward pass (torch's activation "
        "checkpointing): less memory per cell, the same gradients, a little more time", default=False),
    Key("deterministic", bool, "torch's deterministic kernels (on a GPU an op without one warns); false lets the GPU "
        "pick faster, non-deterministic ones", default=True),
    Key("logger", str, "wandb (offline unless WANDB_MODE says otherwise) | csv | none; a CSV log is always written",
        default="wandb", choices=("wandb", "csv", "none"), bookkeeping=True),
    Key("output", str, "directory for run directories", default="runs", bookkeeping=True),
    Key("run_name", str, "name of the run directory (inside --output)", bookkeeping=True),
    Key("cache", bool, "reuse the preprocessed data and graphs from the cache ($SCRCL_CACHE_DIR)", default=True,
        bookkeeping=True),
    Key("progress", bool, "progress bar (false: one line per evaluation)", default=True, bookkeeping=True),
    Key("resume", str, "set by --resume", bookkeeping=True, flag=False),
)


def key(name: str) -> Key:
    for k in KEYS:
        if k.name == name:
            return k
    raise KeyError(name)


def run_defaults() -> dict:
    """Every key's schema default; the generic YAML of the task and the layers above override the method keys."""
    return {k.name: k.default for k in KEYS}


def bookkeeping_keys() -> frozenset:
    """Keys that do not change what a run computes: runs differing only there are the same trial."""
    return frozenset(k.name for k in KEYS if k.bookkeeping)


def method_keys() -> tuple:
    return tuple(k.name for k in KEYS if k.method)


# -- reading the layers ---------------------------------------------------------------------------------------------
def read_yaml(path: str | Path, what: str = "config file", hint: str = ""):
    """A YAML file's content; a missing file or bad YAML is one UserError line naming ``what`` it is."""
    path = Path(path)
    if not path.is_file():
        state = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"{what} {path} {state}{hint}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{what} {path} is not valid YAML ({str(err).splitlines()[0]})")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a text file (not UTF-8): give a YAML file") from None
    except OSError as err:
        raise UserError(f"{what} {path} cannot be read ({err.strerror})") from None


def read_config_file(path: str | Path, what: str = "config file") -> dict:
    """A YAML file of config keys (``--config``, a run's config.yaml): its mapping, ``{}`` when empty; anything else is
    one UserError line."""
    data = read_yaml(path, what) or {}
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of keys to values")
    return data


def generic_config(task: str) -> dict:
    if task not in key("task").choices:
        raise UserError(f"task must be 'sc' or 'st', got '{task}'")
    return read_config_file(CONFIG_DIR / f"generic_{task}.yaml")


def dataset_config(name: str) -> dict:
    """Published per-dataset settings; {} for datasets that run on the generic defaults."""
    path = CONFIG_DIR / "datasets" / f"{name}.yaml"
    return read_config_file(path) if path.exists() else {}


def absolute_path(text: str) -> str:
    """A data path as runs record it: ``~`` and ``$VARIABLES`` (``$SCRCL_DATA_DIR``, as benchmarks/records.py saves
    paths in the data directory) expanded, made absolute from the current folder."""
    return os.path.abspath(os.path.expanduser(os.path.expandvars(text)))


def resolve_config(*, dataset: str | None = None, task: str | None = None, config_file: str | None = None, overrides: dict | None = None) -> dict:
    """Merge the layers in order and check every value; returns a new flat dict with every key."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_layer = read_config_file(config_file) if config_file else {}
    dataset = overrides.get("dataset") or file_layer.get("dataset") or dataset
    ds_layer: dict = {}
    registry_task = None
    if dataset:
        from datamodules.registry import get_spec

        spec = get_spec(dataset)
        dataset = spec.name
        registry_task = spec.task
        ds_layer = dataset_config(spec.name)
    task = overrides.get("task") or file_layer.get("task") or ds_layer.get("task") or registry_task or task or "sc"
    config = {**run_defaults(), **generic_config(task), **ds_layer, **file_layer, **overrides}
    config["task"] = task
    config["dataset"] = dataset
    for key in ("data", "data_dir"):  # absolute: a run resumed, re-scored or compared from another folder finds them
        if isinstance(config.get(key), str) and config[key]:
            config[key] = absolute_path(config[key])
    unknown = sorted(set(config) - {k.name for k in KEYS})
    if unknown:
        raise UserError(f"unknown config key(s): {', '.join(unknown)}; python train.py --help lists the keys (as flags)")
    return validate(config)


# -- checking values -----------------------------------------------------------------------------------------------
def _as_int(value) -> int:
    """An integer, or an integral float (YAML's 1.0e3); never a bool, a fraction (2.9 is not 2) or NaN."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(value)
        return int(value)
    return int(value)


def _as_number(value) -> float:
    """A finite number (never a bool, NaN or inf)."""
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def as_bool(value) -> bool:
    """True/False, or the words a flag or a YAML may give (true/false, yes/no, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError(value)


def _checked(k: Key, value):
    """``value`` converted to the key's kind and checked against its choices and bounds; UserError otherwise."""
    if k.kind == "pair":
        return parse_pair(value, k.name)
    if k.kind == "seeds":
        return parse_seeds(value)
    try:
        value = {int: _as_int, float: _as_number, bool: as_bool, str: str}[k.kind](value)
    except (TypeError, ValueError, OverflowError):
        kind = {int: "a whole number", float: "a finite number", bool: "true or false", str: "text"}[k.kind]
        raise UserError(f"{k.name} must be {kind}, got {value!r}") from None
    if k.choices and value not in k.choices:
        raise UserError(f"{k.name} must be one of {', '.join(map(str, k.choices))}, got '{value}'")
    if k.name == "seed":
        return check_seed(value)
    wrong = None
    if k.low is not None and value < k.low:
        wrong = f"{'at least' if k.low > 0 else '≥'} {k.low:g}"
    elif k.high is not None and value > k.high:
        wrong = f"at most {k.high:g}"
    elif k.above is not None and value <= k.above:
        wrong = "positive" if k.above == 0 else f"above {k.above:g}"
    elif k.below is not None and value >= k.below:
        wrong = f"below {k.below:g}"
    if wrong:
        raise UserError(f"{k.name} must be {wrong}, got {value} ({k.name}: {k.help})")
    return value


def validate(config: dict) -> dict:
    """Every key checked by its declaration, then the checks that involve several keys."""
    out = dict(config)
    for k in KEYS:
        if out.get(k.name) is not None:
            if k.name == "devices" and str(out[k.name]).strip() == "0":
                raise UserError("devices = 0: a run needs one device; leave --devices out (one device, the default); for "
                                "the CPU add --accelerator cpu")
            if k.name == "devices" and out[k.name] not in (1, "1") and not (isinstance(out[k.name], list) and len(out[k.name]) == 1):
                # Lightning would start DDP: every rank trains the same one-batch graph (no speed-up), and train.py's
                # other ranks each claim the run directory, fail, and leave rank 0 waiting for them forever.
                raise UserError(f"devices = {out[k.name]!r}: scRCL trains on the whole graph in one batch, so a run uses one "
                                "device; to use several GPUs, run trials side by side: python -m scrcl.experiments.sweep / "
                                "scrcl.experiments.ablate --gpus 0,1,2,3 (or one train.py per GPU with CUDA_VISIBLE_DEVICES)")
            if k.name == "devices" and isinstance(out[k.name], list):
                continue
            out[k.name] = _checked(k, out[k.name])
    if out.get("alpha") == 0 and out.get("beta") == 0 and out.get("hea_weight") == 0:
        raise UserError("alpha, beta and hea_weight are all 0: there is nothing to train; give at least one loss a weight")
    return out


def parse_pair(value, name: str) -> list[int]:
    if isinstance(value, str):
        value = value.replace(" ", "").split(",")
    try:
        pair = [_as_int(v) for v in value]
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be two integers like 5,0 — got {value!r}") from None
    if len(pair) != 2 or min(pair) < 0:
        raise UserError(f"{name} must be two integers ≥ 0 like 5,0 — got {value!r}")
    return pair


def parse_int_list(value, name: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        out = [_as_int(v) for v in value]
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be integers like 5,15,25 — got {value!r}") from None
    if not out:
        raise UserError(f"{name} is empty")
    return out


def check_seed(seed: int) -> int:
    if not 0 <= seed < 2**32:
        raise UserError(f"seeds must be in 0 … {2**32 - 1} (numpy's range), got {seed}")
    return seed


def parse_seeds(value) -> list[int]:
    """A seed list like 5,15,25, each checked against numpy's range before any run starts."""
    seeds = [check_seed(seed) for seed in parse_int_list(value, "seeds")]
    twice = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if twice:
        raise UserError(f"seeds lists {', '.join(map(str, twice))} more than once; each seed is one run")
    return seeds
