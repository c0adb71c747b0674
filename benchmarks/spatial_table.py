#!/usr/bin/env python
"""Spatial-domain table: scRCL on the local DLPFC slices × seeds beside PCA + k-means and Leiden.

  python benchmarks/spatial_table.py                                 every local spatial slice, 5 seeds, published settings
  python benchmarks/spatial_table.py --config generic                the same slices run as a user's own file (--data FILE --task st)
  python benchmarks/spatial_table.py --seeds-for dlpfc_151675=5,15   other seeds for one slice (said in its rows)
  python benchmarks/spatial_table.py --set weight_averaging=ema --set select=silhouette
                                       the published settings reported both ways: the label-free report, and the live
                                       weights' final epoch (the reference's report) of the same runs
  python benchmarks/spatial_table.py --datasets dlpfc_151673 --seeds 5 --epochs 2 --set hidden_dim=32 \
      --runs-dir runs/smoke --output runs/smoke/SPATIAL.md                                     a smoke test

The committed results file (benchmarks/results/SPATIAL.md, SPATIAL_generic.md) is written only by the command recorded
in it, or when ``--output`` names it: another command's table (a smoke test, a subset) needs its own ``--output``.

Each (slice, seed) is one run directory ``RUNS/<published|generic>/<slice>/seed<s>/`` written by
``scrcl.train.run.run``. ``--config published`` (the default) runs each slice at its published settings
(``configs/datasets/NAME.yaml``); ``--config generic`` runs the slice's local .h5ad exactly as
``train.py --data FILE --task st --label-key layer_guess`` would, so no per-dataset YAML is read and
the generic spatial defaults (``configs/generic_st.yaml``) apply. ``--set key=value`` overrides
either. A run whose ``metrics.json`` exists is not run again, so an interrupted table resumes; a run
left half-way continues from its last checkpoint; runs made with other settings are refused.

Reported: ARI and NMI of the final epoch, or of the evaluation a label-free ``select`` criterion chose (then the
final epoch's beside it, and with ``weight_averaging`` the live weights' final epoch too: what the published settings,
which average nothing, give on the same trajectory; labels choose nothing), after the spatial majority-vote
refinement (``radius`` of the config) and without it (the raw k-means). The baselines run on the same
HVG matrix scRCL takes as input (the DataModule's ``batch.x``) with the true number of domains k:
PCA(30) + k-means, and scanpy Leiden with its resolution bisected until it gives k clusters (no
labels); each is also refined with the same majority vote, for a like-for-like comparison.
Writes ``benchmarks/results/SPATIAL.md`` (``SPATIAL_generic.md`` for ``--config generic``).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import numpy as np

from datamodules.datamodule import ScRCLDataModule
from datamodules.registry import DATA_DIR_HELP
from scrcl.atomic import atomic_write_text
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry, whole_number
from scrcl.experiments.tables import (
    BASELINE_VERSION, DEFAULT_SEEDS, MARGINS_NOTE, TABLE_RUN_SETTINGS, cached_baselines, has_live_final, header_lines,
    leiden_with_k, margin, method_rows, oracle_section, own_file, parse_seeds_for, parse_sets, table_datasets, pca_kmeans,
    scrcl_run, seeds_line, selection_section, settings_section, shown_path, table_output, table_row,
)
from scrcl.train.config import parse_seeds, resolve_config
from scrcl.train.loggers import quiet_libraries
from scrcl.train.results import write_json

ROOT = Path(__file__).resolve().parent.parent
MODES = ("published", "generic")
REPORTED = ("ari", "nmi", "ari_unrefined", "nmi_unrefined")


# -- settings -------------------------------------------------------------------------------------
def spatial_config(name: str, mode: str, sets: dict, data_dir: str | None) -> dict:
    """The resolved config of one slice: published settings, or the generic spatial defaults of a user's file."""
    from datamodules.registry import get_spec

    spec = get_spec(name)
    if spec.task != "st":
        raise UserError(f"'{spec.name}' is not a spatial dataset (task {spec.task}); pass spatial slices to --datasets")
    overrides = {**sets, **TABLE_RUN_SETTINGS, "data_dir": data_dir}
    if mode == "published":
        return resolve_config(dataset=spec.name, overrides=overrides)
    path, label_key = own_file(spec.name, data_dir)
    return resolve_config(overrides={**overrides, "data": str(path), "task": "st", "label_key": label_key})


# -- baselines ------------------------------------------------------------------------------------
def _scored(y: np.ndarray, pred: np.ndarray, refined: np.ndarray) -> dict:
    """Scores of the refined prediction under the usual keys, of the raw one under *_unrefined."""
    from scrcl.eval.metrics import clustering_scores

    known = y >= 0
    raw = clustering_scores(y[known], pred[known])
    return {**clustering_scores(y[known], refined[known]), **{f"{k}_unrefined": v for k, v in raw.items()},
            "pred": pred.tolist(), "pred_refined": refined.tolist()}


