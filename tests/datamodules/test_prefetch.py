"""python -m datamodules.prefetch (``make data``): what is missing, how many MB, and one line per source that fails.

Nothing here reaches the network: downloads go to a closed port on 127.0.0.1 (``SCRCL_DATA_MIRROR``), or none is
attempted (``--plan``, a complete data directory).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from datamodules import prefetch
from datamodules.prefetch import fetch_all, plan, read_list
from datamodules.registry import get_file, get_spec
from scrcl.errors import UserError, run_entry

ROOT = Path(__file__).resolve().parents[2]
NEEDS = ROOT / "tests/real_data.txt"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_plan_of_an_empty_directory_counts_the_downloads_of_the_originals(tmp_path):
    todo = plan(["pollen", "pbmc10x", "pollen"], tmp_path)
    rdata = get_spec("pollen").sources[0].files["data"].build.inputs["data"]
    h5 = get_spec("pbmc10x").sources[0].files["data"]
    assert [f.path for f in todo.missing] == ["derived/Pollen_SIMLR.h5ad", h5.path]
    assert [f.path for f in todo.to_download] == [rdata.path, h5.path]  # the derived file is built, not downloaded
    assert todo.megabytes == pytest.approx((rdata.size + h5.size) / 1e6)
    assert todo.summary() == (f"fetching 2 files ({todo.megabytes:.1f} MB) from their public sources into {tmp_path}, "
                              "then rebuilding 1 derived files from their originals")


def test_every_file_the_tests_read_has_a_size_and_a_checksum(tmp_path):
    todo = plan(read_list(NEEDS), tmp_path)
    assert todo.to_download and todo.unknown_sizes == 0
    assert all(f.sha256 and f.urls for f in todo.to_download)
    assert 20 < todo.megabytes < 40


def test_nothing_is_missing_from_the_data_directory(data_dir, capsys):
    assert plan(read_list(NEEDS), data_dir).missing == []
    assert run_entry(prefetch.main, ["--list", str(NEEDS), "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().err.startswith("nothing to fetch: all ")


def test_plan_flag_says_what_and_how_much_and_fetches_nothing(tmp_path, capsys):
    assert run_entry(prefetch.main, ["pollen", "--data-dir", str(tmp_path), "--plan"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("fetching 1 files (3.9 MB) from their public sources") and err.count("\n") == 1
    assert files_under(tmp_path) == []


def test_each_source_that_fails_is_one_line_and_a_derived_file_adds_none(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCRCL_DATA_MIRROR", f"http://127.0.0.1:{closed_port()}")
    todo = plan(["pollen", "dlpfc_151673"], tmp_path)
    failed = fetch_all(todo, progress=False)
    assert sorted(failed) == sorted(f.path for f in todo.to_download)  # four originals; the two derived files add none
    assert all("\n" not in line and "SCRCL_DATA_MIRROR" in line for line in failed.values())
    assert run_entry(prefetch.main, ["pollen", "dlpfc_151673", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("fetching 4 files") and len(err) == 5 and all(line.startswith("error: ") for line in err[1:])
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("args, fragment", [
    (["pbmc10"], "unknown dataset 'pbmc10'"),
    (["derived/Pollen.h5ad"], "did you mean derived/Pollen_SIMLR.h5ad"),
    (["--list", "/nonexistent/list.txt"], "cannot read the list /nonexistent/list.txt"),
    ([], "--list FILE"),
])
def test_mistakes_are_one_line(tmp_path, capsys, args, fragment):
    assert run_entry(prefetch.main, [*args, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err


def test_registry_paths_are_the_same_file_wherever_they_appear():
    positions = get_spec("dlpfc_151673").sources[1].files["positions"]
    assert get_file(positions.path) == positions
    assert get_spec("dlpfc_151673").sources[0].files["data"].build.inputs["positions"] == positions
    with pytest.raises(UserError):
        get_file("nowhere/at/all.h5")
