#!/usr/bin/env python
"""Train scRCL and cluster: ``python train.py --dataset lung`` or ``python train.py --data my.h5ad --n-clusters 8``.

Config precedence: generic defaults < configs/datasets/NAME.yaml < --config FILE < flags.
Both ``--key value`` and ``--key=value`` work (W&B agents use the latter). The last line printed is
``ACC … NMI … ARI … F1 …`` (final epoch; labels never pick the epoch), or the cluster sizes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scrcl.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, not a usage dump
        print(f"error: {message} (see python train.py --help)", file=sys.stderr)
        sys.exit(2)


# flag -> (config key, type, help); every config key has a flag
FLAGS = [
    ("dataset", str, "registry dataset name (case-insensitive), e.g. lung, pbmc10x, dlpfc_151673"),
    ("data", str, "your own file: .h5ad, X/Y .h5, Cell BLAST data.h5, or a Visium folder"),
    ("label-key", str, "obs column with annotations (scores only; never used to train)"),
    ("n-clusters", int, "number of clusters (default: the number of label classes)"),
    ("data-dir", str, "data directory (default: $SCRCL_DATA_DIR, then ./data)"),
    ("task", str, "sc (cell types) or st (spatial domains)"),
    ("input", str, "model input: counts | lognorm | scaled"),
    ("epochs", int, "training epochs"),
    ("lr", float, "learning rate"),
    ("weight-decay", float, "weight decay"),
    ("optimizer", str, "adam (L2 decay in the gradient, as the reference) | adamw (decoupled decay)"),
    ("dropout", float, "dropout rate"),
    ("hvg", int, "number of highly variable genes h"),
    ("k", int, "cell-graph neighbours"),
    ("gene-k", int, "gene-graph neighbours k_g (self included)"),
    ("graph-pcs", int, "scRNA-seq cell graph on the first P principal components (0 = on the HVGs; default: PCA-50 only from 10 000 cells)"),
    ("alpha", float, "weight of the NDC loss"),
    ("beta", float, "weight of the CVC loss"),
    ("hea-weight", float, "weight of the HEA loss (ablations set 0)"),
    ("tau", float, "temperature"),
    ("tms", str, "smoothing passes of the two views, e.g. 5,0"),
    ("hidden-dim", int, "latent width d"),
    ("gene-dim", int, "gene-embedding width c' (default: number of clusters)"),
    ("loss-impl", str, "linear (exact, O(N k d)) or dense (the paper's N x N form)"),
    ("radius", int, "spatial label refinement: majority vote over this many nearest spots (0 = off)"),
    ("views", str, "both | mlp | gnn (ablation: one encoder type for both views)"),
    ("gene-graph", str, "knn (directed, as the reference) | knn_symmetric | identity (ablation)"),
    ("seed", int, "random seed"),
    ("seeds", str, "several seeds, e.g. 5,15,25,35,45: one run each plus a mean ± std summary"),
    ("eval-every", int, "run k-means and log scores every N epochs"),
    ("umap-every", int, "UMAP plot every N evaluations (0 = only at the end)"),
    ("checkpoint-every", int, "checkpoint every N epochs (0 = only at the end)"),
    ("accelerator", str, "auto | cpu | gpu"),
    ("devices", int, "devices for the run: 1 (a run is one full-graph batch; use several GPUs with scrcl.experiments.sweep/ablate --gpus)"),
    ("precision", str, "32-true | bf16-mixed | 16-mixed"),
    ("logger", str, "wandb (offline unless WANDB_MODE says otherwise) | csv | none; a CSV log is always written"),
    ("output", str, "directory for run directories (default: runs)"),
    ("run-name", str, "name of the run directory"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="train.py", description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for flag, typ, text in FLAGS:
        parser.add_argument(f"--{flag}", type=typ, default=None, help=text)
    parser.add_argument("--config", default=None, help="YAML file of config keys (applied after the dataset's own settings)")
    parser.add_argument("--resume", default=None, help="continue an interrupted run directory from its last checkpoint")
    parser.add_argument("--no-refine", dest="refine", action="store_false", default=None, help="cluster on [Em|Eg] instead of the refined Z (ablation)")
    parser.add_argument("--no-cache", dest="cache", action="store_false", default=None, help="rebuild the preprocessed data")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    parser.add_argument("--no-umap", dest="umap", action="store_false", default=None,
                        help="no UMAP plots (saves umap-learn's start-up, ~10-20 s a run); result.h5ad still holds the embedding")
    parser.add_argument("--no-deterministic", dest="deterministic", action="store_false", default=None,
                        help="let the GPU use non-deterministic kernels (the same seed may then end differently)")
    parser.add_argument("--list-datasets", action="store_true", help="print the registry and exit")
    return parser


def _on_sigterm(signum, frame):
    """SIGTERM outside training (loading data, writing results): stop with the one-line message. During training
    Lightning's own handler takes it and training ends after the epoch (scrcl.train.callbacks.GracefulStop)."""
    from scrcl.errors import Interrupted  # already imported by main: nothing is imported inside a signal handler

    runner = sys.modules.get("scrcl.train.run")  # not imported yet: training cannot have started
    if runner is None or not runner.training_in_progress():
        raise Interrupted(signum)


