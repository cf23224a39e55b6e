"""The data layer's exceptions: each names the file, what is wrong with it, and the fix."""

from __future__ import annotations


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
