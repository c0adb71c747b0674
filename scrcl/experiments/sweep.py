"""Run a W&B sweep file offline: ``python -m scrcl.experiments.sweep configs/sweeps/hvg.yaml --dataset pbmc68k --workers 2``.

The file is W&B's own sweep format (``wandb sweep FILE`` + ``wandb agent`` run it online, unchanged).
Offline, ``method: grid`` expands to the full product of the parameters' ``values``; ``method: random``
draws ``--count`` (else the file's ``run_cap``) settings with ``--sample-seed``. Each setting (× each of
``--seeds``) is one train.py trial in ``OUT/<name>/`` (default ``OUT = runs/sweeps/<file>-<dataset>``),
run by :mod:`scrcl.experiments.launcher`: one per GPU or N CPU workers, finished trials skipped. Then
``OUT/sweep.md`` and ``OUT/sweep.csv`` (ACC/NMI/ARI/F1 of each run's reported evaluation: the final epoch, or the one
the config's label-free ``select`` chose; mean ± std over seeds) and
``OUT/sweep.png`` (a line plot for one swept parameter, a heatmap of the sweep's metric for two).

Labels score each setting: a sweep is a sensitivity analysis, not a way to choose the reported setting.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from pathlib import Path

import numpy as np

from scrcl.experiments import launcher
from scrcl.experiments.tables import shown_path
from scrcl.train.config import parse_seeds
from scrcl.errors import UserError, whole_number

DEFAULT_SEEDS = "5,15,25"  # every setting runs on three seeds unless --seeds says otherwise

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
MACROS = {"${env}", "${interpreter}", "${program}", "${args}"}
TOP_KEYS = {"program", "command", "method", "metric", "parameters", "name", "description", "project", "entity",
            "run_cap", "early_terminate"}
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "log_uniform_values", "log_uniform",
                 "q_uniform", "q_log_uniform_values", "normal")


# -- the file -------------------------------------------------------------------------------------
def load_sweep(path: str | Path) -> dict:
    """Read and check a W&B sweep file: the keys, the method, the program, the command, the metric."""
    from scrcl.train.config import read_yaml

    path = Path(path)
    sweep = read_yaml(path, "sweep file", " (the sweeps are in configs/sweeps/)")
    if not isinstance(sweep, dict):
        raise UserError(f"sweep file {path} must hold a mapping with method, metric and parameters")
    unknown = sorted(set(sweep) - TOP_KEYS)
    if unknown:
        raise UserError(f"sweep file {path}: unknown key(s) {', '.join(unknown)}; a W&B sweep has {', '.join(sorted(TOP_KEYS))}")
    if sweep.get("method") not in ("grid", "random"):
        raise UserError(f"sweep file {path}: method must be grid or random offline (got {sweep.get('method')!r}; "
                        "bayes needs the W&B server: wandb sweep + wandb agent)")
    program = str(sweep.get("program", "train.py"))
    if Path(program).name != "train.py":
        raise UserError(f"sweep file {path}: program must be train.py, got '{program}'")
    if not isinstance(sweep.get("parameters"), dict) or not sweep["parameters"]:
        raise UserError(f"sweep file {path}: 'parameters' must map parameter names to their values")
    for name, spec in sweep["parameters"].items():
        check_parameter(path, str(name), spec)
    cap = sweep.get("run_cap")  # W&B: 0 or absent = no cap
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not float(cap).is_integer() or cap < 0):
        raise UserError(f"sweep file {path}: run_cap must be a whole number of runs (0: no cap), got {cap!r}")
    command_args(sweep, path)
    metric_key(sweep, path)
    return sweep


def check_parameter(path: Path, name: str, spec) -> None:
    """A parameter is a train.py flag (W&B passes ``--name=value``) with a value, values or a distribution."""
    if not isinstance(spec, dict):
        raise UserError(f"sweep file {path}: parameter '{name}' must be a mapping like {{values: [1, 2]}}")
    if "parameters" in spec:
        raise UserError(f"sweep file {path}: nested parameters ('{name}') are not supported; train.py flags are flat")
    if f"--{name}" in launcher.RESERVED_FLAGS or name == "seeds":
        raise UserError(f"sweep file {path}: '{name}' is set by the launcher; sweep 'seed' or pass --seeds instead")
    action = launcher.flag_action(f"--{name}")
    if action is None or action.nargs == 0:  # switches like --no-refine take no value; W&B passes --name=value
        hint = f"; did you mean '{name.replace('_', '-')}'?" if launcher.flag_action(f"--{name.replace('_', '-')}") else ""
        raise UserError(f"sweep file {path}: unknown parameter '{name}': parameters are train.py flags without "
                        f"the dashes (W&B passes --{name}=VALUE){hint}")
    kind = distribution(spec)
    if kind not in DISTRIBUTIONS:
        raise UserError(f"sweep file {path}: parameter '{name}' has distribution '{kind}', which the offline "
                        f"launcher does not draw from ({', '.join(DISTRIBUTIONS)}); run it with wandb agent")
    if kind == "categorical" and (not isinstance(spec.get("values"), list) or not spec["values"]):
        raise UserError(f"sweep file {path}: parameter '{name}' needs a non-empty list of values")
    if kind == "categorical" and "probabilities" in spec:
        p = spec["probabilities"]
        numbers = isinstance(p, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in p)
        if not numbers or len(p) != len(spec["values"]) or not math.isclose(sum(p), 1.0, abs_tol=1e-6):
            raise UserError(f"sweep file {path}: parameter '{name}': probabilities must be {len(spec['values'])} numbers "
                            f"≥ 0 (one per value) that sum to 1, got {p!r}")
    if kind not in ("constant", "categorical") and not all(k in spec for k in _bounds(kind)):
        raise UserError(f"sweep file {path}: parameter '{name}' ({kind}) needs {' and '.join(_bounds(kind))}")
    if kind not in ("constant", "categorical"):
        bounds = {}
        for key in _bounds(kind):
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"sweep file {path}: parameter '{name}' ({kind}): {key} must be a finite number, got {value!r}")
            bounds[key] = value
        if "min" in bounds and bounds["min"] > bounds["max"]:
            raise UserError(f"sweep file {path}: parameter '{name}' ({kind}): min {bounds['min']} is above max {bounds['max']}")
        if kind == "normal" and bounds["sigma"] < 0 or kind.startswith("q_") and bounds["q"] <= 0:
            raise UserError(f"sweep file {path}: parameter '{name}' ({kind}): {'sigma must be ≥ 0' if kind == 'normal' else 'q must be above 0'}")


def _bounds(kind: str) -> tuple[str, ...]:
    return {"normal": ("mu", "sigma")}.get(kind, ("min", "max")) + (("q",) if kind.startswith("q_") else ())


def distribution(spec: dict) -> str:
    """The parameter's distribution as W&B infers it: value -> constant, values -> categorical,
    integer min/max -> int_uniform, other min/max -> uniform."""
    if "distribution" in spec:
        return str(spec["distribution"])
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if "min" in spec and "max" in spec:
        both_int = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
        return "int_uniform" if both_int else "uniform"
    return "unspecified (give value, values, or min and max)"


def command_args(sweep: dict, path: Path | str = "sweep file") -> list:
    """The train.py arguments of the file's ``command``: what follows ``${program}``, with ``${args}`` kept
    as a marker (what comes before it, ``${env} ${interpreter}``, is replaced by this Python)."""
    command = sweep.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or "${program}" not in command or "${args}" not in command:
        raise UserError(f"{path}: command must be a list with ${{program}} and ${{args}}, e.g. {DEFAULT_COMMAND}")
    after = command[command.index("${program}") + 1:]
    for item in after:
        if str(item).startswith("${") and item not in MACROS:
            raise UserError(f"{path}: command macro {item} is not supported offline (only {', '.join(sorted(MACROS))})")
    return [str(item) for item in after]


def metric_key(sweep: dict, path: Path | str = "sweep file") -> str:
    """The metrics.json key of the sweep's metric (``val/ari`` as logged to W&B -> ``ari``); default ari."""
    metric = sweep.get("metric") or {"name": "val/ari"}
    name = str(metric.get("name", "")) if isinstance(metric, dict) else ""
    key = name.split("/")[-1]
    if key not in launcher.SCORES:
        raise UserError(f"{path}: metric name must be one of val/acc, val/nmi, val/ari, val/f1, got '{name}'")
    return key