def main(argv=None) -> int:
    import signal

    from scrcl.errors import Interrupted

    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from scrcl.train.config import resolve_config

        if args.list_datasets:
            from datamodules.registry import REGISTRY

            for name, spec in sorted(REGISTRY.items()):
                print(f"{name:22s} {spec.task}  {spec.n_classes:3d} classes  {'paper' if spec.paper else 'local'}")
            return 0
        overrides = {key.replace("-", "_"): getattr(args, key.replace("-", "_")) for key, _, _ in FLAGS}
        overrides.update(refine=args.refine, cache=args.cache, progress=args.progress, umap=args.umap, deterministic=args.deterministic)
        from scrcl.train import rundir
        from scrcl.train import run as runner
        from scrcl.train.results import final_line

        if not args.resume and overrides.get("run_name") and os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0"):
            # SLURM requeued this job (Lightning saved hpc_ckpt_N.ckpt on the requeue signal): continue its run
            candidate = os.path.join(overrides.get("output") or "runs", overrides["run_name"])
            if rundir.resumable(Path(candidate)):
                print(f"SLURM restart {os.environ['SLURM_RESTART_COUNT']}: continuing {candidate}")
                args.resume = candidate
        if args.resume:
            import yaml

            run_dir = os.path.abspath(args.resume)
            config_path = os.path.join(run_dir, "config.yaml")
            if not os.path.exists(config_path):
                raise UserError(f"{args.resume} has no config.yaml; --resume takes a run directory written by train.py")
            if not (yaml.safe_load(Path(config_path).read_text()) or {}):
                raise UserError(f"{config_path} holds no settings: that run stopped before its data were loaded, so there is "
                                "nothing to resume; delete the directory and start the run again")
            kept = ("progress", "umap", "accelerator", "devices", "data_dir", "cache")  # how it runs, not what it computes
            stored = resolve_config(config_file=config_path)
            given = {k: v for k, v in overrides.items() if v is not None and k not in kept}
            asked = resolve_config(config_file=config_path, overrides=given)
            # a flag repeating the run's own value is fine (a requeued batch job runs its command line again)
            changed = [f"--{'no-' if k == 'refine' else ''}{k.replace('_', '-')}" for k in given if asked.get(k) != stored.get(k)]
            if args.config:
                changed.append("--config")
            if changed:  # these were silently ignored: the run continued with its own settings
                raise UserError(f"--resume continues {args.resume} with the settings in its config.yaml; {', '.join(changed)} "
                                "cannot change them (start a new run for other settings)")
            config = resolve_config(config_file=config_path, overrides={k: v for k, v in overrides.items() if k in kept})
            result = runner.run(config, resume_dir=run_dir)
        else:
            if not (overrides["dataset"] or overrides["data"]):
                overrides["dataset"] = "pbmc68k"  # the embedded default: ships inside scanpy, works offline
            config = resolve_config(config_file=args.config, overrides=overrides)
            if config.get("data") and args.task is None and config["task"] == "sc":  # say so, never switch silently
                from datamodules.loading import spatial_note

                note = spatial_note(config["data"])
                if note:
                    print(note)
            result = runner.run(config)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except Interrupted as err:
        print(err, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside training (during training the first one ends it after the epoch)
        print(Interrupted(signal.SIGINT, None, args.resume), file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(final_line(result["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
