#!/usr/bin/env python
"""Final-epoch scRCL quality against PCA(30) + k-means on the same preprocessed data.

  python benchmarks/quality.py --datasets pbmc10x,mouse_bladder_han --seeds 5,15,25

Every dataset runs on its resolved config (generic defaults unless it is a paper dataset), with
``--set key=value`` overrides for analyses. Labels only score: the scRCL figure is the final
epoch's k-means; the best-by-label epoch appears only in the separate ``oracle`` columns.
Writes a markdown table (``--output``, default benchmarks/results/quality.md) and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scrcl.config import parse_seeds, resolve_config  # noqa: E402
from scrcl.atomic import atomic_write_text  # noqa: E402
from scrcl.errors import UserError, run_entry  # noqa: E402
from scrcl.metrics import SCORES, mean_std_text  # noqa: E402



def pca_kmeans(lognorm, n_clusters: int, seed: int) -> np.ndarray:
    """PCA(30) + seeded k-means; on one BLAS/OpenMP thread so that the figure does not depend on the
    calling process's thread count (see ``leiden_with_k``)."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    from scrcl.clustering import kmeans

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
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="pbmc10x,mouse_bladder_han")
    parser.add_argument("--seeds", default="5,15,25")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (an analysis, not a default)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "quality.md")
    parser.add_argument("--json", type=Path, default=None, help="also write every per-seed figure as JSON")
    args = parser.parse_args(argv)

    from scrcl import runner
    from scrcl.metrics import clustering_scores

    seeds = parse_seeds(args.seeds)
    sets = parse_sets(args.set)
    lines = [
        "# scRCL final-epoch quality vs PCA(30) + k-means",
        "",
        f"Command: `python benchmarks/quality.py --datasets {args.datasets} --seeds {args.seeds}"
        + "".join(f" --set {s}" for s in args.set) + "`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {runner.platform.node()} (CPU); mean ± std over seeds {seeds}.",
        "",
        "| dataset | method | " + " | ".join(k.upper() for k in SCORES) + " | s/run | oracle ARI (best epoch, label-picked) |",
        "|---|---|" + "---|" * len(SCORES) + "---|---|",
    ]
    dump = {}
    for name in args.datasets.split(","):
        config = resolve_config(dataset=name, overrides={**sets, "logger": "none", "progress": False})
        datamodule = runner.make_datamodule(config)
        datamodule.setup("fit")
        y = datamodule.batch.y.numpy()
        known = y >= 0
        baseline, ours = [], []
        for seed in seeds:
            pred = pca_kmeans(datamodule.prepared.layers["lognorm"], datamodule.n_clusters, seed)
            baseline.append(clustering_scores(y[known], pred[known]))
            t0 = time.perf_counter()
            outcome = runner.train_one(config, datamodule, seed, run_dir=None)
            row = {**outcome["final"]["scores"], **outcome["oracle"], "seconds": time.perf_counter() - t0, "history": outcome["history"]}
            ours.append(row)
            print(f"{name} seed {seed}: scRCL ARI {row['ari']:.4f} NMI {row['nmi']:.4f} | PCA ARI {baseline[-1]['ari']:.4f} ({row['seconds']:.0f}s)", flush=True)
        dump[name] = {"config": config, "scrcl": ours, "pca_kmeans": baseline}
        shown = {k: config[k] for k in ("input", "hvg", "tms", "lr", "tau", "alpha", "beta", "epochs", "dropout", "weight_decay")}
        lines.append(f"| {name} | scRCL (final epoch) | " + " | ".join(mean_std(ours, k) for k in SCORES)
                     + f" | {np.mean([r['seconds'] for r in ours]):.0f} | {mean_std(ours, 'oracle_ari')} |")
        lines.append(f"| {name} | PCA(30) + k-means | " + " | ".join(mean_std(baseline, k) for k in SCORES) + " | – | – |")
        lines.append(f"| | config: `{json.dumps(shown)}` | | | | | | |")
    lines.append("")
    text = "\n".join(lines)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, text)
    if args.json:
        runner.write_json(args.json, dump)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
