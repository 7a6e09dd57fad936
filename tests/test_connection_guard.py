"""The connection guard's timers on a connection whose answer the client never read.

At the socket level this needs more unsent bytes than loopback's autotuned send buffer holds (several
MiB), which no listener of the gateway answers with; so the guard's protocol gets a transport that
reports what is still unsent, and its idle timer is run at once.
"""

from __future__ import annotations

import asyncio

from edgeward.protection.connections import ConnectionGuard, ConnectionLimits
from tests.fuzz.support import FakeTransport


class _Unsent(FakeTransport):
    """A transport still holding ``unsent`` bytes of an answer."""

    def __init__(self, unsent: int) -> None:
        super().__init__()
        self.unsent = unsent

    def get_write_buffer_size(self) -> int:
        return self.unsent


async def _expire_idle(unsent: int) -> _Unsent:
    guard = ConnectionGuard(ConnectionLimits(header_timeout_s=60, idle_timeout_s=0, max_connections=4))
    protocol = guard.protocol_factory(asyncio.Protocol)()
    transport = _Unsent(unsent)
    protocol.connection_made(transport)
    protocol.request_ended()  # type: ignore[attr-defined]  # the answer is written: the idle timer runs
    for _ in range(1_000):  # a timer of 0 s fires within a few turns of the loop
        if transport.is_closing():
            break
        await asyncio.sleep(0)
    assert guard.timeouts["idle"] == 1
    return transport


async def test_an_idle_connection_whose_answer_was_read_is_closed_gracefully() -> None:
    transport = await _expire_idle(unsent=0)
    assert transport.closed and not transport.aborted


async def test_an_idle_connection_still_holding_an_unread_answer_is_aborted() -> None:
    transport = await _expire_idle(unsent=85_000)  # close() would wait to flush it, forever
    assert transport.aborted and not transport.closed
