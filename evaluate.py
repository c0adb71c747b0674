#!/usr/bin/env python
"""Score clusterings against annotations, and tabulate many runs.

  python evaluate.py RUN_DIR                       re-score a run directory's result.h5ad
  python evaluate.py RUN_DIR --analyses            ... and write UMAPs, marker genes, PAGA to RUN_DIR/analyses/
  python evaluate.py --pred P --dataset NAME       a predicted-label file against a dataset's labels
  python evaluate.py --pred P --labels T --label-key COL   ... against a label table (TSV/CSV)
  python evaluate.py --aggregate RUN_DIR... [--table OUT.md]   mean ± std per dataset, settings and metric

Predicted-label files: one label per line (.txt/.csv), or a MATLAB .mat (key ``--pred-key``, default
the first array; the reference code's ``pred_label_dict_*.mat``). They are matched to the labelled
cells in file order, unlabelled cells dropped — the reference code's convention.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from scrcl.errors import UserError, output_file
from scrcl.eval.metrics import SCORES, clustering_scores, mean_std_text



class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"error: {message} (see python evaluate.py --help)", file=sys.stderr)
        sys.exit(2)


def _existing_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.is_dir():  # a pipe (--pred <(cut ...)) is read as a file
        raise UserError(f"{path} is a directory; give the file")


def read_predictions(path: Path, key: str | None = None) -> np.ndarray:
    _existing_file(path)
    if path.suffix == ".mat":
        from scipy.io import loadmat

        try:
            content = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        except Exception as err:
            raise UserError(f"cannot read {path} as a MATLAB file ({err})")
        if not content:
            raise UserError(f"{path} holds no variables; --pred takes a .mat file with the predicted labels")
        if key is None and len(content) != 1:  # e.g. one prediction per seed: which one is the user's to say
            raise UserError(f"{path} holds {len(content)} predictions (keys: {', '.join(content)}); "
                            "name one with --pred-key")
        key = next(iter(content)) if key is None else key
        if key not in content:
            raise UserError(f"{path} has no key '{key}'; keys: {', '.join(sorted(content))}")
        return np.asarray(content[key]).ravel().astype(str)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file; --pred takes one predicted label per line (.txt/.csv) or a .mat "
                        "file") from None
    lines = [line.strip().split(",")[-1] for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{path} is empty; --pred takes one predicted label per line")
    return np.asarray(lines, dtype=str)


def read_label_table(path: Path, label_key: str) -> np.ndarray:
    import pandas as pd

    from datamodules.readers import unify_label_vocabulary

    _existing_file(path)
    try:
        table = pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".txt") else ",", index_col=0)
    except (UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        reason = "not a text table" if isinstance(err, UnicodeDecodeError) else str(err).strip().splitlines()[0]
        raise UserError(f"cannot read {path} as a label table ({reason}); --labels takes a TSV/CSV with the cell id "
                        "first") from None
    if label_key not in table:
        raise UserError(f"label key '{label_key}' not in {path}; columns: {', '.join(map(str, table.columns))}")
    labels = unify_label_vocabulary(table[label_key])
    return labels.to_numpy(dtype=object)


def dataset_labels(name: str, data_dir: str | None) -> np.ndarray:
    from datamodules.loading import LABEL, load_dataset

    adata = load_dataset(name, data_dir, progress=False).adata
    return adata.obs[LABEL].to_numpy(dtype=object)


def score(truth: np.ndarray, pred: np.ndarray) -> dict:
    known = np.array([t is not None and t == t for t in truth])  # drop None/NaN
    truth = truth[known].astype(str)
    if len(pred) == len(known) and len(pred) != len(truth):
        pred = pred[known]
    if len(pred) != len(truth):
        raise UserError(f"{len(pred)} predictions but {len(truth)} labelled cells; the files do not belong together")
    return clustering_scores(truth, pred)


def score_run(run_dir: Path) -> dict:
    import anndata as ad

    from scrcl.train.results import check_run_dir

    check_run_dir(run_dir)
    path = run_dir / "result.h5ad"
    try:
        res = ad.read_h5ad(path)
    except Exception as err:  # truncated or not an .h5ad: anndata/h5py raise many types
        raise UserError(f"cannot read {path} ({type(err).__name__}); it may be truncated: re-run evaluate on a finished run, "
                        "or redo the run") from None
    if "label" not in res.obs:
        raise UserError(f"{run_dir} has no labels to score against (the run had none)")
    return score(res.obs["label"].to_numpy(dtype=object), res.obs["scrcl_cluster"].to_numpy().astype(str))


def run_analyses(run_dir: Path, data_dir: str | None) -> dict | None:
    """Write RUN_DIR/analyses/ (see scrcl/eval/analyses.py); the run's scores when it had labels, else None."""
    from scrcl.eval.analyses import ANALYSES_DIR, run_analyses as write_analyses
    from scrcl.train.loggers import quiet_libraries
    from scrcl.train.results import load_run

    quiet_libraries()
    written = write_analyses(load_run(Path(run_dir), data_dir), log=lambda line: print(line, file=sys.stderr))
    print(f"analyses: {len(written)} files in {Path(run_dir) / ANALYSES_DIR}")
    for path in written:
        print(f"  {path.name}")
    return score_run(run_dir) if _has_labels(run_dir) else None


