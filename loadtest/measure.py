"""Reporting to Locust's statistics: one request event per call, success or failure.

Every call a user makes (gRPC, HTTP, an event's delivery) goes through ``Measure``, so each is
counted under its own name with its time, and a failure is named by what went wrong (for gRPC
the status code and the stable reason, e.g. ``RESOURCE_EXHAUSTED: rate_limited``). Locust groups
failures by that text, so the report's failure table reads as a list of reasons.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ("LoadTestError", "Measure", "report")


class LoadTestError(Exception):
    """An answer the load test does not accept although the call itself succeeded."""


class Measure:
    """``with Measure(fire, "grpc", "user.echo") as m:`` times the block and reports it.

    An ``Exception`` raised in the block is reported as the failure and suppressed (a user's task
    simply ends there; ``m.ok`` tells the code after the block); anything else (a greenlet being
    killed) goes through. ``m.length`` is the answer's size for the report.
    """

    def __init__(self, fire: Callable[..., Any], request_type: str, name: str) -> None:
        self._fire = fire
        self._request_type = request_type
        self._name = name
        self._started = 0.0
        self.length = 0
        self.ok = False

    def __enter__(self) -> Measure:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is not None and not isinstance(exc, Exception):
            return False
        self.ok = exc is None
        self._fire(
            request_type=self._request_type,
            name=self._name,
            response_time=(time.perf_counter() - self._started) * 1000.0,
            response_length=self.length,
            exception=exc,
            context={},
        )
        return True


def report(fire: Callable[..., Any], request_type: str, name: str, response_time_ms: float,
           exception: Exception | None = None) -> None:
    """Report a measurement taken elsewhere (an event's delivery latency, a lost event)."""
    fire(request_type=request_type, name=name, response_time=response_time_ms, response_length=0,
         exception=exception, context={})
