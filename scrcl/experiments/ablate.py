"""Ablations: ``python -m scrcl.experiments.ablate --dataset pbmc10x --seeds 5,15,25 [--gpus 0,1,2,3 | --workers N]``.

The variants are listed in one file (default ``configs/ablations/components.yaml``): each changes a
few config keys on top of the dataset's own settings. Every variant × seed is one train.py trial in
``OUT/<variant>-seed<s>/`` (default ``OUT = runs/ablations/<file>-<dataset>``), run by
:mod:`scrcl.experiments.launcher` (one per GPU or N CPU workers; finished trials are skipped, so the same command
resumes). Then ``OUT/ablation.md`` and ``OUT/ablation.csv``: mean ± std of the final epoch's
ACC/NMI/ARI/F1 per variant, of each run's reported evaluation (the final epoch, or the one the config's label-free
``select`` chose; never the oracle_* figures). Labels only score the finished runs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from scrcl.experiments import launcher
from scrcl.experiments.tables import shown_path
from scrcl.train.config import CONFIG_DIR, parse_seeds
from scrcl.errors import UserError

DEFAULT_FILE = CONFIG_DIR / "ablations" / "components.yaml"
DEFAULT_SEEDS = "5,15,25"
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def load_variants(path: str | Path) -> dict[str, dict]:
    """``{name: {"description": str, "set": {config key: value}}}`` in the file's order, checked."""
    from scrcl.train.config import read_yaml

    path = Path(path)
    data = read_yaml(path, "ablation file", f" (the default is {DEFAULT_FILE})")
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, dict) or not variants:
        raise UserError(f"ablation file {path} must hold 'variants:' mapping each name to description and set")
    out = {}
    for name, spec in variants.items():
        name = str(name)
        if not NAME.match(name):
            raise UserError(f"ablation file {path}: variant name '{name}' must use letters, digits, '_', '-' or '.'")
        if not isinstance(spec, dict) or not isinstance(spec.get("set", {}), dict):
            raise UserError(f"ablation file {path}: variant '{name}' needs 'set: {{key: value}}' (may be empty)")
        unknown = sorted(set(spec) - {"description", "set"})
        if unknown:
            raise UserError(f"ablation file {path}: variant '{name}' has unknown key(s) {', '.join(unknown)} (description, set)")
        settings = dict(spec.get("set") or {})
        for key in settings:
            if key in ("seed", "seeds", "output", "run_name", "resume", "dataset", "data") or launcher.train_action(key) is None:
                raise UserError(f"ablation file {path}: variant '{name}' sets '{key}', which is not a method config key "
                                "(see configs/generic_sc.yaml and python train.py --help)")
        out[name] = {"description": str(spec.get("description", "")), "set": settings}
    return out


def select(variants: dict[str, dict], names: str | None) -> dict[str, dict]:
    """The variants named in ``--variants a,b`` (all of them by default), in the file's order."""
    if not names:
        return variants
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    missing = [n for n in wanted if n not in variants]
    if missing or not wanted:
        raise UserError(f"--variants: unknown variant(s) {', '.join(missing) or '(none given)'}; the file has {', '.join(variants)}")
    return {n: v for n, v in variants.items() if n in wanted}


def variant_args(settings: dict) -> list[str]:
    """A variant's config changes as train.py flags (``refine: false`` -> ``--no-refine``)."""
    args = []
    for key, value in settings.items():
        args += launcher.key_to_args(key, value)
    return args


def build_trials(variants: dict[str, dict], dataset: str | None, seeds: list[int], extras: list[str],
                 out_dir: Path) -> list[launcher.Trial]:
    """One Trial per variant × seed, run directory ``OUT/<variant>-seed<s>``."""
    extra_keys = launcher.check_extra_args(extras)
    trials = []
    for name, spec in variants.items():
        clash = sorted(set(spec["set"]) & set(extra_keys))
        if clash:
            raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in clash)} is what variant '{name}' changes; "
                            "leave it out of the extra flags")
        for seed in seeds:
            run_name = f"{name}-seed{seed}"
            args = [*([f"--dataset={dataset}"] if dataset else []), *variant_args(spec["set"]), *extras,
                    f"--seed={seed}", f"--output={out_dir}", f"--run-name={run_name}"]
            trials.append(launcher.Trial(name=run_name, params={"variant": name, "seed": seed}, args=tuple(args),
                                         run_dir=out_dir / run_name))
    return trials


