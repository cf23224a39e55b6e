"""One run directory, one writer: an exclusive ``flock`` on ``RUN_DIR/.lock`` held for the life of a run.

The kernel drops a ``flock`` when its process dies, however it dies (SIGKILL included), so a lock is never
left stale and a dead run's directory is free again at once. The file holds ``pid host`` of the holder, so
a refused second writer (a ``--resume`` while the run is still training, two runs given the same ``--name``)
is told which process to wait for. Under torchrun only rank 0 takes it. Where ``fcntl`` is missing
(Windows) the lock is a no-op.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .config import ConfigError

LOCK_NAME = ".lock"


class RunBusyError(ConfigError):
    """Another live process holds this run directory's lock."""


class RunLock:
    """The lock on one run directory; :meth:`release` (or the process's death) frees it."""

    def __init__(self, run_dir: Path, fd: int | None) -> None:
        self.run_dir, self._fd = run_dir, fd

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike) -> "RunLock":
        """Take the lock or raise :class:`RunBusyError` naming the holder's pid and host."""
        run_dir = Path(run_dir)
        path = run_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            return cls(run_dir, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunBusyError(f"{run_dir} is in use by another training process ({holder(run_dir)}); wait for it "
                               "to finish, or stop it, before using this run directory") from None  # fmt: skip
        except BaseException:
            os.close(fd)
            raise
        try:  # best effort: on a full disk the lock still holds, only the holder's name is missing
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError:
            pass
        return cls(run_dir, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def is_locked(run_dir: str | os.PathLike) -> bool:
    """Whether a live process holds ``run_dir``'s lock (probed without keeping it)."""
    try:
        RunLock.acquire(run_dir).release()
    except RunBusyError:
        return True
    return False


def holder(run_dir: str | os.PathLike) -> str:
    """``pid 1234 on host`` as the holder wrote it, or what is known."""
    try:
        pid, _, host = (Path(run_dir) / LOCK_NAME).read_text().strip().partition(" ")
    except OSError:
        return "pid unknown"
    return f"pid {pid} on {host}" if pid else "pid unknown"