# -- expansion ------------------------------------------------------------------------------------
def expand(sweep: dict, count: int | None = None, seed: int = 0) -> list[dict]:
    """Every setting of the sweep, in order: grid -> the full product of the values (first ``run_cap`` if
    the file sets one); random -> ``count`` (else ``run_cap``) draws with a seeded generator."""
    params = sweep["parameters"]
    if sweep["method"] == "grid":
        if count is not None:
            raise UserError("--count is for method random; a grid runs every combination")
        axes = []
        for name, spec in params.items():
            kind = distribution(spec)
            if kind not in ("constant", "categorical"):
                raise UserError(f"method grid needs value or values for '{name}', not a {kind} distribution; use method random")
            axes.append([spec["value"]] if kind == "constant" else list(spec["values"]))
        settings = [dict(zip(params, combo)) for combo in itertools.product(*axes)]
        cap = sweep.get("run_cap")
        return settings[: int(cap)] if cap else settings
    n = count if count is not None else sweep.get("run_cap")
    if not n or int(n) < 1:
        raise UserError("method random needs a number of settings: --count N, or run_cap in the file")
    rng = np.random.default_rng(seed)
    return [{name: draw(name, spec, rng) for name, spec in params.items()} for _ in range(int(n))]


def draw(name: str, spec: dict, rng: np.random.Generator):
    """One value of a parameter; continuous draws are rounded to 6 significant digits (they name directories)."""
    kind = distribution(spec)
    if kind == "constant":
        return spec["value"]
    if kind == "categorical":
        p = spec.get("probabilities")  # checked to sum to 1 within 1e-6 (load_sweep); numpy wants it within ~1e-8
        p = None if p is None else np.asarray(p, dtype=float) / float(np.sum(p))
        return spec["values"][int(rng.choice(len(spec["values"]), p=p))]
    if kind == "int_uniform":
        return int(rng.integers(int(spec["min"]), int(spec["max"]), endpoint=True))
    if kind == "normal":
        value = rng.normal(float(spec["mu"]), float(spec["sigma"]))
    else:
        lo, hi = float(spec["min"]), float(spec["max"])
        if kind in ("log_uniform_values", "q_log_uniform_values"):
            if lo <= 0 or hi <= 0:
                raise UserError(f"parameter '{name}' ({kind}) needs min and max above 0")
            value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        elif kind == "log_uniform":  # W&B: min and max are natural-log exponents
            value = math.exp(rng.uniform(lo, hi))
        else:
            value = rng.uniform(lo, hi)
        if kind.startswith("q_"):
            q = float(spec["q"])
            value = round(value / q) * q
            return int(value) if float(q).is_integer() else float(f"{value:.6g}")
    return float(f"{value:.6g}")


