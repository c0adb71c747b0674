#!/usr/bin/env python
"""Which label-free way keeps what training found? Weight averaging, a calm end, selection by a criterion.

Weight averaging, a calm end of training, selection by an internal criterion: each measured on the local datasets
over seeds, labels only scoring.

Two runs per dataset and seed, both with EMA weights (``weight_averaging: ema``; each evaluation also records what
the live weights give, ``live_*`` in history.csv): one at constant lr (the reference) and one with ``lr_schedule:
cosine``. Selection (``select``) needs no run of its own: every evaluation records the silhouette and
Calinski–Harabasz index of its own k-means, so the evaluation each criterion would report is read from history.csv.
That gives, per run, 2 weights (live, EMA) × 3 reports (final epoch, best silhouette, best CH), beside the
label-picked best evaluation of the same trajectory (``oracle``: a bound, never a result).

  python studies/keep_found.py --datasets pollen,pbmc68k --seeds 5,15,25 --precision bf16-mixed   # runs, then the table
  python studies/keep_found.py --report-only                       # the table from every finished run under --runs
  python studies/keep_found.py --config generic --datasets dlpfc_151673 --precision 32-true   # as a user's own file

Runs go to ``runs/keep_found/<dataset>/<schedule>-seed<s>/`` (resumable: a finished run is not redone); the table to
``studies/results/keep_found.md``. ``--config generic`` runs each dataset's local .h5ad as a user's own file
(``--data FILE --task T --label-key K``), so the generic defaults apply (for a spatial slice ``configs/generic_st.yaml``,
which ``--dataset`` never gives a DLPFC slice; by default every local slice with an .h5ad); its runs go to
``runs/keep_found_generic/``, its table to ``studies/results/keep_found_generic.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from scrcl.atomic import atomic_write_text
from scrcl.errors import CommandLineParser, UserError, output_file, run_entry, whole_number
from scrcl.eval.metrics import mean_std_text
from scrcl.experiments.launcher import run_child, stop_if_signalled
from scrcl.experiments.tables import code_version, machine
from scrcl.train.config import parse_seeds

ROOT = Path(__file__).resolve().parent.parent
SCHEDULES = ("constant", "cosine")
CONFIGS = ("dataset", "generic")
DATASETS = "pollen,pbmc68k,baron_mouse1,baron_mouse2,mouse_bladder_han,pbmc10x,dlpfc_151673"  # --config dataset's
CONFIG_TEXT = {
    "dataset": "each dataset's own config (`--dataset NAME`: the generic config for the local scRNA-seq sets, the "
               "published settings for a DLPFC slice)",
    "generic": "each dataset's local .h5ad run as a user's own file (`--config generic`: `--data FILE --task T "
               "--label-key K`), so the generic defaults apply (configs/generic_sc.yaml, configs/generic_st.yaml)",
}
WEIGHTS = ("live", "ema")
REPORTS = ("final", "silhouette", "calinski_harabasz")


def run_dir(runs: Path, dataset: str, schedule: str, seed: int) -> Path:
    return runs / dataset / f"{schedule}-seed{seed}"


def data_arguments(args, dataset: str) -> list[str]:
    """How train.py is told the data: the registry name (its own config), or with ``--config generic`` its local .h5ad
    as a user's own file (one line and exit 2, before any run, for a dataset with no local .h5ad)."""
    if args.config == "dataset":
        return ["--dataset", dataset]
    from datamodules.registry import get_spec
    from scrcl.experiments.tables import own_file

    path, label_key = own_file(dataset, None)
    return ["--data", str(path), "--task", get_spec(dataset).task, "--label-key", label_key]


