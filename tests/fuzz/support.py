"""What the protocol oracles need to drive an ``asyncio.Protocol`` without a socket or a running loop.

A real event loop would keep every timer handle the protocols arm (a cancelled one stays in its
heap until the loop runs), so a fuzzer making millions of connections would grow without bound;
``FakeLoop`` hands out futures of a loop that never runs and timers that are never due.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

_NEVER_RUN = asyncio.new_event_loop()  # owns the futures; closed only at exit, never run


class FakeTimer:
    """A timer that never fires: the oracles check what the bytes do, not the deadlines."""

    def cancel(self) -> None:
        pass


class FakeLoop:
    """The part of ``AbstractEventLoop`` the protocols call: futures, the clock and timers."""

    def create_future(self) -> asyncio.Future[Any]:
        return _NEVER_RUN.create_future()

    def time(self) -> float:
        return 0.0

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeTimer:
        return FakeTimer()


class FakeTransport(asyncio.Transport):
    """Records what the protocol does to its socket; after ``abort`` or ``close`` no byte arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.aborted or self.closed


def split(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut into non-empty chunks whose sizes follow ``seed`` (one chunk when it is 0):
    a stream parser must give the same answer however the socket delivers the bytes."""
    if seed == 0:
        return [data] if data else []
    rng = random.Random(seed)
    chunks = []
    at = 0
    while at < len(data):
        size = rng.randint(1, 1 + seed % 32)
        chunks.append(data[at : at + size])
        at += size
    return chunks


def retrieved(future: asyncio.Future[Any]) -> tuple[str, Any]:
    """("result", value), ("exception", exc) or ("pending", None), marking an exception as seen
    (an unseen one would be logged when the future is collected)."""
    if not future.done():
        return ("pending", None)
    exc = future.exception()
    return ("exception", exc) if exc is not None else ("result", future.result())