# -- trials ---------------------------------------------------------------------------------------
def swept(settings: list[dict]) -> list[str]:
    """Parameters that take more than one value across the settings (seed excluded: it is a replicate)."""
    if not settings:
        return []
    return [k for k in settings[0] if k != "seed" and len({repr(s[k]) for s in settings}) > 1]


def value_text(value) -> str:
    """A value as it appears in a directory name: 0.01, 100, 1e-05, knn."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def trial_name(setting: dict, names: list[str]) -> str:
    parts = [f"{k}={value_text(setting[k])}" for k in names]
    if "seed" in setting:
        parts.append(f"seed={setting['seed']}")
    return "_".join(parts) or "base"


def build_trials(sweep: dict, settings: list[dict], extras: list[str], out_dir: Path) -> list[launcher.Trial]:
    """One Trial per setting: the file's command with ``${args}`` -> ``--name=value`` (as a W&B agent
    writes them), then the extra flags, then the trial's run directory."""
    template = command_args(sweep)
    names = swept(settings)
    trials = []
    for setting in settings:
        flags = [f"--{k}={v}" for k, v in setting.items()]
        args = []
        for item in template:
            args += flags if item == "${args}" else [item]
        name = trial_name(setting, names)
        run_dir = out_dir / name
        args += [*extras, f"--output={out_dir}", f"--run-name={name}"]
        shown = {k: setting[k] for k in names + (["seed"] if "seed" in setting else [])}
        trials.append(launcher.Trial(name=name, params=shown, args=tuple(args), run_dir=run_dir))
    return trials


