#!/usr/bin/env python
"""What each loss term does to the embedding during training (an analysis that uses labels).

  python studies/dynamics.py dlpfc_151673 --epochs 300 --every 10 --set hidden_dim=256 \\
      --variant 'published={}' --variant 'no_ndc={"alpha": 0}' --variant 'tau1={"tau": 1.0}' \\
      --output studies/results/dynamics_dlpfc_151673.md

Trains the dataset's own config (``configs/datasets/NAME.yaml``, else the generic one) with ``--set`` on top,
once per ``--variant NAME=JSON`` (more config keys on top of that), with a plain loop over the same pieces a
run uses: the LightningModule ``build_module`` makes, its optimiser (``configure_optimizers``) and its objective, the
DataModule's full-graph batch. Every ``--every`` epochs, in eval mode, it records

* each loss term (HEA, NDC, CVC) and the gradient norm of that step;
* ARI against the annotation of k-means on what a run clusters, Z = [Zᵐ‖Zᵍ] (refined by the spatial
  majority vote when the config has a radius), and of k-means on the view embeddings [Ēᵐ‖Ēᵍ] (no
  refinement, no vote): which of the two representations carries the annotated structure;
* a label-free probe: ARI between those clusterings and k-means of the spot coordinates (k spatial blobs),
  i.e. how much the clusters are merely positional (spatial data only).

Labels score every evaluation here; nothing picks an epoch or a setting. Writes a markdown table per
variant (``--output``) and the raw records as JSON beside it.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent

from scrcl.experiments.tables import machine
from scrcl.experiments.tables import parse_sets
from datamodules.datamodule import ScRCLDataModule
from scrcl.train.module import build_module
from scrcl.train.loggers import quiet_libraries
from scrcl.atomic import atomic_write_text
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry, whole_number


def parse_variant(text: str) -> tuple[str, dict]:
    name, sep, body = text.partition("=")
    try:
        sets = json.loads(body) if sep else None
    except json.JSONDecodeError:
        sets = None
    if not name.strip() or not isinstance(sets, dict):
        raise UserError(f"--variant takes NAME=JSON-object, e.g. 'no_ndc={{\"alpha\": 0}}'; got '{text}'")
    return name.strip(), sets


def trace(name: str, sets: dict, *, epochs: int, every: int, seed: int, data_dir: str | None) -> list[dict]:
    """Train one variant; one record per evaluation (epoch 1, then every ``every`` epochs)."""
    import lightning as L
    import torch

    from scrcl.eval.clustering import kmeans, refine_spatial
    from scrcl.train.config import resolve_config
    from scrcl.eval.metrics import clustering_scores

    config = resolve_config(dataset=name, overrides={**sets, "data_dir": data_dir, "epochs": epochs,
                                                     "logger": "none", "progress": False})
    datamodule = ScRCLDataModule.from_config(config)
    datamodule.setup("fit")
    if not datamodule.has_labels:
        raise UserError(f"dataset '{name}' has no labels; this analysis needs them")
    batch, k = datamodule.batch, datamodule.n_clusters
    y = batch.y.numpy()
    known = y >= 0
    coords = batch.coords.numpy() if getattr(batch, "coords", None) is not None else None
    radius = config.get("radius", 0) if coords is not None else 0
    blobs = kmeans(coords, k, seed) if coords is not None else None
    L.seed_everything(seed, verbose=False)  # as runner.train_one seeds a run
    module = build_module(config, datamodule.n_cells, datamodule.n_genes, datamodule.n_clusters)
    optimizer = module.configure_optimizers()
    records, t0 = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        module.train()
        out = module.model(batch)
        terms = module.objective(out, batch.cell_graph)
        optimizer.zero_grad()
        terms["loss"].backward()
        grad_norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in module.parameters() if p.grad is not None)))
        optimizer.step()
        if epoch != 1 and epoch % every:
            continue
        with torch.no_grad():
            module.eval()
            out = module.model(batch)
        z = torch.cat([out["z_m"], out["z_g"]], 1).numpy()
        e = torch.cat([out["e_m"], out["e_g"]], 1).numpy()
        pred_z, pred_e = kmeans(z, k, seed), kmeans(e, k, seed)
        voted = refine_spatial(pred_z, coords, radius) if radius else pred_z
        record = {"epoch": epoch, **{t: float(v.detach()) for t, v in terms.items()}, "grad_norm": grad_norm,
                  "ari_z": clustering_scores(y[known], voted[known])["ari"],
                  "ari_e": clustering_scores(y[known], pred_e[known])["ari"],
                  "seconds": time.perf_counter() - t0}
        if blobs is not None:
            record.update(blobs_z=clustering_scores(blobs, pred_z)["ari"], blobs_e=clustering_scores(blobs, pred_e)["ari"])
        records.append(record)
        print(json.dumps({"variant": sets, **{key: round(v, 4) if isinstance(v, float) else v for key, v in record.items()}}), flush=True)
    return records


def render(dataset: str, variants: list[tuple[str, dict, list[dict]]], *, command: str, started: str, seed: int, base: dict) -> str:
    lines = [
        f"# Training dynamics on {dataset}: loss terms and what k-means finds in Z and in E (an analysis that uses labels)",
        "",
        f"- Command: `{command}`",
        f"- Date: {started}; machine: {machine()}; seed {seed}; the dataset's own config with {json.dumps(base)} on top.",
        "- ARI Z: k-means of Z = [Zᵐ‖Zᵍ], what a run reports (after the spatial majority vote when the config has a radius). "
        "ARI E: k-means of the view embeddings [Ēᵐ‖Ēᵍ], no vote. Blobs: ARI between that clustering and k-means of the "
        "spot coordinates (label-free; 1 = the clusters are just spatial patches).",
        "",
    ]
    for name, sets, records in variants:
        blobs = "blobs_z" in records[0]
        lines += [f"## {name}: {json.dumps(sets)}", "",
                  "| epoch | loss | HEA | NDC | CVC | grad norm | ARI Z | ARI E |" + (" blobs Z | blobs E |" if blobs else ""),
                  "|---" * (8 + 2 * blobs) + "|"]
        for r in records:
            cells = [str(r["epoch"]), f"{r['loss']:.4g}", *(f"{r[t]:.4g}" if t in r else "—" for t in ("hea", "ndc", "cvc")),
                     f"{r['grad_norm']:.3g}", f"{r['ari_z']:.3f}", f"{r['ari_e']:.3f}"]
            if blobs:
                cells += [f"{r['blobs_z']:.3f}", f"{r['blobs_e']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"{records[-1]['seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = CommandLineParser(prog="dynamics.py", command="python studies/dynamics.py", description=__doc__.split("\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--epochs", type=whole_number(1), default=300)
    parser.add_argument("--every", type=whole_number(1), default=10)
    parser.add_argument("--seed", type=whole_number(0), default=5)
    parser.add_argument("--set", action="append", default=[], help="config override key=value for every variant")
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON: more config keys for one variant (repeatable)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=output_file, required=True, help="markdown file; the records go to the same name with .json")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    command = "python studies/dynamics.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    base = parse_sets(args.set)
    variants = [parse_variant(v) for v in args.variant] or [("config", {})]

    from datamodules.registry import get_spec

    from scrcl.train.config import resolve_config

    dataset = get_spec(args.dataset).name
    for _, sets in variants:  # every variant's settings checked before the first one trains
        resolve_config(dataset=dataset, overrides={**base, **sets, "epochs": args.epochs})
    quiet_libraries()
    done = [(name, sets, trace(dataset, {**base, **sets}, epochs=args.epochs, every=args.every, seed=args.seed,
                               data_dir=args.data_dir)) for name, sets in variants]
    atomic_write_text(args.output.with_suffix(".json"), json.dumps(
        {"command": command, "started": started, "variants": [{"name": n, "set": s, "records": r} for n, s, r in done]}, indent=1))
    atomic_write_text(args.output, render(dataset, done, command=command, started=started, seed=args.seed, base=base))
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
