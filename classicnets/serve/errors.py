"""The one exception the web app raises for a request it refuses: an HTTP status and a sentence that names
the problem and the fix, sent as ``{"error": message}``."""

from __future__ import annotations


class ApiError(Exception):
    """A refused request: ``status`` (4xx, or 503 when the workers are full) and a one-line ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