def with_dataset_and_seeds(sweep: dict, settings: list[dict], dataset: str | None, seeds: list[int] | None,
                           extra_keys: dict) -> list[dict]:
    """``--dataset`` replaces the file's dataset; ``--data`` (a file) drops it; ``--seeds`` repeats each setting."""
    if "seed" in sweep["parameters"] and seeds:
        raise UserError("the sweep file sweeps 'seed' already; leave out --seeds")
    clash = sorted(set(extra_keys) & {launcher.flag_action(f"--{k}").dest for k in sweep["parameters"]} - {"dataset"})
    if clash:
        raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in clash)} is a parameter of the sweep file; "
                        "leave it out of the extra flags (or edit the file)")
    out = []
    for setting in settings:
        setting = dict(setting)
        if dataset or "data" in extra_keys:
            setting.pop("dataset", None)
        base = {"dataset": dataset, **setting} if dataset else setting
        out += [{**base, "seed": s} for s in seeds] if seeds else [base]
    return out


# -- table and figure -----------------------------------------------------------------------------
def group_rows(trials: list[launcher.Trial]) -> list[dict]:
    """One row per setting (seeds pooled), in the sweep's order: values, finished runs, genes, scores."""
    groups: dict = {}
    for trial in trials:
        key = tuple((k, repr(v)) for k, v in trial.params.items() if k != "seed")
        row = groups.setdefault(key, {"values": {k: v for k, v in trial.params.items() if k != "seed"}, "metrics": [], "trials": 0})
        row["trials"] += 1
        metrics = launcher.read_metrics(trial)
        if metrics is not None:
            row["metrics"].append(metrics)
    for row in groups.values():
        row["scores"] = launcher.score_summary(row["metrics"])
        row["genes"] = sorted({m["n_genes"] for m in row["metrics"] if "n_genes" in m})
    return list(groups.values())


def render_markdown(title: str, rows: list[dict], names: list[str], metric: str, notes: list[str]) -> str:
    """One row per setting; the last column is its metric − the best setting's, paired by seed, with its 95% interval:
    the settings 'within noise' of the best cannot be told from it with these seeds."""
    head = [*names, "runs", "genes", *[k.upper() for k in launcher.SCORES], f"{metric.upper()} − best, same seeds"]
    lines = [f"# {title}", "", *[f"- {n}" for n in notes], "", launcher.markdown_row(head), "|" + "---|" * len(head)]
    scored = [r for r in rows if metric in r["scores"]]
    best = max(scored, key=lambda r: r["scores"][metric][0]) if scored else None
    for row in rows:
        cells = [value_text(row["values"][k]) for k in names]
        cells += [f"{len(row['metrics'])}/{row['trials']}", ", ".join(map(str, row["genes"])) or "–"]
        cells += [(f"**{launcher.mean_std_text(row['scores'], k)}**" if k == metric else launcher.mean_std_text(row["scores"], k))
                  for k in launcher.SCORES]
        lines.append(launcher.markdown_row(cells + [_versus(row, best, metric)]))
    return "\n".join(lines) + "\n"


def _versus(row: dict, best: dict | None, metric: str) -> str:
    if best is None or row is best:
        return "best" if row is best else "–"
    return launcher.paired_by_seed(row["metrics"], best["metrics"], metric)