def _has_labels(run_dir: Path) -> bool:
    import h5py

    path = Path(run_dir) / "result.h5ad"
    try:
        with h5py.File(path, "r") as f:
            return "label" in f["obs"]
    except (OSError, KeyError):
        raise UserError(f"cannot read {path}; it may be truncated: redo the run") from None


def collect_runs(paths: list[Path]) -> list[dict]:
    """Every metrics.json under ``paths``, each with its run's settings (``config.yaml`` beside it, or the batch's one
    level up for a seed of a multi-seed run) as ``_settings``: the keys that change what a run computes (seed and
    bookkeeping keys left out), or None where there is no config.yaml."""
    import yaml

    from scrcl.train.config import bookkeeping_keys, run_defaults
    from scrcl.train.results import find_config

    runs = []
    for root in paths:
        if not Path(root).exists():
            raise UserError(f"{root} does not exist; --aggregate takes run directories or folders holding them")
        for metrics_path in sorted(Path(root).rglob("metrics.json")):
            try:
                run = json.loads(metrics_path.read_text())
                if not isinstance(run, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as err:
                raise UserError(f"{metrics_path} is not a valid metrics.json ({str(err).splitlines()[0][:80]}); "
                                "move that run directory away or redo the run") from None
            config_path = find_config(metrics_path.parent)
            settings = None
            if config_path is not None:
                try:
                    stored = yaml.safe_load(config_path.read_text()) or {}
                except yaml.YAMLError:
                    raise UserError(f"{config_path} is not valid YAML; move that run directory away or redo the run") from None
                config = {**run_defaults(), **stored}
                settings = {k: v for k, v in config.items() if k not in bookkeeping_keys() | NOT_SETTINGS}
            runs.append({**run, "_settings": settings})
    if not paths:
        raise UserError("--aggregate needs run directories (or folders holding them): python evaluate.py --aggregate runs/")
    if not runs:
        raise UserError(f"no metrics.json under {', '.join(map(str, paths))}")
    return runs


# Besides the bookkeeping keys (scrcl.train.config): the seed (what a row averages over) and where the data came from.
NOT_SETTINGS = frozenset({"seed", "seeds", "dataset", "data"})


def aggregate_table(runs: list[dict]) -> str:
    """Markdown: one row per dataset and settings, mean ± std over its runs, and the seeds they ran.

    The scores are the evaluation each run reports: the final epoch's, or the one its label-free ``select`` chose (the
    line above the table names which). Runs of one dataset with other settings (an ablation variant, a sweep value,
    another epoch count) are never averaged together: each combination is its own row, and the ``settings`` column
    names the keys that differ between that dataset's rows. A seed that appears more than once in a row (``5 ×2``) is
    the same run repeated: its spread there is not seed noise."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        settings = run.get("_settings")
        groups.setdefault((run.get("dataset") or "?", "" if settings is None else json.dumps(settings, sort_keys=True)), []).append(run)
    varying: dict[str, list[str]] = {}
    for name in {name for name, _ in groups}:
        known = [json.loads(s) for n, s in groups if n == name and s]
        varying[name] = sorted(k for k in set().union(*known) if len({json.dumps(d.get(k)) for d in known}) > 1)
    chosen = sorted({str(r.get("selected_by") or "final epoch") for r in runs})
    lines = [f"Scores of the evaluation each run reports (chosen by: {', '.join(chosen)}; no labels involved); "
             "finished runs only.", "",
             "| dataset | runs | seeds | " + " | ".join(k.upper() for k in SCORES) + " | settings |",
             "|---|---|---|" + "---|" * (len(SCORES) + 1)]
    for (name, settings), group in sorted(groups.items()):
        cells = [mean_std_text(r[key] for r in group if key in r) for key in SCORES]
        values = json.loads(settings) if settings else None
        described = "no config.yaml" if values is None else ", ".join(f"{k}={values.get(k)}" for k in varying[name]) or "–"
        lines.append(f"| {name} | {len(group)} | {_seeds_text(r.get('seed') for r in group)} | " + " | ".join(cells)
                     + f" | {described} |")
    return "\n".join(lines) + "\n"


def _seeds_text(seeds) -> str:
    """``5, 15, 25``; a seed run more than once is marked ``5 ×2``."""
    from collections import Counter

    counts = Counter(seed for seed in seeds if seed is not None)
    order = sorted(counts, key=lambda s: (not isinstance(s, int), s if isinstance(s, int) else 0, str(s)))  # 5, 15, 25
    return ", ".join(f"{s}" + (f" ×{counts[s]}" if counts[s] > 1 else "") for s in order) or "–"


def _refuse_conflicts(args) -> None:
    """Flags that belong to another of evaluate.py's tasks were ignored without a word; now they are one line."""
    scoring = [f for f, v in (("--dataset", args.dataset), ("--labels", args.labels), ("--label-key", args.label_key),
                                ("--pred-key", args.pred_key)) if v]
    if args.table and not args.aggregate:
        raise UserError("--table writes the --aggregate table: python evaluate.py --aggregate RUN_DIRS --table FILE")
    if args.aggregate and (args.pred or args.analyses):
        raise UserError(f"--aggregate tabulates run directories; {'--pred' if args.pred else '--analyses'} is another "
                        "task (run it on its own)")
    if args.pred and (args.run_dirs or args.analyses):
        raise UserError("--pred scores a predictions file against labels; give it without run directories or --analyses")
    if scoring and not args.pred:
        raise UserError(f"{', '.join(scoring)} {'goes' if len(scoring) == 1 else 'go'} with --pred (python evaluate.py --pred FILE --dataset NAME, or "
                        "--labels TABLE --label-key COLUMN)")


def main(argv=None) -> int:
    parser = _Parser(prog="evaluate.py", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run directories")
    parser.add_argument("--pred", type=Path, help="predicted-label file (.txt/.csv/.mat)")
    parser.add_argument("--pred-key", help="key inside a .mat file")
    parser.add_argument("--dataset", help="registry dataset whose labels score --pred")
    parser.add_argument("--data-dir", help="data directory for --dataset")
    parser.add_argument("--labels", type=Path, help="label table (TSV/CSV, first column the cell id)")
    parser.add_argument("--label-key", help="column of --labels")
    parser.add_argument("--aggregate", action="store_true", help="tabulate every metrics.json under the run dirs")
    parser.add_argument("--table", type=output_file, help="write the aggregate table to this markdown file")
    parser.add_argument("--analyses", action="store_true",
                        help="with one run directory: UMAP input vs embedding, marker genes, PAGA into RUN_DIR/analyses/")
    args = parser.parse_args(argv)
    try:
        _refuse_conflicts(args)
        if args.aggregate:
            from scrcl.atomic import atomic_write_text

            table = aggregate_table(collect_runs(args.run_dirs))
            if args.table:
                atomic_write_text(args.table, table)
            print(table, end="")
            return 0
        if args.pred is not None:
            pred = read_predictions(args.pred, args.pred_key)
            if args.dataset:
                truth = dataset_labels(args.dataset, args.data_dir)
            elif args.labels and args.label_key:
                truth = read_label_table(args.labels, args.label_key)
            else:
                raise UserError("--pred needs --dataset NAME, or --labels TABLE with --label-key COLUMN")
            scores = score(truth, pred)
        elif len(args.run_dirs) == 1 and args.analyses:
            scores = run_analyses(args.run_dirs[0], args.data_dir)
            if scores is None:
                return 0
        elif len(args.run_dirs) == 1:
            scores = score_run(args.run_dirs[0])
        elif args.analyses:
            raise UserError("--analyses takes exactly one run directory, e.g. python evaluate.py runs/NAME --analyses")
        else:
            raise UserError("give one run directory, --pred with labels, or --aggregate with run directories")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(" ".join(f"{k.upper()} {scores[k]:.4f}" for k in SCORES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
