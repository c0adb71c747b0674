"""The run configuration: one flat dict, resolved in a fixed order.

generic defaults of the task (``configs/generic_{sc,st}.yaml``) < ``configs/datasets/NAME.yaml``
(published settings of the paper's datasets only) < ``--config FILE`` < command-line flags.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from scrcl.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/ (an editable install)

# Keys that are about the run, not the method (the method's keys are in the generic YAMLs).
RUN_DEFAULTS = {
    "dataset": None,
    "data": None,
    "label_key": None,
    "n_clusters": None,
    "data_dir": None,
    "seed": 5,
    "seeds": None,
    "eval_every": 10,
    "umap_every": 5,  # a UMAP every this many evaluations (and always at the end)
    "umap": True,  # False: no UMAP plots at all (umap-learn compiles its kernels in every new process: ~10-20 s per run)
    "checkpoint_every": 50,
    "accelerator": "auto",
    "devices": 1,
    "precision": "32-true",
    "logger": "wandb",
    "output": "runs",
    "run_name": None,
    "resume": None,
    "cache": True,
    "refine": True,  # cluster on the refined Z = [Zᵐ‖Zᵍ]; False clusters on [Eᵐ‖Eᵍ] (ablation)
    "views": "both",  # both | mlp | gnn (ablation)
    # knn: the reference's directed kNN gene graph; knn_symmetric: made symmetric (the project's earlier graph);
    # identity: no gene edges (ablation)
    "gene_graph": "knn",
    # scRNA-seq cell graph on the first P principal components of the log-normalised HVGs (0: on the HVGs
    # themselves); None: the reference's rule, PCA-50 only when N ≥ 10 000 (METHOD.md §2).
    "graph_pcs": None,
    "progress": True,
    # torch's deterministic algorithms (Lightning's deterministic="warn"): on a GPU an op without a deterministic
    # kernel prints torch's warning naming it instead of failing; False lets cuBLAS/cuSPARSE pick faster ones
    "deterministic": True,
}

TYPES = {
    "hvg": int, "k": int, "gene_k": int, "hidden_dim": int, "epochs": int, "seed": int, "eval_every": int,
    "umap_every": int, "checkpoint_every": int, "radius": int, "n_clusters": int, "graph_pcs": int, "gene_dim": int,
    "lr": float, "weight_decay": float, "dropout": float, "alpha": float, "beta": float, "tau": float, "hea_weight": float,
}
BOOLS = ("refine", "cache", "progress", "umap", "deterministic")
CHOICES = {
    "task": ("sc", "st"), "input": ("counts", "lognorm", "scaled"), "loss_impl": ("linear", "dense"), "optimizer": ("adam", "adamw"),
    "logger": ("wandb", "csv", "none"), "views": ("both", "mlp", "gnn"), "gene_graph": ("knn", "knn_symmetric", "identity"),
}


def read_yaml(path: str | Path, what: str = "config file", hint: str = ""):
    """A YAML file's content; a missing file or bad YAML is one UserError line naming ``what`` it is."""
    path = Path(path)
    if not path.is_file():
        state = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"{what} {path} {state}{hint}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{what} {path} is not valid YAML ({str(err).splitlines()[0]})")


def _read_yaml(path: Path) -> dict:
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values")
    return data


def generic_config(task: str) -> dict:
    if task not in CHOICES["task"]:
        raise UserError(f"task must be 'sc' or 'st', got '{task}'")
    return _read_yaml(CONFIG_DIR / f"generic_{task}.yaml")


def dataset_config(name: str) -> dict:
    """Published per-dataset settings; {} for datasets that run on the generic defaults."""
    path = CONFIG_DIR / "datasets" / f"{name}.yaml"
    return _read_yaml(path) if path.exists() else {}


