"""Shared fixtures: where the real data lives, and a private cache directory for the whole session.

The real data directory is ``$SCRCL_DATA_DIR`` when set (CI sets it), else the project's own ``./data`` (the
repository root's ``data/``, ignored by git). Before any test runs, everything ``tests/real_data.txt`` names that
is missing there is fetched by the project's own downloader, as ``train.py --dataset`` would (checksum-verified,
derived files rebuilt from their public originals; ``SCRCL_DATA_MIRROR`` sends the downloads to a mirror), after
one line saying what and how many MB. A test needs real data when it uses the ``data_dir`` fixture. When something
cannot be fetched (no network, no mirror), those tests do not run: the tests that need no real data still do, and
the run fails with one line saying what to do and one per missing source. Never a skip, in CI or elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT / "data"
NEEDS = ROOT / "tests" / "real_data.txt"
WHAT_TO_DO = ("set SCRCL_DATA_DIR to a directory that has the files, run `make data` where there is network, "
              "or set SCRCL_DATA_MIRROR to a mirror of the public files")


def real_data_dir() -> Path:
    env = os.environ.get("SCRCL_DATA_DIR")
    return Path(env).expanduser().resolve() if env else DEFAULT_DATA_DIR


def needs_real_data(item: pytest.Item) -> bool:
    return "data_dir" in getattr(item, "fixturenames", ())


def fetch_real_data(config: pytest.Config, root: Path) -> list[str]:
    """Fetch what is missing from ``root``; the one-line reasons for what could not be obtained."""
    if os.environ.get("SCRCL_DATA_DIR") and not root.is_dir():
        return [f"the real data directory SCRCL_DATA_DIR={root} does not exist"]
    from datamodules.download import PLACE_HINT
    from datamodules.prefetch import fetch_all, plan, read_list
    from scrcl.errors import UserError

    try:
        todo = plan(read_list(NEEDS), root)
    except UserError as err:
        return [str(err)]
    if not todo.missing:
        return []
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    say = reporter.write_line if reporter is not None else print
    say(f"real data for the tests: {todo.summary()}")
    failed = fetch_all(todo, progress=False)
    if not failed:
        say(f"real data for the tests: {len(todo.missing)} files placed in {root}")
    return [line.removesuffix(f", {PLACE_HINT}") for line in failed.values()]  # WHAT_TO_DO says it once


class MissingRealData(pytest.Item):
    """Stands for the tests that need real data when some of it could not be obtained: one failure, one line per
    missing source."""

    def __init__(self, *, problems: list[str], n_tests: int, **kwargs):
        super().__init__(**kwargs)
        self.problems, self.n_tests = problems, n_tests

    def runtest(self):
        raise MissingRealDataError()

    def repr_failure(self, excinfo):
        return "\n".join([f"{self.n_tests} tests that read real data did not run: {WHAT_TO_DO}", *self.problems])

    def reportinfo(self):
        return self.path, None, "real data"


class MissingRealDataError(Exception):
    pass


# With pytest-xdist (`make test` runs two workers) the controller, which collects nothing, fetches before the workers
# start and hands each worker its list of problems: one download of each file, one announcement where the terminal
# shows it, and no two processes making and removing the same folders.
FETCHED = pytest.StashKey[list]()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if config.pluginmanager.hasplugin("dsession") and not config.option.collectonly:  # the xdist controller
        config.stash[FETCHED] = fetch_real_data(config, real_data_dir())


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    node.workerinput["scrcl_real_data_problems"] = node.config.stash.get(FETCHED, [])


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [item for item in items if needs_real_data(item)]
    if not users or config.option.collectonly:
        return
    worker = getattr(config, "workerinput", None)
    problems = worker["scrcl_real_data_problems"] if worker is not None else fetch_real_data(config, real_data_dir())
    if not problems:
        return
    config.hook.pytest_deselected(items=users)
    items[:] = [item for item in items if not needs_real_data(item)]
    items.append(MissingRealData.from_parent(session, name="real data", nodeid="real data (tests/real_data.txt)",
                                             problems=problems, n_tests=len(users)))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data directory, with everything tests/real_data.txt names (fetched before the tests ran)."""
    return real_data_dir()


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """No test writes to ~/.cache (a per-session cache directory), none talks to W&B, plots need no
    display; subprocesses inherit all three. The data mirror has done its work before the tests (filling the data
    directory), so no test's own download goes to it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRCL_CACHE_DIR", str(tmp_path_factory.mktemp("scrcl-cache")))
        mp.setenv("WANDB_MODE", "disabled")
        mp.setenv("MPLBACKEND", "Agg")
        mp.delenv("SCRCL_DATA_MIRROR", raising=False)
        yield


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test starts from the session's environment: what a run made in the test's own process sets in
    ``os.environ`` reaches neither the next test on this worker nor the subprocesses that test starts."""
    with mock.patch.dict(os.environ):
        yield
