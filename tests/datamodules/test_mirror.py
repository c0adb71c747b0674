"""SCRCL_DATA_MIRROR: downloads go to ``<mirror>/<host>/<path>`` for ``https://<host>/<path>``; nothing but
127.0.0.1 and local files are contacted."""

from __future__ import annotations

import hashlib
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from datamodules.download import fetch, mirrored
from datamodules.loading import load_dataset
from scrcl.errors import UserError


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


def files_under(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _, names in os.walk(root) for f in names)


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


def test_a_file_the_mirror_lacks_is_one_line_naming_the_mirror(tmp_path, mirror):
    with pytest.raises(UserError) as err:
        load_dataset("pbmc10x", tmp_path / "data", progress=False)
    message = str(err.value)
    assert "\n" not in message and "HTTP 404" in message and f"SCRCL_DATA_MIRROR={mirror.base}" in message
    assert f"{mirror.base}/raw.githubusercontent.com/ttgump/scDCC/" in message
    assert files_under(tmp_path / "data") == []
