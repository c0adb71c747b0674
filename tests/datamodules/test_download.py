"""datamodules.download.fetch against a real HTTP server on 127.0.0.1 (nothing else is contacted).

Every case ends by listing the data directory: it must hold the final file or nothing, never a
partial or temporary file.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import datamodules.download as download
from datamodules.download import fetch, sha256sum
from scrcl.errors import UserError

TIMEOUT = 10.0  # per socket operation: generous for loopback beside a second test worker; a hang still fails fast


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # so Content-Length, not connection close, delimits the body

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        with srv.lock:
            srv.requests.append(self.path)
        if self.path == "/good.bin":
            self._send(srv.payload)
        elif self.path == "/changed.bin":
            self._send(srv.changed)
        elif self.path in ("/drop.bin", "/reset.bin"):
            self._send_half_then_close(srv.payload, reset=self.path == "/reset.bin")
        elif self.path == "/stall.bin":
            self._send_headers(len(srv.payload))
            srv.release.wait(10)  # never sends the body; released at teardown
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")

    def _send_headers(self, length: int):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()

    def _send(self, body: bytes):
        self._send_headers(len(body))
        self.wfile.write(body)

    def _send_half_then_close(self, body: bytes, *, reset: bool):
        self._send_headers(len(body))
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if reset:  # SO_LINGER 0: close() sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # A proxy from the environment would route 127.0.0.1 requests elsewhere.
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.payload = os.urandom(300 * 1024)
    srv.changed = os.urandom(300 * 1024)
    srv.requests = []
    srv.lock = threading.Lock()
    srv.release = threading.Event()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    srv.sha = hashlib.sha256(srv.payload).hexdigest()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _files(root: Path) -> list[str]:
    """Every file under root (hidden ones included), relative to root."""
    return sorted(
        str(Path(d, f).relative_to(root)) for d, _, names in os.walk(root) for f in names
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_success_then_cache_hit(server, tmp_path):
    dest = tmp_path / "sub" / "dir" / "data.bin"  # parents are created
    out = fetch(dest, [f"{server.base}/good.bin"], server.sha, timeout=TIMEOUT, progress=False)
    assert out == dest
    assert dest.read_bytes() == server.payload
    assert sha256sum(dest) == server.sha
    assert _files(tmp_path) == ["sub/dir/data.bin"]
    n = len(server.requests)
    assert fetch(dest, [f"{server.base}/good.bin"], server.sha, timeout=TIMEOUT, progress=False) == dest
    assert len(server.requests) == n  # cache hit: the server was not contacted again


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    fetch(tmp_path / "data.bin", [f"{server.base}/good.bin"], server.sha, timeout=TIMEOUT, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "data.bin" in captured.err
    assert _files(tmp_path) == ["data.bin"]


def test_checksum_mismatch(server, tmp_path):
    dest = tmp_path / "data.bin"
    url = f"{server.base}/changed.bin"
    with pytest.raises(UserError) as err:
        fetch(dest, [url], server.sha, timeout=TIMEOUT, progress=False)
    msg = str(err.value)
    assert "checksum" in msg and str(dest) in msg and url in msg and server.sha in msg
    assert hashlib.sha256(server.changed).hexdigest() in msg
    assert "\n" not in msg
    assert _files(tmp_path) == []


def test_checksum_mismatch_falls_back_to_next_url(server, tmp_path):
    dest = tmp_path / "data.bin"
    urls = [f"{server.base}/changed.bin", f"{server.base}/good.bin"]
    assert fetch(dest, urls, server.sha.upper(), timeout=TIMEOUT, progress=False) == dest
    assert dest.read_bytes() == server.payload
    assert server.requests == ["/changed.bin", "/good.bin"]
    assert _files(tmp_path) == ["data.bin"]


def test_404(server, tmp_path):
    dest = tmp_path / "data.bin"
    url = f"{server.base}/missing"
    with pytest.raises(UserError) as err:
        fetch(dest, [url], server.sha, timeout=TIMEOUT, progress=False)
    msg = str(err.value)
    assert str(dest) in msg and url in msg and "404" in msg
    assert "SCRCL_DATA_DIR" in msg and "\n" not in msg
    assert _files(tmp_path) == []


@pytest.mark.parametrize("path", ["/drop.bin", "/reset.bin"])
def test_connection_dropped_mid_transfer(server, tmp_path, path):
    dest = tmp_path / "data.bin"
    url = f"{server.base}{path}"
    with pytest.raises(UserError) as err:
        fetch(dest, [url], server.sha, timeout=TIMEOUT, progress=False)
    assert str(dest) in str(err.value) and url in str(err.value)
    assert "checksum" not in str(err.value)  # caught as a transfer failure, not as a bad file
    assert _files(tmp_path) == []


def test_dropped_without_checksum_is_not_kept(server, tmp_path):
    # With no sha256 to check, only the Content-Length check stands between a half file and the cache.
    with pytest.raises(UserError):
        fetch(tmp_path / "data.bin", [f"{server.base}/drop.bin"], None, timeout=TIMEOUT, progress=False)
    assert _files(tmp_path) == []


def test_stalled_server_times_out(server, tmp_path):
    with pytest.raises(UserError) as err:
        fetch(tmp_path / "data.bin", [f"{server.base}/stall.bin"], server.sha, timeout=0.3, progress=False)
    assert "timed out" in str(err.value)
    assert _files(tmp_path) == []


def test_fallback_to_second_url(server, tmp_path):
    dest = tmp_path / "data.bin"
    urls = [f"{server.base}/missing", f"{server.base}/good.bin"]
    assert fetch(dest, urls, server.sha, timeout=TIMEOUT, progress=False) == dest
    assert dest.read_bytes() == server.payload
    assert server.requests == ["/missing", "/good.bin"]
    assert _files(tmp_path) == ["data.bin"]


def test_no_checksum_prints_computed_sha(server, tmp_path, capsys):
    dest = tmp_path / "data.bin"
    assert fetch(dest, [f"{server.base}/good.bin"], None, timeout=TIMEOUT, progress=False) == dest
    assert dest.read_bytes() == server.payload
    err = capsys.readouterr().err
    assert server.sha in err
    assert len([line for line in err.splitlines() if server.sha in line]) == 1
    assert _files(tmp_path) == ["data.bin"]


def test_connection_refused(tmp_path):
    dest = tmp_path / "data.bin"
    url = f"http://127.0.0.1:{_closed_port()}/data.bin"
    with pytest.raises(UserError) as err:
        fetch(dest, [url], "0" * 64, timeout=TIMEOUT, progress=False)
    msg = str(err.value)
    assert str(dest) in msg and url in msg and "\n" not in msg
    assert _files(tmp_path) == []


def test_all_urls_fail_names_every_url(server, tmp_path):
    urls = [f"{server.base}/missing", f"http://127.0.0.1:{_closed_port()}/x"]
    with pytest.raises(UserError) as err:
        fetch(tmp_path / "data.bin", urls, None, timeout=TIMEOUT, progress=False)
    assert all(u in str(err.value) for u in urls)
    assert _files(tmp_path) == []


def test_no_urls(tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(UserError) as err:
        fetch(dest, [], None, timeout=TIMEOUT, progress=False)
    assert str(dest) in str(err.value) and "not found" in str(err.value)
    assert _files(tmp_path) == []


def test_interrupt_during_transfer_leaves_no_partial_file(server, tmp_path, monkeypatch):
    class _InterruptingBar:  # stands in for tqdm: Ctrl-C arrives after the first chunk is written
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "tqdm", _InterruptingBar)
    monkeypatch.setattr(download, "CHUNK", 64 * 1024)  # several chunks, so the file is really partial
    with pytest.raises(KeyboardInterrupt):
        fetch(tmp_path / "data.bin", [f"{server.base}/good.bin"], server.sha, timeout=TIMEOUT, progress=False)
    assert server.requests == ["/good.bin"]  # the transfer had started
    assert _files(tmp_path) == []


def test_sha256sum(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(data)
    assert sha256sum(path) == hashlib.sha256(data).hexdigest()


def test_malformed_url_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as err:
        fetch(tmp_path / "data.bin", ["not-a-url"], None, timeout=TIMEOUT, progress=False)
    assert "not-a-url" in str(err.value)
    assert _files(tmp_path) == []


def test_a_failed_download_removes_the_folders_it_made(server, tmp_path):
    """A mistyped --data-dir was left behind as an empty tree of folders; the folders that were there stay."""
    (tmp_path / "data").mkdir()
    dest = tmp_path / "data" / "typo" / "scrna" / "x.bin"
    with pytest.raises(UserError):
        fetch(dest, [f"{server.base}/missing"], server.sha, timeout=TIMEOUT, progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data"]
    assert fetch(dest, [f"{server.base}/good.bin"], server.sha, timeout=TIMEOUT, progress=False).read_bytes() == server.payload
