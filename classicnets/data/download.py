"""Verified downloads: stream to a temporary file beside the destination, hash, check, rename atomically.

A file only ever appears at its destination after its digest matched the published one, so a file found
there later was verified once; an interrupted or tampered download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NamedTuple

from .errors import ChecksumError, DownloadError

__all__ = ["download", "MAX_DOWNLOAD_BYTES", "DEADLINE"]

_CHUNK = 1 << 20
MAX_DOWNLOAD_BYTES = 1 << 30   # when the file's size is not known: 6x the largest dataset file (CIFAR, 170 MB)
DEADLINE = 1800                # seconds for a whole file: CIFAR's 170 MB needs 95 KB/s
_USER_AGENT = "classicnets (https://pypi.org/project/classicnets)"


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, md5: str | None = None,
             timeout: float = 30, quiet: bool = False, max_bytes: int | None = None,
             deadline: float = DEADLINE) -> Path:
    """Download ``url`` to ``dest`` and verify it against ``sha256`` and/or ``md5`` (at least one).

    Raises ChecksumError on a digest mismatch and DownloadError on HTTP or network errors; in both
    cases no file is left at ``dest`` or beside it. Progress goes to stderr unless ``quiet``.

    Bounded in time and size: ``timeout`` is per network read, ``deadline`` (seconds) for the whole file
    (checked between reads, so a server that drips a byte at a time stops within ``deadline + timeout``);
    ``max_bytes`` (the file's known size, else ``MAX_DOWNLOAD_BYTES``) caps what is written to disk: a
    larger Content-Length is refused before the body, an endless body is cut at the cap.
    """
    dest = Path(dest)
    if not sha256 and not md5:
        raise ValueError(f"refusing to download {dest.name} without a published sha256 or md5 to check "
                         f"it against; download it yourself and pass its folder as data_dir")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise ValueError(f"download: unsupported URL {url!r}; use http://, https:// or file://")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            hashes = _stream(url, out, dest.name, _Limits(timeout, deadline, max_bytes or MAX_DOWNLOAD_BYTES),
                             quiet)
        for algorithm, expected in (("sha256", sha256), ("md5", md5)):
            actual = hashes[algorithm].hexdigest()
            if expected and actual != expected.lower():
                raise ChecksumError(
                    f"{dest.name}: {algorithm} mismatch: expected {expected.lower()}, got {actual} "
                    f"(downloaded from {url}); the file was deleted. A mirror or proxy may have served "
                    f"a different file: try again, or fetch it by hand and check it",
                    path=str(dest), algorithm=algorithm, expected=expected.lower(), actual=actual)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


class _Limits(NamedTuple):
    timeout: float     # one network read
    deadline: float    # the whole download
    max_bytes: int     # the whole body


def _stream(url: str, out, label: str, limits: _Limits, quiet: bool) -> dict[str, "hashlib._Hash"]:
    """Copy ``url`` into ``out`` while hashing; translate urllib's errors into DownloadError."""
    hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    stop_at = time.monotonic() + limits.deadline
    try:
        with urllib.request.urlopen(request, timeout=limits.timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            if total is not None and total > limits.max_bytes:
                raise DownloadError(f"{url}: the server announces {total} bytes, more than the "
                                    f"{limits.max_bytes} this file has; check the URL or mirror")
            # read1: one network read per call, so the deadline is checked at least every `timeout`
            read = getattr(response, "read1", response.read)
            received = 0
            with _progress(total, label, quiet) as bar:
                while chunk := read(min(_CHUNK, limits.max_bytes + 1 - received)):
                    received += len(chunk)
                    if received > limits.max_bytes:
                        raise DownloadError(f"{url}: the server sent more than the {limits.max_bytes} "
                                            f"bytes this file has; stopped (check the URL or mirror)")
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    bar.update(len(chunk))
                    if time.monotonic() > stop_at:
                        raise DownloadError(
                            f"{url}: not finished after {limits.deadline:g} s ({received} bytes received);"
                            f" the server or network is too slow: try again later or another mirror, or "
                            f"download the file yourself")
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check the URL or mirror "
                            f"(set CLASSICNETS_MIRROR or pass mirror=)") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: cannot connect ({e.reason}); check the network, or place the "
                            f"file in a data directory yourself") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: connection failed mid-download ({e or type(e).__name__}); "
                            f"try again") from None
    if total is not None and received != total:
        raise DownloadError(f"{url}: connection closed after {received} of {total} bytes; try again")
    return hashes


class _NoBar:
    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress(total: int | None, label: str, quiet: bool):
    if quiet:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a progress bar is not worth failing over
        return _NoBar()
    return tqdm(total=total, desc=label, unit="B", unit_scale=True, file=sys.stderr, disable=None)
