"""Fetch registry data ahead of time: what is missing, how much it costs, and getting it.

``python -m datamodules.prefetch NAME_OR_PATH ...`` places every file that the named datasets (their first source
that can be obtained, as ``train.py --dataset`` would choose it) or registry paths need under the data directory,
by the same code path as a run: downloaded and checksum-verified, derived files rebuilt from their originals. Useful
on a login node before jobs on compute nodes without network; ``make data`` uses it for the test data.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from datamodules.derive import obtain
from datamodules.download import mirror_base
from datamodules.loading import _choose_source, resolve_data_dir
from datamodules.registry import DATA_DIR_HELP, REGISTRY, DataFile, get_file, get_spec
from scrcl.errors import CommandLineParser, UserError, run_entry


def wanted(names: list[str], root: Path) -> list[DataFile]:
    """The registry files that ``names`` (dataset names or registry paths) need, in order, without repeats."""
    files: dict[str, DataFile] = {}
    for name in names:
        if "/" in name:
            chosen = [get_file(name)]
        else:
            chosen = list(_choose_source(get_spec(name), root).files.values())
        for f in chosen:
            files.setdefault(f.path, f)
    return list(files.values())


def downloads(root: Path, files: list[DataFile]) -> list[DataFile]:
    """The files that must be downloaded to obtain ``files``: the missing ones, or a missing derived file's missing
    originals."""
    out: dict[str, DataFile] = {}
    for f in files:
        if (root / f.path).exists():
            continue
        for each in downloads(root, list(f.build.inputs.values())) if f.build is not None else [f]:
            out.setdefault(each.path, each)
    return list(out.values())


@dataclass
class Plan:
    root: Path
    missing: list[DataFile]  # of the files asked for
    to_download: list[DataFile]

    @property
    def megabytes(self) -> float:
        return sum(f.size or 0 for f in self.to_download) / 1e6

    @property
    def unknown_sizes(self) -> int:
        return sum(f.size is None for f in self.to_download)

    def summary(self) -> str:
        """One line: what will be fetched, from where, and how many MB."""
        size = f"{self.megabytes:.1f} MB"
        if self.unknown_sizes:
            size += f" + {self.unknown_sizes} of unknown size"
        built = sum(f.build is not None for f in self.missing)
        rebuilt = f", then rebuilding {built} derived files from their originals" if built else ""
        origin = f"the mirror {mirror_base()}" if mirror_base() else "their public sources"
        return f"fetching {len(self.to_download)} files ({size}) from {origin} into {self.root}{rebuilt}"


def plan(names: list[str], data_dir: str | os.PathLike | None = None) -> Plan:
    root = resolve_data_dir(data_dir)
    files = wanted(names, root)
    missing = [f for f in files if not (root / f.path).exists()]
    return Plan(root, missing, downloads(root, missing))


def read_list(path: str | os.PathLike) -> list[str]:
    """Names and paths from a file, one a line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise UserError(f"cannot read the list {path}: {err.strerror or err}") from None
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _originals(f: DataFile):
    if f.build is not None:
        for original in f.build.inputs.values():
            yield original
            yield from _originals(original)


def fetch_all(plan: Plan, *, progress: bool = True) -> dict[str, str]:
    """Obtain every missing file of ``plan``: the downloads first, each on its own (one failure does not stop the
    others), then the derived files from their originals. Returns path -> the one line saying why, for each public
    file that could not be downloaded and each derived file that could not be built from originals that are there:
    one line per missing source, never the same cause twice."""
    failed: dict[str, str] = {}
    for f in plan.to_download:
        try:
            obtain(plan.root, f, progress=progress)
        except UserError as err:
            failed[f.path] = str(err)
    for f in plan.missing:
        if f.path in failed or any(original.path in failed for original in _originals(f)):
            continue
        try:
            obtain(plan.root, f, progress=progress)
        except UserError as err:
            failed[f.path] = str(err)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = CommandLineParser(
        prog="python -m datamodules.prefetch", command="python -m datamodules.prefetch",
        description=__doc__.split("\n\n")[1].strip(),
    )
    parser.add_argument("names", nargs="*", help=f"dataset names or registry paths ({', '.join(sorted(REGISTRY))})")
    parser.add_argument("--list", dest="lists", action="append", default=[], metavar="FILE",
                        help="a file of names and paths, one a line (# comments); may be repeated")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--plan", action="store_true", help="say what would be fetched and how many MB; fetch nothing")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    names = [*args.names, *(name for path in args.lists for name in read_list(path))]
    if not names:
        raise UserError("name at least one dataset or registry path, or give --list FILE")
    todo = plan(names, args.data_dir)
    if not todo.missing:
        print(f"nothing to fetch: all {len(wanted(names, todo.root))} files are in {todo.root}", file=sys.stderr)
        return 0
    print(todo.summary(), file=sys.stderr)
    if args.plan:
        return 0
    failed = fetch_all(todo, progress=not args.no_progress)
    for line in failed.values():
        print(f"error: {line}", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
