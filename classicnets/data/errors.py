"""The data layer's exceptions: each names the file, what is wrong with it, and the fix; and ``printable``
for the untrusted names (class folders, file names) that messages and the CLI print."""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` safe for a terminal or a one-line message: control and other non-printable characters
    written as escapes (a folder named "\\x1b[31mred" prints as that, not in red). For printing only: the
    data keeps the real name."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


class DataFormatError(ValueError):
    """A dataset file exists but is not what its format (IDX, CIFAR pickle, image) promises."""


class ChecksumError(ValueError):
    """A downloaded file's digest differs from the published one; the file was deleted."""

    def __init__(self, message: str, *, path: str = "", algorithm: str = "",
                 expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.path, self.algorithm, self.expected, self.actual = path, algorithm, expected, actual


class DownloadError(OSError):
    """A download failed for a reason other than a checksum (HTTP status, network, timeout)."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are in none of the places searched and could not be downloaded."""