def change_text(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "–"


def results_rows(variants: dict[str, dict], trials: list[launcher.Trial]) -> list[dict]:
    """Per variant: its finished runs' metrics and their mean ± std."""
    rows = []
    for name, spec in variants.items():
        mine = [t for t in trials if t.params["variant"] == name]
        metrics = [m for m in (launcher.read_metrics(t) for t in mine) if m is not None]
        rows.append({"variant": name, "spec": spec, "trials": len(mine), "metrics": metrics,
                     "scores": launcher.score_summary(metrics)})
    return rows


def paired_difference(row: dict, full: dict | None, key: str = "ari") -> str:
    """``row``'s score − ``full``'s over their shared seeds, with its 95% interval and whether it is within noise
    (``launcher.paired_by_seed``); ``–`` if no seed is shared."""
    if full is None or row is full:
        return "–"
    return launcher.paired_by_seed(row["metrics"], full["metrics"], key)


def render_markdown(rows: list[dict], *, dataset: str, seeds: list[int], file: Path, out_dir: Path, command: str,
                    outcome: launcher.Outcome, conditions: str) -> str:
    head = ["variant", "change", "runs", *[k.upper() for k in launcher.SCORES], "ARI by seed", "ARI − full, same seeds"]
    full = next((r for r in rows if not r["spec"]["set"]), None)  # the variant that changes nothing
    finished = sum(len(r["metrics"]) for r in rows)
    epochs = sorted({m.get("epoch") for r in rows for m in r["metrics"]})
    lines = [
        f"# Ablations on {dataset}",
        "",
        f"- Command: `{command}`; variants from `{shown_path(file)}`",
        f"- Seeds {', '.join(map(str, seeds))}; trials finished: {finished} of {sum(r['trials'] for r in rows)}; "
        f"failed this time: {len(outcome.failed)}; epochs reported: {', '.join(map(str, epochs)) or '–'}",
        f"- Run directories: `{shown_path(out_dir)}/<variant>-seed<s>/`; W&B group `{out_dir.name}`",
        f"- {conditions}",
        "- Scores of each run's reported evaluation (the final epoch, or the one its config's label-free `select` chose; "
        "labels choose nothing; never the oracle_* figures), mean ± population std over seeds "
        "[95% interval of the mean, Student's t].",
        "",
        launcher.markdown_row(head),
        "|" + "---|" * len(head),
    ]
    for r in rows:
        runs = f"{len(r['metrics'])}/{r['trials']}"
        if 0 < len(r["metrics"]) < r["trials"]:  # a partial row says which seeds its mean is over
            runs += " (seed " + ", ".join(str(m.get("seed", "?")) for m in r["metrics"]) + ")"
        cells = [r["variant"], change_text(r["spec"]["set"]), runs]
        cells += [launcher.mean_std_text(r["scores"], k) for k in launcher.SCORES]
        by_seed = ", ".join(f"{m.get('seed', '?')}: {m['ari']:.3f}" for m in r["metrics"] if "ari" in m)
        lines.append(launcher.markdown_row(cells + [by_seed or "–", paired_difference(r, full)]))
    lines += ["", "ARI − full: the mean, over the seeds that both have finished, of the variant's ARI minus the full "
              "model's ARI on the same seed, with its 95% interval (Student's t over the paired differences); "
              "'within noise' when that interval contains 0.", "", "Variants:", ""] + [f"- `{r['variant']}`: {r['spec']['description']}" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], out_dir: Path, **info) -> str:
    """ablation.md and ablation.csv in ``out_dir`` (atomically)."""
    from scrcl.atomic import atomic_write_text

    text = render_markdown(rows, out_dir=out_dir, **info)
    atomic_write_text(out_dir / "ablation.md", text)
    header = ["variant", "change", "runs", "trials", *[f"{k}_{s}" for k in launcher.SCORES for s in ("mean", "std")]]
    body = []
    for r in rows:
        scores = [r["scores"].get(k, (None, None))[i] for k in launcher.SCORES for i in (0, 1)]
        body.append([r["variant"], change_text(r["spec"]["set"]), len(r["metrics"]), r["trials"],
                     *["" if v is None else f"{v:.6f}" for v in scores]])
    launcher.write_csv(out_dir / "ablation.csv", header, body)
    return text


def build_parser() -> launcher.LauncherParser:
    parser = launcher.LauncherParser(prog="scrcl.experiments.ablate", allow_abbrev=False, description=__doc__.split("\n")[0],
                                     epilog="Any other flag (e.g. --epochs 100) is passed to every trial's train.py.")
    launcher.add_launch_arguments(parser)
    parser.set_defaults(seeds=DEFAULT_SEEDS)
    parser.add_argument("--file", default=str(DEFAULT_FILE), help="the variants (YAML)")
    parser.add_argument("--variants", default=None, help="run only these variants, e.g. full,no_hea")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extras = build_parser().parse_known_args(argv)
    file = Path(args.file)
    variants = select(load_variants(file), args.variants)
    slots = launcher.make_slots(args.gpus, args.workers)
    seeds = parse_seeds(args.seeds)
    probe = build_trials(dict([next(iter(variants.items()))]), args.dataset, seeds[:1], extras, Path("."))[0]
    dataset = launcher.dataset_label(probe.args)
    out_dir = Path(args.output or Path("runs") / "ablations" / f"{file.stem}-{dataset}").resolve()
    trials = build_trials(variants, args.dataset, seeds, extras, out_dir)
    if not (args.dry_run or args.report):
        launcher.check_trials_can_run(trials, slots)
    command = launcher.batch_command("scrcl.experiments.ablate", argv)
    print(f"ablations {file} on {dataset}: {len(variants)} variants × {len(seeds)} seeds in {out_dir}")
    outcome = launcher.run_trials(trials, out_dir, slots, group=out_dir.name, dry_run=args.dry_run, report_only=args.report,
                                  keep_checkpoints=args.keep_checkpoints)
    if args.dry_run:
        return 0
    if not args.report:
        launcher.report(outcome)
    rows = results_rows(variants, trials)
    text = write_results(rows, out_dir, dataset=dataset, seeds=seeds, file=file, command=command, outcome=outcome,
                         conditions=launcher.conditions(trials))
    print(text, end="")
    print(f"written: {out_dir / 'ablation.md'}, {out_dir / 'ablation.csv'}")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(launcher.entry_point(main))