def baselines(datamodule, config: dict, seed: int, path: Path) -> dict:
    """PCA(30) + k-means and Leiden(k) on ``batch.x``, raw and spatially refined; cached in ``path``
    (recomputed when the preprocessing or the radius changed)."""
    from scrcl.eval.clustering import refine_spatial

    params = {"input": config["input"], "hvg": config["hvg"], "n_clusters": datamodule.n_clusters,
              "n_cells": datamodule.n_cells, "radius": config["radius"], "version": BASELINE_VERSION}
    cached = cached_baselines(path, params)
    if cached is not None:
        return cached
    x = datamodule.batch.x.numpy()
    y = datamodule.batch.y.numpy()
    coords = datamodule.batch.coords.numpy()
    t0 = time.perf_counter()
    km = pca_kmeans(x, datamodule.n_clusters, seed)
    km_out = {**_scored(y, km, refine_spatial(km, coords, config["radius"])), "seconds": time.perf_counter() - t0}
    t1 = time.perf_counter()
    leiden = leiden_with_k(x, datamodule.n_clusters, seed)
    ld_out = {**_scored(y, leiden["pred"], refine_spatial(leiden["pred"], coords, config["radius"])),
              "resolution": leiden["resolution"], "n_found": leiden["n_found"], "seconds": time.perf_counter() - t1}
    out = {"params": params, "pca_kmeans": km_out, "leiden": ld_out}
    write_json(path, out)
    return out


def slice_rows(name: str, mode: str, args, seeds: list[int], sets: dict) -> dict:
    """Every seed of one slice: the scRCL runs (or their finished metrics) and the baselines."""
    config = spatial_config(name, mode, sets, args.data_dir)
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    if not datamodule.has_labels or getattr(datamodule.batch, "coords", None) is None:
        raise UserError(f"'{name}' has no labels or no spot coordinates; the table needs both")
    folder = args.runs_dir / mode / name
    rows = {"dataset": name, "config": config, "seeds": seeds, "scrcl": [], "baselines": []}
    for seed in seeds:
        rows["baselines"].append(baselines(datamodule, config, seed, folder / f"baselines_seed{seed}.json"))
        rows["scrcl"].append(scrcl_run(config, folder / f"seed{seed}", args.runs_dir, seed, args.keep_checkpoints))
        b, m = rows["baselines"][-1], rows["scrcl"][-1]
        print(f"{name} seed {seed}: scRCL ARI {m['ari']:.4f} (raw {m['ari_unrefined']:.4f}) | PCA+k-means ARI "
              f"{b['pca_kmeans']['ari']:.4f} (raw {b['pca_kmeans']['ari_unrefined']:.4f}) | Leiden ARI "
              f"{b['leiden']['ari']:.4f} (raw {b['leiden']['ari_unrefined']:.4f})", flush=True)
    return rows