def csv_rows(rows: list[dict], names: list[str]) -> tuple[list[str], list[list]]:
    header = [*names, "runs", "trials", "genes", *[f"{k}_{s}" for k in launcher.SCORES for s in ("mean", "std")]]
    out = []
    for row in rows:
        scores = [row["scores"].get(k, (None, None))[i] for k in launcher.SCORES for i in (0, 1)]
        out.append([*[row["values"][k] for k in names], len(row["metrics"]), row["trials"],
                    " ".join(map(str, row["genes"])), *["" if v is None else f"{v:.6f}" for v in scores]])
    return header, out


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot(rows: list[dict], names: list[str], metric: str, title: str, path: Path) -> Path | None:
    """Line plot of the four scores over one swept parameter (Fig. 4, 7); heatmap of the metric over two
    (Fig. 6; a scatter when the settings do not form a grid). None for other numbers of parameters."""
    rows = [r for r in rows if r["scores"]]
    if not rows or len(names) not in (1, 2):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scrcl.eval.plots import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.6) if len(names) == 1 else (6.4, 5.4))
    if len(names) == 1:
        _line_plot(ax, rows, names[0])
    else:
        _heatmap(fig, ax, rows, names, metric)
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    plt.close(fig)
    return path


def _line_plot(ax, rows: list[dict], name: str) -> None:
    values = [r["values"][name] for r in rows]
    numeric = _numeric(values)
    order = sorted(range(len(rows)), key=lambda i: values[i]) if numeric else list(range(len(rows)))
    x = [values[i] for i in order] if numeric else list(range(len(rows)))
    for key in launcher.SCORES:
        mean = [rows[i]["scores"][key][0] for i in order]
        std = [rows[i]["scores"][key][1] for i in order]
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=key.upper())
    if numeric and min(x) > 0 and max(x) / min(x) >= 100:
        ax.set_xscale("log")
    if numeric:
        ax.set_xticks(x)
        ax.set_xticklabels([value_text(v) for v in x])
    else:
        ax.set_xticks(x)
        ax.set_xticklabels([value_text(values[i]) for i in order])
    ax.set_xlabel(name)
    ax.set_ylabel("score (reported evaluation)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)


def _heatmap(fig, ax, rows: list[dict], names: list[str], metric: str) -> None:
    first, second = names
    ys = sorted({r["values"][first] for r in rows}, key=lambda v: (not _numeric([v]), v))
    xs = sorted({r["values"][second] for r in rows}, key=lambda v: (not _numeric([v]), v))
    if len(ys) * len(xs) > 4 * len(rows):  # random draws, not a grid: a scatter coloured by the metric
        points = ax.scatter([r["values"][second] for r in rows], [r["values"][first] for r in rows],
                            c=[r["scores"][metric][0] for r in rows], cmap="viridis", s=60)
        fig.colorbar(points, ax=ax, label=f"{metric.upper()} (reported evaluation)")
        ax.set_xlabel(second)
        ax.set_ylabel(first)
        return
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        grid[ys.index(r["values"][first]), xs.index(r["values"][second])] = r["scores"][metric][0]
    image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
    for i in range(len(ys)):
        for j in range(len(xs)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] < np.nanmean(grid) else "black")
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels([value_text(v) for v in xs])
    ax.set_yticks(range(len(ys)))
    ax.set_yticklabels([value_text(v) for v in ys])
    ax.set_xlabel(second)
    ax.set_ylabel(first)
    fig.colorbar(image, ax=ax, label=f"{metric.upper()} (reported evaluation, mean over seeds)")