def train(args, dataset: str, schedule: str, seed: int) -> int:
    """One run of train.py, continued where an earlier one left a checkpoint, skipped when it finished; its exit
    status (0 when skipped)."""
    import shutil

    from scrcl.train.rundir import resumable

    target = run_dir(args.runs, dataset, schedule, seed)
    if (target / "metrics.json").exists():
        return 0
    if resumable(target):
        command = ["--resume", str(target)]
    else:
        shutil.rmtree(target, ignore_errors=True)  # a start that left no checkpoint: begin again
        # --select silhouette changes only which evaluation metrics.json reports (this study reads history.csv, the same
        # either way): a run is then also the run a results table makes with these settings
        command = [*data_arguments(args, dataset), "--seed", str(seed), "--lr-schedule", schedule, "--weight-averaging", "ema",
                   "--select", "silhouette",
                   "--precision", args.precision, "--eval-every", str(args.eval_every), "--no-umap", "--logger", "csv",
                   "--no-progress", "--output", str(target.parent), "--run-name", target.name,
                   *(["--epochs", str(args.epochs)] if args.epochs else [])]
    t0 = time.perf_counter()
    # a SIGTERM to the study stops the run too (scrcl.experiments.launcher.run_child)
    done = run_child([sys.executable, str(ROOT / "train.py"), *command], cwd=ROOT, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    print(f"{dataset} {schedule} seed {seed}: exit {done.returncode} in {time.perf_counter() - t0:.0f} s; "
          f"{(done.stdout.strip().splitlines() or [''])[-1]}", flush=True)
    stop_if_signalled(done, f"{dataset} {schedule} seed {seed}", "run the same command again to continue (that run "
                      "resumes from its checkpoint, if it made one)")  # the study was signalled, and so was its run
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    return done.returncode



def pick(history, weights: str, report: str) -> dict:
    """The evaluation a report would give, for the live or the averaged weights (labels only score it)."""
    prefix = "live_" if weights == "live" else ""
    if report == "final":
        row = history.iloc[-1]
    else:
        values = history[prefix + report].to_numpy(dtype=float)
        row = history.iloc[int(np.nanargmax(values))]  # the first of equal values: the earlier epoch
    return {"epoch": int(row["epoch"]), "ari": float(row[prefix + "ari"]), "nmi": float(row[prefix + "nmi"])}


def oracle(history, weights: str) -> float:
    prefix = "live_" if weights == "live" else ""
    return float(history[prefix + "ari"].max())


def picked(histories: list, weights: str, report: str) -> tuple[list[dict], float, float, float]:
    """One report over a dataset's seeds: the evaluations it picks, their mean ARI, its seed std (population), and the
    mean gap to the label-picked evaluation of the same weights."""
    chosen = [pick(h, weights, report) for h in histories]
    aris = [c["ari"] for c in chosen]
    gap = float(np.mean([oracle(h, weights) - a for h, a in zip(histories, aris)]))
    return chosen, float(np.mean(aris)), float(np.std(aris)), gap


def task_of(dataset: str) -> str:
    """'sc' or 'st' for a registry dataset; 'other' for a name the registry does not know."""
    from datamodules.registry import REGISTRY

    spec = REGISTRY.get(dataset)
    return spec.task if spec is not None else "other"


def constant_complete(found: dict) -> tuple[list[str], int]:
    """The datasets whose constant-lr runs have as many seeds as the most complete one's (cosine runs or not), and that
    number of seeds."""
    with_constant = [d for d in found if "constant" in found[d]]
    most = max((len(found[d]["constant"]) for d in with_constant), default=0)
    return [d for d in with_constant if len(found[d]["constant"]) == most], most


def groups_of(datasets: list[str]) -> list[tuple[str, list[str]]]:
    """The datasets a mean over datasets is taken over: all of them; with both tasks present, also the scRNA-seq sets
    alone (what configs/generic_sc.yaml is chosen on)."""
    sc = [d for d in datasets if task_of(d) == "sc"]
    return [("all", datasets)] + ([("scRNA-seq", sc)] if sc and len(sc) < len(datasets) else [])


def means_table(groups: list[tuple[str, list[str]]], rows: dict) -> list[str]:
    """One row per (schedule, weights, report) in ``rows`` (each: dataset -> (mean ARI, seed std, gap)), and for each
    group of datasets the mean of each of the three; one group keeps the plain column names."""
    head = ["lr", "weights", "report"]
    for name, members in groups:
        head += ([f"mean ARI, {name} ({len(members)})"] if len(groups) > 1 else ["mean ARI"]) + ["mean seed std", "mean gap"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (schedule, weights, rep), per_dataset in rows.items():
        cells = [schedule, weights, rep]
        for _, members in groups:
            arr = np.array([per_dataset[d] for d in members])
            cells += [f"{arr[:, 0].mean():.4f}", f"{arr[:, 1].mean():.4f}", f"{arr[:, 2].mean():.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def constant_section(found: dict) -> list[str]:
    """The reference's schedule alone (constant lr), over every dataset with it on as many seeds as the most complete
    one, cosine runs or not (and the scRNA-seq sets apart, :func:`groups_of`)."""
    chosen, most = constant_complete(found)
    if not chosen:
        return []
    groups = groups_of(chosen)
    rows = {("constant", weights, rep): {d: picked([found[d]["constant"][s] for s in sorted(found[d]["constant"])],
                                                   weights, rep)[1:] for d in chosen}
            for weights in WEIGHTS for rep in REPORTS}
    return ["## Constant lr (the reference's schedule), over the datasets", "",
            f"Each dataset's mean ARI, seed std and gap ({most} seeds), averaged over the datasets with constant-lr runs on "
            f"{most} seeds, cosine runs or not: all ({', '.join(chosen)})"
            + (f"; and the scRNA-seq sets alone ({', '.join(groups[1][1])}), on which the generic scRNA-seq config is "
               "chosen." if len(groups) > 1 else "."), "",
            *means_table(groups, rows), ""]


def report(args) -> str:
    import pandas as pd

    from scrcl.train.config import read_config_file

    found: dict = {}
    linked: dict = {}
    root = args.runs.resolve().parent  # runs/: where a linked run's folder is shown from
    selects: dict = {}
    kinds: set = set()  # which config the runs had, from their own config.yaml: a data file (generic) or a dataset
    precisions: set = set()
    threads: set = set()
    for dataset_dir in sorted(p for p in args.runs.iterdir() if p.is_dir()) if args.runs.exists() else []:
        for run in sorted(dataset_dir.iterdir()):
            if not (run / "metrics.json").exists():
                continue
            schedule, seed = run.name.rsplit("-seed", 1)
            history = pd.read_csv(run / "history.csv")
            found.setdefault(dataset_dir.name, {}).setdefault(schedule, {})[int(seed)] = history
            if run.is_symlink():  # another study's or table's run, made with the same settings
                target = run.resolve().parent
                shown = f"{root.name}/{target.relative_to(root)}" if target.is_relative_to(root) else target.name
                linked.setdefault(dataset_dir.name, set()).add(shown)
            if (run / "config.yaml").exists():  # which evaluation the run's own metrics.json reports; its precision
                config = read_config_file(run / "config.yaml", "the run's config")
                selects.setdefault(dataset_dir.name, set()).add(config.get("select", "final"))
                precisions.add(str(config.get("precision")))
                kinds.add("generic" if config.get("data") else "dataset")
            threads.add(str(json.loads((run / "metrics.json").read_text()).get("torch_threads", "not recorded")))
    lines = [
        "# Keeping what training found, without labels (studies/keep_found.py)", "",
        f"- Command: `{args.command}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; code {code_version(ROOT)}; machine: {machine()}",
        f"- Precision {', '.join(sorted(precisions)) or args.precision}, torch threads {', '.join(sorted(threads)) or '–'} "
        "(from the runs' config.yaml and metrics.json); "
        + "; and ".join(CONFIG_TEXT[k] for k in CONFIGS if k in (kinds or {args.config}))
        + " with `weight_averaging: ema` (ema_decay 0.98); evaluations every "
        f"{args.eval_every} epochs. The runs' own metrics.json reports the evaluation their `select` says (each "
        "dataset's heading; runs started before `--select silhouette` was added report the final epoch); this table "
        "reads history.csv, which is the same either way (tests/train/test_keep_found.py checks it).",
        "- ARI mean ± population std over the seeds. *gap*: mean of (label-picked best evaluation of the same "
        "trajectory − reported), the ARI a label-free report leaves behind. Labels choose nothing reported here; "
        "the label-picked figure is only the yardstick.",
        "- Rows: lr schedule (constant = the reference, cosine to 0) × weights (live = the trained weights, EMA) × "
        "report (final epoch; the evaluation with the best silhouette of its own k-means; the best Calinski–Harabasz).",
        "",
    ]
    summary: dict = {}
    common = {dataset: sorted(set.intersection(*(set(s) for s in schedules.values()))) for dataset, schedules in found.items()}
    most = max((len(seeds) for seeds in common.values()), default=0)
    # the mean over datasets takes only datasets with every schedule on as many seeds as the most complete one
    complete = [d for d in found if set(found[d]) == set(SCHEDULES) and len(common[d]) == most]
    in_constant_means = constant_complete(found)[0]
    for dataset, schedules in found.items():
        # a finished comparison takes the seeds both schedules have; one under way shows each schedule on its own seeds
        seeds = {schedule: common[dataset] if dataset in complete else sorted(runs) for schedule, runs in schedules.items()}
        shown = {s: ", ".join(map(str, seeds[s])) for s in SCHEDULES if s in seeds}
        seeds_text = (f"seeds {next(iter(shown.values()))}" if len(set(shown.values())) == 1 else
                      "; ".join(f"{s} lr seeds {text}" for s, text in shown.items()))
        select = ", ".join(sorted(selects.get(dataset, []))) or "not recorded"
        if dataset in complete:
            progress = ""
        elif dataset in in_constant_means:
            progress = ("; cosine lr in progress" if "cosine" in schedules else "; constant lr only") + \
                ": in the constant-lr means, not in the two-schedule mean"
        else:
            progress = "; in progress, not in the means over the datasets"
        if dataset in linked:
            progress += f"; runs linked from {', '.join(f'`{p}`' for p in sorted(linked[dataset]))}"
        lines += [f"## {dataset} ({seeds_text}; the runs' metrics.json: select {select}{progress})", "",
                  "| lr | weights | report | ARI | NMI | gap to label-picked | epochs reported |", "|---|---|---|---|---|---|---|"]
        for schedule in SCHEDULES:
            if schedule not in schedules:
                continue
            for weights in WEIGHTS:
                for rep in REPORTS:
                    chosen, mean, std, gap = picked([schedules[schedule][s] for s in seeds[schedule]], weights, rep)
                    if dataset in complete:
                        summary.setdefault((schedule, weights, rep), {})[dataset] = (mean, std, gap)
                    lines.append(f"| {schedule} | {weights} | {rep} | {mean_std_text([c['ari'] for c in chosen])} | "
                                 f"{mean_std_text([c['nmi'] for c in chosen])} | {gap:.4f} | "
                                 f"{', '.join(str(c['epoch']) for c in chosen)} |")
        lines.append("")
    lines += constant_section(found)
    if summary:
        groups = groups_of(complete)
        lines += ["## Over the datasets", "",
                  f"Mean over the {len(complete)} datasets ({', '.join(complete)}) of each dataset's mean ARI, its seed std, "
                  "and its gap" + (f"; and over the scRNA-seq sets alone ({', '.join(groups[1][1])})." if len(groups) > 1
                                   else "."), "", *means_table(groups, summary), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = CommandLineParser(prog="keep_found.py", command="python studies/keep_found.py", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=None,
                        help=f"which runs to make (comma-separated; default {DATASETS}, with --config generic every "
                             "local spatial slice with an .h5ad); the table reads every finished run under --runs")
    parser.add_argument("--seeds", default="5,15,25", help="which runs to make; the table reads every finished run")
    parser.add_argument("--precision", default="bf16-mixed", choices=("32-true", "bf16-mixed"))
    parser.add_argument("--eval-every", type=whole_number(1), default=10)
    parser.add_argument("--epochs", type=whole_number(1), default=None, help="default: each dataset's config (500)")
    parser.add_argument("--config", default="dataset", choices=CONFIGS,
                        help="dataset: each dataset's own config (--dataset NAME); generic: its local .h5ad run as a "
                             "user's own file, so the generic defaults apply (default: dataset)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="default: runs/keep_found/ (runs/keep_found_generic/ with --config generic)")
    parser.add_argument("--output", type=output_file, default=None,
                        help="default: studies/results/keep_found.md (keep_found_generic.md with --config generic)")
    parser.add_argument("--schedules", default=",".join(SCHEDULES),
                        help="which runs to make (comma-separated, of constant, cosine); the table reads every finished run")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    args.command = "python studies/keep_found.py " + " ".join(sys.argv[1:] if argv is None else argv)
    suffix = "" if args.config == "dataset" else "_generic"
    args.runs = args.runs or ROOT / "runs" / f"keep_found{suffix}"
    args.output = args.output or ROOT / "studies" / "results" / f"keep_found{suffix}.md"
    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    unknown = sorted(set(schedules) - set(SCHEDULES))
    if unknown or not schedules:
        raise UserError(f"--schedules takes {' and/or '.join(SCHEDULES)}, got {args.schedules!r}")
    from datamodules.registry import get_spec

    failed = []
    if not args.report_only:
        seeds = parse_seeds(args.seeds)
        if args.datasets is None and args.config == "generic":
            from scrcl.experiments.tables import h5ad_datasets

            datasets = h5ad_datasets(None, "st")
            if not datasets:
                raise UserError("--config generic found no local spatial slice with an .h5ad; pass --datasets")
        else:  # a wrong name: before any run
            datasets = [get_spec(d.strip()).name for d in (args.datasets or DATASETS).split(",") if d.strip()]
        for dataset in datasets:  # and with --config generic, a dataset with no local .h5ad
            data_arguments(args, dataset)
        for dataset in datasets:
            for seed in seeds:
                for schedule in schedules:
                    if train(args, dataset, schedule, seed) != 0:
                        failed.append(f"{dataset} {schedule} seed {seed}")
            atomic_write_text(args.output, report(args))  # after each dataset: the table so far
    atomic_write_text(args.output, report(args))
    print(f"wrote {args.output}")
    if failed:  # the table holds the finished runs; a batch system must still see that some did not finish
        print(f"{len(failed)} run(s) failed ({'; '.join(failed)}); their lines above say why, and the same command "
              "continues them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