# -- the table ------------------------------------------------------------------------------------
def render(results: list[dict], *, mode: str, command: str, started: str, seconds: float, seeds: list[int], runs_dir: Path,
           sets: dict | None = None) -> str:
    """SPATIAL.md: header, the reported table (with the final epoch and, for averaged weights, the live weights' final
    epoch beside a label-free report), the margins, the report against the final and oracle epochs, the settings, and
    the separate oracle table."""
    which = ("published per-slice settings (configs/datasets/NAME.yaml)" if mode == "published" else
             "generic spatial defaults (configs/generic_st.yaml): each slice's .h5ad run as a user's own file, "
             "`--data FILE --task st --label-key layer_guess`")
    if sets:
        which += ", with " + ", ".join(f"`{k}: {v}`" for k, v in sets.items()) + " (`--set`)"
    lines = [
        f"# Spatial domains: scRCL vs PCA(30) + k-means vs Leiden — {mode} settings",
        "",
        *header_lines(results, command=command, started=started, seconds=seconds),
        f"- Settings: {which}. Runs: `{shown_path(runs_dir)}/{mode}/<slice>/seed<s>/`.",
        seeds_line(results, seeds)
        + ". Labels only score a finished clustering; spots without annotation are dropped before training.",
        "- *refined*: majority vote over each spot's `radius` nearest other spots (the spot itself does not vote; the "
        "config's radius), applied to every method alike; *raw*: the clustering before it (scRCL: k-means of the "
        "embedding of the evaluation the run reports).",
        "- Baselines run on the same HVG matrix scRCL takes as input (`batch.x`). PCA(30) + k-means: seeded, the true "
        "number of domains k. Leiden: scanpy, 15-NN graph of PCA(30), resolution bisected until it gives k clusters "
        "(no labels used).",
        "",
        "## Reported evaluation (labels choose nothing)",
        "",
        table_row(["slice", "spots", "genes", "k", "method", "ARI refined", "NMI refined", "ARI raw", "NMI raw", "note"]),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += method_rows(results, REPORTED, lambda r: f"; radius {r['config']['radius']}")
    lines += [
        "",
        "## Margins: scRCL minus each baseline, paired by seed",
        "",
        MARGINS_NOTE + " *raw* compares the clusterings before the majority vote."
        + (" With averaged weights a second row per slice gives the margins of the live weights' final epoch (the "
           "published settings' own report)." if any(has_live_final(r) for r in results) else ""),
        "",
        table_row(["slice", "scRCL", "ARI − PCA + k-means, refined", "ARI − PCA + k-means, raw", "ARI − Leiden, refined",
                   "ARI − Leiden, raw", "scRCL refined − Leiden raw, ARI"]),
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        reports = [("reported", "")]
        if has_live_final(r):  # averaged weights: the live weights' final epoch as well
            reports.append(("live weights, final epoch", "live_final_"))
        for name, prefix in reports:
            lines.append(table_row([r["dataset"], name, margin(r, "pca_kmeans", "ari", prefix + "ari"),
                                    margin(r, "pca_kmeans", "ari_unrefined", prefix + "ari_unrefined"),
                                    margin(r, "leiden", "ari", prefix + "ari"),
                                    margin(r, "leiden", "ari_unrefined", prefix + "ari_unrefined"),
                                    margin(r, "leiden", "ari_unrefined", ours_key=prefix + "ari")]))
    lines += selection_section(results, "slice")
    lines += settings_section(results, "slice")
    lines += oracle_section(results, "slice", ("ari", "nmi"),
                            "The evaluation (every `eval_every` epochs) with the best refined ARI against the annotation, as the "
                            "reference implementation reports it. Labels choose the epoch here, so these figures are optimistic; they "
                            "are shown only to compare with the paper's protocol and to see how far the final epoch is from the best one.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = CommandLineParser(prog="spatial_table.py", command="python benchmarks/spatial_table.py", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", help="comma-separated spatial registry names (default: every spatial slice available locally)")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"comma-separated seeds for every slice (default: {DEFAULT_SEEDS})")
    parser.add_argument("--seeds-for", action="append", default=[], metavar="NAME=SEEDS",
                        help="other seeds for one slice, e.g. dlpfc_151675=5 (repeatable; its rows say so)")
    parser.add_argument("--epochs", type=whole_number(1), default=None,
                        help="epochs for every slice (default: each slice's config); the same as --set epochs=N")
    parser.add_argument("--config", default="published", choices=MODES,
                        help="published per-slice settings, or the generic spatial defaults a user's own file gets")
    parser.add_argument("--set", action="append", default=[], help="config override key=value for every slice")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "spatial_table", help="where the run directories go")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's checkpoints")
    parser.add_argument("--output", type=output_file, default=None,
                        help="markdown file (default: benchmarks/results/SPATIAL.md, SPATIAL_generic.md for --config generic, "
                             "unless it holds another command's table: then this is refused)")
    args = parser.parse_args(argv)
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M %Z")
    command = "python benchmarks/spatial_table.py" + "".join(f" {shlex.quote(str(a))}" for a in (sys.argv[1:] if argv is None else argv))

    seeds = parse_seeds(args.seeds)
    sets = parse_sets(args.set)
    if args.epochs is not None:
        if sets.get("epochs", args.epochs) != args.epochs:
            raise UserError(f"--epochs {args.epochs} and --set epochs={sets['epochs']} disagree; give one")
        sets["epochs"] = args.epochs
    names = table_datasets(args.datasets, args.data_dir, "st")
    if not names:
        raise UserError("no spatial slice to run: none is available in the data directory; pass --data-dir or --datasets")
    seeds_for = parse_seeds_for(args.seeds_for)
    unknown = sorted(set(seeds_for) - set(names))
    if unknown:
        raise UserError(f"--seeds-for names {', '.join(unknown)}, which is not among the table's slices ({', '.join(names)})")
    output = table_output(args.output, ROOT / "benchmarks" / "results" / ("SPATIAL.md" if args.config == "published"
                                                                           else "SPATIAL_generic.md"), command)  # before any run
    quiet_libraries()
    results = [slice_rows(name, args.config, args, seeds_for.get(name, seeds), sets) for name in names]
    text = render(results, mode=args.config, command=command, started=started, seconds=time.perf_counter() - t0,
                  seeds=seeds, runs_dir=args.runs_dir, sets=sets)
    atomic_write_text(output, text)
    print(text, end="")
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
