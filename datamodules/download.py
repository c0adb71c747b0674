"""Fetch one public data file into the data directory, checksum-verified and atomically.

The file is streamed into a temporary file next to its destination and renamed into place only once
it is complete and its sha256 matches, so the data directory never holds a partial or corrupt file
under the real name (a later run would otherwise treat it as a cache hit). Every failure a user can
fix (no network, a moved URL, a changed file) ends as one :class:`UserError` line.

``SCRCL_DATA_MIRROR`` (a base URL, ``http(s)://`` or ``file://``) sends every download to a mirror instead of the
public hosts: ``https://HOST/PATH`` is fetched from ``$SCRCL_DATA_MIRROR/HOST/PATH``. The checksums are the same,
so a mirror can only serve the registered files.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from scrcl.atomic import atomic_path
from scrcl.errors import UserError

CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough for a smooth progress bar
# Some hosts reject urllib's default "Python-urllib/x.y" agent; a named one is also more polite.
USER_AGENT = "scrcl-data-fetch/1 (Python urllib)"
MIRROR_ENV = "SCRCL_DATA_MIRROR"
PLACE_HINT = f"or point --data-dir / SCRCL_DATA_DIR at a directory that has it, or set {MIRROR_ENV} to a mirror of the public files"


def mirror_base() -> str | None:
    """``$SCRCL_DATA_MIRROR`` without trailing slashes, or None when unset or empty."""
    base = os.environ.get(MIRROR_ENV, "").strip().rstrip("/")
    return base or None


def mirrored(url: str) -> str:
    """Where ``url`` is fetched from: ``$SCRCL_DATA_MIRROR/HOST/PATH`` when a mirror is set, else ``url`` itself."""
    base = mirror_base()
    if base is None:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return url
    query = f"?{parts.query}" if parts.query else ""
    return f"{base}/{parts.netloc}{parts.path}{query}"


class _TransferFailed(Exception):
    """A network-side failure of one URL; the next URL may still work."""


class _Mismatch:
    """One URL gave a complete file whose sha256 (``got``) is not the registered one."""

    def __init__(self, got: str):
        self.got = got


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (data files can be several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    dest: str | os.PathLike,
    urls: Sequence[str],
    sha256: str | None,
    *,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Return ``dest``, downloading it from the first of ``urls`` that yields a good file if missing.

    ``sha256`` (hex) is checked before the file appears under ``dest``; when it is None the computed
    digest is printed to stderr so the registry can be updated. ``timeout`` is per socket operation.
    Raises :class:`UserError` when no URL gives a good file. With ``SCRCL_DATA_MIRROR`` set, each URL is fetched from
    the mirror instead (:func:`mirrored`).
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    urls = [mirrored(u) for u in urls if u]
    if not urls:
        raise UserError(f"{dest} not found and no download URL is known; place the file there, {PLACE_HINT}")
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]  # removed again if nothing arrives
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the data directory {dest.parent}: {_oneline(e)}") from e
    try:
        return _fetch_into(dest, urls, sha256, timeout=timeout, progress=progress)
    except BaseException:
        for d in made:  # deepest first; a folder something else has written into meanwhile stays
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _fetch_into(dest: Path, urls: list[str], sha256: str | None, *, timeout: float, progress: bool) -> Path:
    """The first of ``urls`` that gives a good file, in place at ``dest`` (its folder exists)."""
    expected = sha256.strip().lower() if sha256 else None
    last_reason = ""
    mismatch: str | None = None  # reported only if no URL gave a good file
    for url in urls:
        try:
            digest = _download_to(dest, url, expected, timeout=timeout, progress=progress)
        except _TransferFailed as e:
            last_reason = str(e)
            continue
        if isinstance(digest, _Mismatch):
            mismatch = (
                f"checksum mismatch for {dest}: expected {expected}, got {digest.got} (from {url}); "
                "the download was deleted — try again or report the changed file"
            )
            last_reason = f"checksum mismatch from {url}"
            continue
        if expected is None:
            print(f"downloaded {dest} from {url}; no checksum registered, its sha256 is {digest}", file=sys.stderr)
        return dest

    if mismatch is not None:
        raise UserError(mismatch)
    sources = " or ".join(urls)
    through = f" (through {MIRROR_ENV}={mirror_base()})" if mirror_base() else ""
    raise UserError(
        f"{dest} not found and could not be downloaded{through} ({last_reason}); "
        f"download it from {sources} and place it there, {PLACE_HINT}"
    )


def _download_to(dest: Path, url: str, expected: str | None, *, timeout: float, progress: bool) -> str | _Mismatch:
    """One attempt: stream ``url`` to a temp file beside ``dest`` and rename it into place if good.

    Returns the digest on success or a ``_Mismatch``; raises ``_TransferFailed`` on a network error.
    The temp file is removed on every other exit, KeyboardInterrupt included.
    """
    try:
        with atomic_path(dest, suffix=".part") as tmp:  # renamed into place only if the block ends cleanly
            with open(tmp, "wb") as out:
                try:
                    digest = _stream(url, out, desc=dest.name, timeout=timeout, progress=progress)
                except OSError as e:
                    # Network errors arrive as _TransferFailed; an OSError here is from writing the temp
                    # file (disk full, quota), which no other URL would fix.
                    raise UserError(f"cannot write {dest} while downloading it from {url}: {_oneline(e)}") from e
            if expected is not None and digest != expected:
                raise _Rejected(_Mismatch(digest))
    except _Rejected as rejected:
        return rejected.mismatch
    except OSError as e:  # creating the temporary file: the data directory is not writable
        raise UserError(f"cannot write to the data directory {dest.parent}: {_oneline(e)}") from e
    return digest


class _Rejected(Exception):
    """Leaves ``atomic_path`` without renaming: the download's checksum did not match."""

    def __init__(self, mismatch: _Mismatch):
        self.mismatch = mismatch


def _stream(url: str, out, *, desc: str, timeout: float, progress: bool) -> str:
    """Copy the body of ``url`` into ``out`` while hashing; return the hex digest.

    Network problems are raised as ``_TransferFailed`` (message = short reason); errors writing
    ``out`` propagate unchanged as OSError.
    """
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        response = urllib.request.urlopen(request, timeout=timeout)
    except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: malformed URL
        if isinstance(e, urllib.error.HTTPError):
            e.close()  # an HTTPError holds the open connection
        raise _TransferFailed(_describe(e, timeout)) from e
    digest = hashlib.sha256()
    received = 0
    with response:
        total = _content_length(response)
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
            file=sys.stderr, disable=not progress, leave=False,
        ) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _TransferFailed(_describe(e, timeout)) from e
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # http.client does not always raise when the peer closes early; the length check catches it.
    if total is not None and received < total:
        raise _TransferFailed(f"connection dropped after {received} of {total} bytes")
    return digest.hexdigest()


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _describe(e: BaseException, timeout: float) -> str:
    """A short, single-line reason for a failed transfer."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {_oneline(e.reason)}"
    if isinstance(e, urllib.error.URLError):
        if not isinstance(e.reason, BaseException):
            return _oneline(e.reason)
        e = e.reason  # the underlying socket error says more than the wrapper
    if isinstance(e, http.client.IncompleteRead):
        return f"connection dropped after {len(e.partial)} bytes"
    if isinstance(e, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(e, OSError) and e.strerror:
        return _oneline(e.strerror)
    return _oneline(e) or type(e).__name__


def _oneline(obj: object) -> str:
    return " ".join(str(obj).split())
