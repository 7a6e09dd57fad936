"""Process-level plumbing shared by the CLI commands: the event loop, logging, descriptors, listen errors."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

__all__ = ("EXIT_CANNOT_LISTEN", "ListenError", "configure_logging", "raise_fd_limit", "run")

T = TypeVar("T")

# Exit status of a server command whose listener could not bind (2 is a bad setting).
EXIT_CANNOT_LISTEN = 4
# An unlimited hard limit is not a number a soft limit can take: stop at this many descriptors.
_FD_CEILING = 1_048_576


class ListenError(OSError):
    """A listener could not bind; ``str()`` is the one line an operator needs."""

    def __init__(self, listener: str, address: str, cause: BaseException) -> None:
        why = os.strerror(cause.errno).lower() if isinstance(cause, OSError) and cause.errno else str(cause)
        super().__init__(f"cannot listen for {listener} on {address}: {why}")
        self.listener = listener
        self.address = address


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a server holds a descriptor per client); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _FD_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else _FD_CEILING
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a uvloop event loop (the production loop; asyncio's is the reference)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