def write_results(trials: list[launcher.Trial], sweep: dict, *, file: Path, dataset: str, out_dir: Path,
                  command: str, outcome: launcher.Outcome) -> tuple[str, Path | None]:
    """sweep.md, sweep.csv and sweep.png in ``out_dir`` (each written atomically)."""
    from scrcl.atomic import atomic_write_text

    names = [k for k in swept([dict(t.params) for t in trials])]
    metric = metric_key(sweep, file)
    rows = group_rows(trials)
    seeds = sorted({t.params["seed"] for t in trials if "seed" in t.params})
    finished = sum(len(r["metrics"]) for r in rows)
    title = f"Sweep {file.stem} on {dataset}"
    notes = [
        f"File: `{shown_path(file)}` (method {sweep['method']}); command: `{command}`",
        f"Trials: {len(trials)} ({len(rows)} settings × {max(len(seeds), 1)} seed(s){': ' + ', '.join(map(str, seeds)) if seeds else ''}); "
        f"finished: {finished}; failed this time: {len(outcome.failed)}",
        f"Run directories: `{shown_path(out_dir)}/<trial>/`; W&B group `{out_dir.name}`",
        launcher.conditions(trials),
        "Scores of each run's reported evaluation (the final epoch, or the one its config's label-free `select` chose; "
        "never the oracle_* keys), mean ± population std over seeds [95% interval of the "
        f"mean, Student's t]; the sweep's metric ({metric.upper()}) in bold; its last column: each setting minus the "
        "best one on the same seeds, with the interval of the paired differences ('within noise' when it contains 0). `genes`: the number of genes the model took (h is capped at the data's genes).",
        "Labels score every setting: this is a sensitivity analysis, not a way to choose the reported setting.",
    ]
    text = render_markdown(title, rows, names, metric, notes)
    atomic_write_text(out_dir / "sweep.md", text)
    header, body = csv_rows(rows, names)
    launcher.write_csv(out_dir / "sweep.csv", header, body)
    spread = f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    figure = plot(rows, names, metric, f"{title}: reported evaluation, {spread}", out_dir / "sweep.png")
    return text, figure


# -- command line ---------------------------------------------------------------------------------
def build_parser() -> launcher.LauncherParser:
    parser = launcher.LauncherParser(prog="scrcl.experiments.sweep", allow_abbrev=False, description=__doc__.split("\n")[0],
                                     epilog="Any other flag (e.g. --epochs 5 --hidden-dim 64) is passed to every trial's train.py.")
    parser.add_argument("file", help="W&B sweep YAML, e.g. configs/sweeps/hvg.yaml")
    launcher.add_launch_arguments(parser)
    parser.set_defaults(seeds=DEFAULT_SEEDS)  # a difference between settings is read against the seeds' spread
    parser.add_argument("--count", type=whole_number(1), default=None, help="method random: number of settings (default: run_cap)")
    parser.add_argument("--sample-seed", type=whole_number(0), default=0, help="method random: seed of the draws")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extras = build_parser().parse_known_args(argv)
    file = Path(args.file)
    if not file.exists() and any(e.endswith((".yaml", ".yml")) for e in extras):
        raise UserError("the sweep FILE comes first: python -m scrcl.experiments.sweep FILE [options] [train.py flags]")
    sweep = load_sweep(file)
    slots = launcher.make_slots(args.gpus, args.workers)
    extra_keys = launcher.check_extra_args(extras)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    settings = with_dataset_and_seeds(sweep, expand(sweep, args.count, args.sample_seed), args.dataset, seeds, extra_keys)
    probe = build_trials(sweep, settings[:1], extras, Path("."))[0]
    dataset = launcher.dataset_label(probe.args)
    out_dir = Path(args.output or Path("runs") / "sweeps" / f"{file.stem}-{dataset}").resolve()
    trials = build_trials(sweep, settings, extras, out_dir)
    if not (args.dry_run or args.report):
        launcher.check_trials_can_run(trials, slots)
    command = launcher.batch_command("scrcl.experiments.sweep", argv)
    print(f"sweep {file} on {dataset}: {len(trials)} trials in {out_dir}")
    outcome = launcher.run_trials(trials, out_dir, slots, group=out_dir.name, project=sweep.get("project"),
                                  dry_run=args.dry_run, report_only=args.report, keep_checkpoints=args.keep_checkpoints)
    if args.dry_run:
        return 0
    if not args.report:
        launcher.report(outcome)
    text, figure = write_results(trials, sweep, file=file, dataset=dataset, out_dir=out_dir, command=command, outcome=outcome)
    print(text, end="")
    print(f"written: {out_dir / 'sweep.md'}, {out_dir / 'sweep.csv'}" + (f", {figure}" if figure else " (no figure: "
          f"{len(swept([dict(t.params) for t in trials]))} swept parameters)"))
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(launcher.entry_point(main))
