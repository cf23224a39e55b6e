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
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import ChecksumError, DownloadError

__all__ = ["download"]

_CHUNK = 1 << 20
_USER_AGENT = "classicnets (https://pypi.org/project/classicnets)"


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, md5: str | None = None,
             timeout: float = 30, quiet: bool = False) -> Path:
    """Download ``url`` to ``dest`` and verify it against ``sha256`` and/or ``md5`` (at least one).

    Raises ChecksumError on a digest mismatch and DownloadError on HTTP or network errors; in both
    cases no file is left at ``dest`` or beside it. Progress goes to stderr unless ``quiet``.
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
            hashes = _stream(url, out, dest.name, timeout, quiet)
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


def _stream(url: str, out, label: str, timeout: float, quiet: bool) -> dict[str, "hashlib._Hash"]:
    """Copy ``url`` into ``out`` while hashing; translate urllib's errors into DownloadError."""
    hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            received = 0
            with _progress(total, label, quiet) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
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