def resolve_config(*, dataset: str | None = None, task: str | None = None, config_file: str | None = None, overrides: dict | None = None) -> dict:
    """Merge the layers in order and check every value; returns a new flat dict."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_layer = _read_yaml(Path(config_file)) if config_file else {}
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
    config = {**RUN_DEFAULTS, **generic_config(task), **ds_layer, **file_layer, **overrides}
    config["task"] = task
    config["dataset"] = dataset
    unknown = sorted(set(config) - set(RUN_DEFAULTS) - set(generic_config(task)))
    if unknown:
        raise UserError(f"unknown config key(s): {', '.join(unknown)}; see configs/generic_{task}.yaml for the keys")
    return validate(config)


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


def validate(config: dict) -> dict:
    out = dict(config)
    for key, typ in TYPES.items():
        if out.get(key) is None:
            continue
        try:
            out[key] = _as_int(out[key]) if typ is int else _as_number(out[key])
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{key} must be {'a whole number' if typ is int else 'a finite number'}, got {out[key]!r}") from None
    for key, allowed in CHOICES.items():
        if out.get(key) is not None and out[key] not in allowed:
            raise UserError(f"{key} must be one of {', '.join(allowed)}, got '{out[key]}'")
    for key in BOOLS:
        if not isinstance(out.get(key, True), bool):
            raise UserError(f"{key} must be true or false, got {out[key]!r}")
    out["tms"] = parse_pair(out.get("tms", (0, 0)), "tms")
    if out.get("seeds") is not None:
        out["seeds"] = parse_seeds(out["seeds"])
    for key in ("hvg", "k", "gene_k", "hidden_dim", "epochs", "eval_every", "gene_dim"):
        if out.get(key) is not None and out[key] < 1:
            raise UserError(f"{key} must be at least 1, got {out[key]}")
    for key in ("checkpoint_every", "umap_every"):
        if out.get(key) is not None and out[key] < 0:
            raise UserError(f"{key} must be ≥ 0 (0: only at the end), got {out[key]}")
    if out.get("seed") is not None:
        check_seed(out["seed"])
    devices = out.get("devices", 1)
    if not (devices == 1 or (isinstance(devices, list) and len(devices) == 1)):
        # Lightning would start DDP: every rank trains the same one-batch graph (no speed-up), and train.py's
        # other ranks each claim the run directory, fail, and leave rank 0 waiting for them forever.
        raise UserError(f"devices = {devices!r}: scRCL trains on the whole graph in one batch, so a run uses one device; "
                        "to use several GPUs, run trials side by side: python -m scrcl.experiments.sweep / scrcl.experiments.ablate --gpus 0,1,2,3 "
                        "(or one train.py per GPU with CUDA_VISIBLE_DEVICES)")
    if out.get("n_clusters") is not None and out["n_clusters"] < 2:
        raise UserError(f"n_clusters must be at least 2, got {out['n_clusters']}")
    if not 0 <= out["dropout"] < 1:
        raise UserError(f"dropout must be in [0, 1), got {out['dropout']}")
    for key in ("lr", "tau"):
        if out[key] <= 0:
            raise UserError(f"{key} must be positive, got {out[key]}")
    for key in ("alpha", "beta", "hea_weight", "weight_decay", "radius", "graph_pcs"):
        if out.get(key) is not None and out[key] < 0:
            raise UserError(f"{key} must be ≥ 0, got {out[key]}")
    if out["alpha"] == 0 and out["beta"] == 0 and out["hea_weight"] == 0:
        raise UserError("alpha, beta and hea_weight are all 0: there is nothing to train; give at least one loss a weight")
    return out


def parse_pair(value, name: str) -> list[int]:
    if isinstance(value, str):
        value = value.replace(" ", "").split(",")
    try:
        pair = [_as_int(v) for v in value]
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be two integers like 5,0 — got {value!r}")
    if len(pair) != 2 or min(pair) < 0:
        raise UserError(f"{name} must be two integers ≥ 0 like 5,0 — got {value!r}")
    return pair


def parse_int_list(value, name: str) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        out = [_as_int(v) for v in value]
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be integers like 5,15,25 — got {value!r}")
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
