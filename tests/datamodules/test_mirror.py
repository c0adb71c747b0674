"""SCRCL_DATA_MIRROR: an empty data directory filled from a mirror of the public sources, served on 127.0.0.1.

The mirror is laid out as the setting expects (``<mirror>/<host>/<path>`` for ``https://<host>/<path>``), made of the
data directory's own copies of the public files; nothing but 127.0.0.1 is contacted. What the fresh directory
yields is compared with what the data directory yields.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from datamodules.download import fetch, mirrored
from datamodules.loading import load_dataset
from datamodules.prefetch import plan, read_list
from scrcl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        with self.server.lock:
            self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A static mirror directory served over HTTP; ``SCRCL_DATA_MIRROR`` points at it."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # a proxy would route 127.0.0.1 elsewhere
    tree = tmp_path / "mirror"
    tree.mkdir()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(tree)))
    srv.daemon_threads = True
    srv.requests, srv.lock, srv.tree = [], threading.Lock(), tree
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/public"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("SCRCL_DATA_MIRROR", srv.base + "/")  # a trailing slash is allowed
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def publish(tree: Path, data_dir: Path, files) -> list[str]:
    """Place the data directory's copy of each public file where the mirror serves it; the request paths."""
    paths = []
    for f in files:
        url = urllib.parse.urlsplit(f.urls[0])
        target = tree / "public" / url.netloc / url.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(data_dir / f.path, target)
        paths.append(f"/public/{url.netloc}{url.path}")
    return paths


def files_under(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _, names in os.walk(root) for f in names)


def assert_same_data(fresh, shared) -> None:
    a, b = fresh.adata, shared.adata
    assert a.shape == b.shape
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    pd.testing.assert_frame_equal(a.obs, b.obs)  # the labels (and, for a slice, its grid positions)
    assert (sp.csr_matrix(a.X) != sp.csr_matrix(b.X)).nnz == 0
    assert set(a.obsm) == set(b.obsm)
    for key in b.obsm:
        np.testing.assert_array_equal(a.obsm[key], b.obsm[key])
    assert {k: v for k, v in fresh.provenance.items() if k != "files"} == {k: v for k, v in shared.provenance.items() if k != "files"}


def test_mirrored_urls(monkeypatch):
    url = "https://raw.githubusercontent.com/owner/repo/0123/data/x.rda"
    monkeypatch.delenv("SCRCL_DATA_MIRROR", raising=False)
    assert mirrored(url) == url  # no mirror: the public URL
    monkeypatch.setenv("SCRCL_DATA_MIRROR", "https://mirror.example.org/scrcl//")
    assert mirrored(url) == "https://mirror.example.org/scrcl/raw.githubusercontent.com/owner/repo/0123/data/x.rda"
    assert mirrored("https://zenodo.org/records/1/files/a.h5?download=1") == (
        "https://mirror.example.org/scrcl/zenodo.org/records/1/files/a.h5?download=1")
    monkeypatch.setenv("SCRCL_DATA_MIRROR", "  ")
    assert mirrored(url) == url  # empty: unset


def test_a_directory_mirror_through_file_urls(tmp_path, monkeypatch):
    payload = os.urandom(50_000)
    (tmp_path / "tree/example.org/a").mkdir(parents=True)
    (tmp_path / "tree/example.org/a/b.bin").write_bytes(payload)
    monkeypatch.setenv("SCRCL_DATA_MIRROR", (tmp_path / "tree").as_uri())
    dest = tmp_path / "data/b.bin"
    fetch(dest, ["https://example.org/a/b.bin"], hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload


def test_an_empty_data_directory_is_filled_through_the_mirror(tmp_path, data_dir, mirror, built):
    """pollen and DLPFC 151673 into an empty directory: each public original requested once from the mirror, the
    derived files rebuilt, and what the readers and the DataModule make of them equals the data directory's."""
    from datamodules.datamodule import ScRCLDataModule

    names = ["pollen", "dlpfc_151673"]
    empty = tmp_path / "data"
    empty.mkdir()
    todo = plan(names, empty)
    assert {f.path for f in todo.missing} == {"derived/Pollen_SIMLR.h5ad", "derived/DLPFC_151673.h5ad"}
    published = publish(mirror.tree, data_dir, todo.to_download)
    assert len(published) == 4  # SIMLR's .RData; Banksy's .rda, SEDR's labels, HumanPilot's positions

    for name in names:
        assert_same_data(load_dataset(name, empty, progress=False), load_dataset(name, data_dir, progress=False))
    assert sorted(mirror.requests) == sorted(published)  # every download went to the mirror, once
    assert files_under(empty) == sorted([f.path for f in todo.to_download] + [f.path for f in todo.missing])

    shared = built("dlpfc_151673")  # the data directory's, with the generic spatial settings (shared by the session)
    fresh = ScRCLDataModule(dataset="dlpfc_151673", data_dir=empty, cache=False, progress=False, **shared.params)
    fresh.setup()
    assert (fresh.n_cells, fresh.n_genes, fresh.n_clusters) == (shared.n_cells, shared.n_genes, shared.n_clusters) == (3611, 3000, 7)
    assert list(fresh.prepared.obs_names) == list(shared.prepared.obs_names)
    np.testing.assert_array_equal(fresh.batch.x.numpy(), shared.batch.x.numpy())
    np.testing.assert_array_equal(fresh.batch.y.numpy(), shared.batch.y.numpy())
    np.testing.assert_array_equal(fresh.batch.coords.numpy(), shared.batch.coords.numpy())


def test_a_file_the_mirror_lacks_is_one_line_naming_the_mirror(tmp_path, mirror):
    with pytest.raises(UserError) as err:
        load_dataset("pbmc10x", tmp_path / "data", progress=False)
    message = str(err.value)
    assert "\n" not in message and "HTTP 404" in message and f"SCRCL_DATA_MIRROR={mirror.base}" in message
    assert f"{mirror.base}/raw.githubusercontent.com/ttgump/scDCC/" in message
    assert files_under(tmp_path / "data") == []


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "two-xdist-workers"])
def test_make_data_through_the_mirror_then_the_real_data_tests_pass_on_it(tmp_path, data_dir, mirror, workers):
    """Everything tests/real_data.txt names, published on the mirror; a test run pointed at an empty directory fills
    it through the mirror first (saying what and how many MB), and the real-data tests pass on what it fetched; on two
    xdist workers (as `make test` runs) the controller fetches each file once before the workers start."""
    empty = tmp_path / "data"
    empty.mkdir()
    to_download = plan(read_list(ROOT / "tests/real_data.txt"), empty).to_download
    publish(mirror.tree, data_dir, to_download)
    env = {**os.environ, "SCRCL_DATA_DIR": str(empty), "SCRCL_DATA_MIRROR": mirror.base, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-n", str(workers), "--dist", "loadscope",
         "tests/datamodules/test_registry.py", "tests/datamodules/test_derive.py", "tests/datamodules/test_sources.py",
         "tests/datamodules/test_readers.py", "tests/cli/test_evaluate_cli.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"real data for the tests: fetching 20 files (28.9 MB) from the mirror {mirror.base} into {empty}" in proc.stdout
    assert "deselected" not in proc.stdout and "tests that read real data did not run" not in proc.stdout
    assert len(mirror.requests) == len(to_download), sorted(mirror.requests)  # each file fetched once
