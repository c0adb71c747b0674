"""Keep finished runs' small result files in the repository, so tables outlive the machine.

``runs/`` is ignored by git: the run directories behind RESULTS.md, SPATIAL.md and the ablation and
sweep tables (checkpoints, result.h5ad, PNGs) stay on the machine that ran them. A table that takes
several sessions to fill, or that someone wants to re-render or extend elsewhere, needs the finished
runs back. This script copies only the small text files a table is rendered from:

- in a run directory: ``config.yaml`` (the settings), ``metrics.json`` (the final-epoch and oracle
  scores, seconds, memory), ``history.csv`` (the scores at every evaluation);
- beside run directories: ``baselines_seed<s>.json`` (the table scripts' baseline cache).

    python benchmarks/records.py save                 # runs/ -> benchmarks/results/records/
    python benchmarks/records.py restore              # benchmarks/results/records/ -> runs/
    python benchmarks/records.py save --only ablations/components-pbmc10x

A restored run directory holds ``config.yaml`` and ``metrics.json``, which is what the launchers
(``scrcl.experiments.ablate``, ``scrcl.experiments.sweep``) and ``paper_table.py`` / ``spatial_table.py`` read to count a
trial as finished with the same settings and to render its row; they run only what is missing.
Saved records name no path of the machine that ran them: the data directory is written as ``$SCRCL_DATA_DIR`` and
paths inside the repository relative to it (a run's ``output``, say); a saved file is compared in that form.
Nothing is overwritten: a file that exists on both sides with different contents stops the copy
with one line naming it (a run was redone with other results, or the settings changed), and a
run directory that holds an unfinished run (a checkpoint, no metrics.json) is not restored over.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from scrcl.atomic import atomic_path  # noqa: E402
from scrcl.errors import UserError, run_entry  # noqa: E402

RUN_FILES = ("config.yaml", "metrics.json", "history.csv")
BATCH_GLOBS = ("baselines_seed*.json",)


def record_files(root: Path, only: str | None = None) -> list[Path]:
    """The files under ``root`` that make a record, relative to ``root``, sorted.

    A run directory counts only when it is finished (it has both ``config.yaml`` and ``metrics.json``):
    an unfinished run's config would be half a record."""
    base = root / only if only else root
    if not base.is_dir():
        return []
    found = set()
    for metrics in base.rglob("metrics.json"):
        run_dir = metrics.parent
        if not (run_dir / "config.yaml").exists():
            continue
        found.update(run_dir / name for name in RUN_FILES if (run_dir / name).exists())
    for pattern in BATCH_GLOBS:
        found.update(base.rglob(pattern))
    return sorted(p.relative_to(root) for p in found if p.is_file())


def unfinished(run_dir: Path) -> bool:
    """True for a run directory that has content but no metrics.json (a run under way or cut off)."""
    return run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / "metrics.json").exists()


def portable(text: str, data_dir: Path, root: Path = ROOT) -> str:
    """A record's text without this machine's paths: the data directory as ``$SCRCL_DATA_DIR``, then the repository
    root dropped (its paths become relative). Resolved and given spellings both count."""
    for path, shown in ((data_dir, "$SCRCL_DATA_DIR"), (root, ".")):
        for spelling in sorted({str(path.resolve()), str(path.absolute())}, key=len, reverse=True):
            text = text.replace(spelling + "/", "" if shown == "." else shown + "/").replace(spelling, shown)
    return text


def copy_records(src: Path, dst: Path, only: str | None = None, *, restoring: bool, data_dir: Path | None = None) -> tuple[int, int]:
    """Copy the record files from ``src`` to ``dst``; returns (copied, already there).

    Saving (``restoring`` false) writes each file through :func:`portable`. Checks every file before copying any, so a
    clash leaves ``dst`` as it was."""
    from datamodules.loading import resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    files = record_files(src, only)
    todo = []
    same = 0

    def content(rel: Path) -> str:
        text = (src / rel).read_text()
        return text if restoring else portable(text, data_dir)

    for rel in files:
        target = dst / rel
        if target.exists():
            if target.read_text() == content(rel):
                same += 1
                continue
            raise UserError(f"{target} differs from {src / rel}; compare them, then move one away and run again")
        if restoring and rel.name in RUN_FILES and unfinished(target.parent):
            raise UserError(f"{target.parent} holds an unfinished run (no metrics.json); let it finish or remove it, "
                            "then restore")
        todo.append(rel)
    for rel in todo:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst / rel) as tmp:
            Path(tmp).write_text(content(rel))
    return len(todo), same


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("save", "restore"), help="save: runs -> records; restore: records -> runs")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="the run directories (default: runs/)")
    parser.add_argument("--records", type=Path, default=ROOT / "benchmarks" / "results" / "records",
                        help="the committed records (default: benchmarks/results/records/)")
    parser.add_argument("--only", help="a sub-folder of both, e.g. ablations/components-pbmc10x")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    src, dst = (args.runs, args.records) if args.action == "save" else (args.records, args.runs)
    if not src.is_dir():
        raise UserError(f"{src} does not exist; nothing to {args.action}")
    if args.only and (Path(args.only).is_absolute() or ".." in Path(args.only).parts):
        raise UserError(f"--only takes a folder relative to {src}, e.g. ablations/components-pbmc10x")
    copied, same = copy_records(src, dst, args.only, restoring=args.action == "restore")
    print(f"{args.action}: {copied} file(s) copied to {dst}, {same} already there")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
