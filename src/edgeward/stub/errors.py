"""The one error type of the stub: a stable code the HTTP layer turns into the contract's JSON.

It lives apart from the aiohttp code so the in-memory model can refuse a request without
knowing about HTTP responses.
"""

from __future__ import annotations

__all__ = ("ApiError",)


class ApiError(Exception):
    """Answered as ``{"error": {"code", "message"}}`` with ``status`` (always 4xx)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
