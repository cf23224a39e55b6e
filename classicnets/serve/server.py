"""Running the app under uvicorn on a socket bound up front, so the address printed is the one served
(``--port 0`` picks a free port) and a caller can run it in a thread and stop it."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import replace

import uvicorn

from .app import ServeConfig, create_app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """The app for ``config`` on ``host:port`` (bound at construction); ``run()`` serves until ``stop()``."""

    def __init__(self, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning"):
        config = replace(config, loopback_only=is_loopback(host))
        self.app = create_app(config)  # lists the models first: a bad --weights name fails before binding
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it,
        # Nagle's algorithm and the client's delayed ACK add 40 ms to every keep-alive response.
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port "
                             "(0 takes a free one)") from None  # fmt: skip
        self.socket.listen(128)
        self.host, self.port = host, self.socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self._uvicorn = uvicorn.Server(uvicorn.Config(self.app, log_level=log_level, access_log=False,
                                                      timeout_graceful_shutdown=5))  # fmt: skip

    def announcement(self) -> str:
        if is_loopback(self.host):
            return f"serving on {self.url} (loopback only; --host 0.0.0.0 to share)"
        return (f"serving on {self.url} (NOT loopback: anyone who can reach this machine on port {self.port} can "
                "use the models and upload images)")  # fmt: skip

    def run(self) -> None:
        """Serve until :meth:`stop` (or Ctrl-C when run in the main thread)."""
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def stop(self) -> None:
        self._uvicorn.should_exit = True

    @property
    def started(self) -> bool:
        return self._uvicorn.started
