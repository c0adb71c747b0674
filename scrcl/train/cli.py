#!/usr/bin/env python
"""Train scRCL and cluster: ``python train.py --dataset lung`` or ``python train.py --data my.h5ad --n-clusters 8``.

Config precedence: generic defaults < configs/datasets/NAME.yaml < --config FILE < flags.
Every config key has a flag, made from its declaration in ``scrcl.train.config.KEYS``; both ``--key value`` and
``--key=value`` work (W&B agents use the latter), and switches take ``--key``, ``--no-key`` or ``--key=false``.
The last line printed is ``ACC … NMI … ARI … F1 …`` of the reported evaluation (the final epoch, or the one the
config's label-free ``select`` chose; labels never pick it), or the cluster sizes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scrcl.errors import CommandLineParser, UserError


def _help(k) -> str:
    text = k.help
    default = str(k.default).lower() if isinstance(k.default, bool) else k.default
    if k.method:  # the order resolve_config applies; the schema's default is what a key none of them sets gets
        text += " (default: the dataset's published setting, else configs/generic_sc.yaml / generic_st.yaml"
        text += f", else {default})" if k.default is not None else ")"
    elif k.default is not None:
        text += f" (default: {default})"
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """train.py's flags: one per config key of ``KEYS``, plus --config, --resume and --list-datasets."""
    from scrcl.train.config import KEYS

    parser = CommandLineParser(prog="train.py", command="python train.py", description=__doc__.split("\n")[0])
    for k in KEYS:
        if not k.flag:
            continue
        if k.kind is bool:  # --refine, --refine=false (W&B), --no-refine
            parser.add_argument(k.option, dest=k.name, nargs="?", const="true", default=None, metavar="true|false", help=_help(k))
            parser.add_argument(f"--no-{k.option[2:]}", dest=k.name, action="store_const", const="false", default=None,
                                help=f"the same as {k.option}=false")
        else:
            metavar = "|".join(k.choices) if k.choices else k.name.upper()
            parser.add_argument(k.option, dest=k.name, default=None, metavar=metavar, help=_help(k))
    parser.add_argument("--config", default=None, help="YAML file of config keys (applied after the dataset's own settings)")
    parser.add_argument("--resume", default=None, help="continue an interrupted run directory from its last checkpoint")
    parser.add_argument("--list-datasets", action="store_true", help="print the registry and exit")
    return parser


def _on_sigterm(signum, frame):
    """SIGTERM outside training (loading data, writing results): stop with the one-line message. During training
    Lightning's own handler takes it and training ends after the epoch (scrcl.train.callbacks.GracefulStop)."""
    from scrcl.errors import Interrupted  # already imported by main: nothing is imported inside a signal handler

    runner = sys.modules.get("scrcl.train.run")  # not (fully) imported yet: training cannot have started
    if not getattr(runner, "_IN_FIT", False):
        raise Interrupted(signum)


def main(argv=None) -> int:
    import signal

    from scrcl.errors import Interrupted, run_entry

    try:
        args = build_parser().parse_args(argv)
    except UserError as err:  # a wrong flag: one line, exit 2
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run_entry(lambda _: _train(args))
    except KeyboardInterrupt:  # Ctrl-C outside training (during training the first one ends it after the epoch)
        print(Interrupted(signal.SIGINT, None, args.resume), file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train(args) -> int:
    """What ``train.py`` does once its flags are read: list the datasets, or resolve the config (a new run, or the
    run ``--resume`` names) and train; ``main`` turns a mistake or an interruption into its one line."""
    from scrcl.train.config import resolve_config

    if args.list_datasets:
        from datamodules.registry import REGISTRY

        for name, spec in sorted(REGISTRY.items()):
            print(f"{name:22s} {spec.task}  {spec.n_classes:3d} classes  {'paper' if spec.paper else 'local'}")
        return 0
    from scrcl.train.config import KEYS, bookkeeping_keys

    overrides = {k.name: getattr(args, k.name) for k in KEYS if k.flag}
    from scrcl.train import rundir
    from scrcl.train import run as runner
    from scrcl.train.results import final_line, spread_line

    if not args.resume and overrides.get("run_name") and os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0"):
        # SLURM requeued this job (Lightning saved hpc_ckpt_N.ckpt on the requeue signal): continue its run
        candidate = os.path.join(overrides.get("output") or "runs", overrides["run_name"])
        if rundir.resumable(Path(candidate)):
            print(f"SLURM restart {os.environ['SLURM_RESTART_COUNT']}: continuing {candidate}")
            args.resume = candidate
    if args.resume:
        from scrcl.train.config import read_config_file

        run_dir = os.path.abspath(args.resume)
        config_path = os.path.join(run_dir, "config.yaml")
        if not os.path.exists(config_path):
            what = "has no config.yaml" if os.path.isdir(run_dir) else "is not a directory"
            raise UserError(f"{args.resume} {what}; --resume takes a run directory written by train.py")
        if not read_config_file(config_path, "the run's config"):
            raise UserError(f"{config_path} holds no settings: that run stopped before its data were loaded, so there is "
                            "nothing to resume; delete the directory and start the run again")
        kept = bookkeeping_keys() - {"seeds"}  # how it runs, not what it computes; the seeds are what the run holds
        stored = resolve_config(config_file=config_path)
        given = {k: v for k, v in overrides.items() if v is not None and k not in kept}
        asked = resolve_config(config_file=config_path, overrides=given)
        # a flag repeating the run's own value is fine (a requeued batch job runs its command line again)
        changed = [f"--{'no-' if asked.get(k) is False else ''}{k.replace('_', '-')}" for k in given if asked.get(k) != stored.get(k)]
        # --output / --run-name are fine where they name the run being resumed, however spelled (runs/, ./runs)
        if overrides.get("output") is not None and (os.path.realpath(os.path.expanduser(overrides["output"]))
                                                    != os.path.realpath(os.path.dirname(run_dir))):
            changed.append("--output")
        if overrides.get("run_name") is not None and overrides["run_name"] != os.path.basename(run_dir):
            changed.append("--run-name")
        if args.config:
            changed.append("--config")
        if changed:  # these were silently ignored: the run continued with its own settings
            raise UserError(f"--resume continues {args.resume} with the settings in its config.yaml; {', '.join(changed)} "
                            "cannot change them (start a new run for other settings)")
        config = resolve_config(config_file=config_path, overrides={k: v for k, v in overrides.items() if k in kept})
        result = runner.run(config, resume_dir=run_dir)
    else:
        if not (overrides["dataset"] or overrides["data"]):
            from scrcl.train.config import read_config_file

            named = read_config_file(args.config) if args.config else {}
            if not (named.get("dataset") or named.get("data")):  # --config may name them
                overrides["dataset"] = "pbmc68k"  # the embedded default: ships inside scanpy, works offline
        config = resolve_config(config_file=args.config, overrides=overrides)
        if overrides.get("seed") is not None and config.get("seeds"):  # --seeds (a flag or --config's) ignored --seed
            if overrides.get("seeds") is not None:
                raise UserError(f"give --seed {overrides['seed']} (one run) or --seeds {overrides['seeds']} (one run each), "
                                "not both")
            raise UserError(f"--seed {overrides['seed']} is one run, but the config lists seeds {config['seeds']} (from "
                            "--config): give --seeds, or a config without seeds")
        if config.get("data") and args.task is None and config["task"] == "sc":  # say so, never switch silently
            from datamodules.loading import spatial_note

            note = spatial_note(config["data"])
            if note:
                print(note)
        result = runner.run(config)
    spread = spread_line(result["summary"])
    if spread:
        print(spread)
    print(final_line(result["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
