#!/usr/bin/env python
"""Score every few epochs of one training run and print one JSON line: how ARI and the loss move together.

  python studies/trajectory.py DATASET EPOCHS '{"hidden_dim": 256, "optimizer": "adamw"}' [SEED]

An analysis of training dynamics (labels score each evaluation; nothing here picks an epoch). The
evaluation cadence is ``$EV`` epochs (default 5). ``studies/results/stability.md`` was made with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


from datamodules.datamodule import ScRCLDataModule
from scrcl.train import run as runner
from scrcl.train.config import resolve_config
from scrcl.errors import CommandLineParser, run_entry, whole_number


def json_object(text: str) -> dict:
    """The overrides argument: a JSON object (argparse turns the error into one line through CommandLineParser)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}; e.g. '{{\"hidden_dim\": 256}}'")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = CommandLineParser(prog="trajectory.py", command="python studies/trajectory.py", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="registry dataset, e.g. pbmc10x")
    parser.add_argument("epochs", type=whole_number(1), help="epochs to train")
    parser.add_argument("sets", type=json_object, help='config overrides as a JSON object, e.g. \'{"hidden_dim": 256}\'')
    parser.add_argument("seed", type=whole_number(0), nargs="?", default=5, help="seed (default 5)")
    args = parser.parse_args(argv)
    dataset, epochs, sets, seed = args.dataset, args.epochs, args.sets, args.seed
    config = resolve_config(dataset=dataset, overrides={"epochs": epochs, "eval_every": int(os.environ.get("EV", 5)),
                                                         "logger": "none", "progress": False, **sets})
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    t0 = time.time()
    out = runner.train_one(config, datamodule, seed, run_dir=None)
    history = out["history"]
    print(json.dumps({
        "ds": dataset, "sets": sets, "seed": seed, "s": round(time.time() - t0),
        "final": {k: round(out["final"]["scores"][k], 3) for k in ("ari", "nmi")},
        "epochs": [r["epoch"] for r in history],
        "ari": [round(r["ari"], 2) for r in history],
        "ari_u": [round(r.get("ari_unrefined", -1), 2) for r in history],
        "loss": [round(r.get("loss", float("nan")), 3) for r in history],
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
