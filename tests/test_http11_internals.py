"""edgeward.io.http11's cheap paths, driven step by step: the per-connection deadline timer, the
writes batched per loop turn and the remembered header names.

tests/test_http11.py checks the same guarantees end to end on real sockets; these tests drive a
``_Connection`` and a ``_Pool`` by hand, with a loop whose clock and timers the test moves, so
each case (a timer outliving its request, a later or an earlier deadline, a transport dropped
before its turn's writes) happens exactly, without timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgeward.io import http11
from tests.fuzz.support import FakeTransport, retrieved

REQUEST = b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Timer:
    def __init__(self, loop: ManualLoop, when: float, callback: Callable[[], object]) -> None:
        self.loop, self.when, self.callback, self.cancelled = loop, when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """Futures of a loop that never runs, a clock the test sets, timers fired by ``advance``,
    and ``call_soon`` callbacks run by ``run_soon``."""

    def __init__(self, futures: asyncio.AbstractEventLoop) -> None:
        self._futures = futures
        self.now = 0.0
        self.timers: list[Timer] = []
        self.soon: list[Callable[[], object]] = []

    def create_future(self) -> asyncio.Future[Any]:
        return self._futures.create_future()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(self, when, callback)
        self.timers.append(timer)
        return timer

    def call_soon(self, callback: Callable[[], object]) -> None:
        self.soon.append(callback)

    def pending(self) -> list[float]:
        return sorted(timer.when for timer in self.timers if not timer.cancelled)

    def advance(self, now: float) -> None:
        """Move the clock to ``now`` and fire the timers then due, as a loop would."""
        self.now = now
        while due := [timer for timer in self.timers if not timer.cancelled and timer.when <= now]:
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            timer.callback()

    def run_soon(self) -> None:
        soon, self.soon = self.soon, []
        for callback in soon:
            callback()


class PoolStub:
    """What a connection asks of its pool: the loop, and to be told when the socket is gone."""

    def __init__(self, loop: ManualLoop) -> None:
        self.loop = loop

    def connection_lost(self, conn: object) -> None:
        pass


@pytest.fixture
def loop() -> Iterator[ManualLoop]:
    futures = asyncio.new_event_loop()  # owns the futures; never run
    yield ManualLoop(futures)
    futures.close()


def connection(loop: ManualLoop) -> tuple[http11._Connection, FakeTransport]:
    conn = http11._Connection(PoolStub(loop))  # type: ignore[arg-type]  # the part of _Pool it uses
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


def outcome(future: asyncio.Future[http11.Response]) -> str:
    state, value = retrieved(future)
    if state == "exception":
        return type(value).__name__
    return state if state == "pending" else f"{value.status} {value.body!r}"


def test_one_timer_serves_the_requests_of_a_keep_alive_connection(loop: ManualLoop) -> None:
    conn, transport = connection(loop)
    first = conn.send(REQUEST, False, 1024, deadline=10.0)
    conn.data_received(ANSWER)
    assert outcome(first) == "200 b'ok'"
    assert loop.pending() == [10.0]  # left armed when the answer came
    second = conn.send(REQUEST, False, 1024, deadline=12.0)
    assert loop.pending() == [10.0]  # no new timer for a later deadline
    loop.advance(10.0)
    assert outcome(second) == "pending"  # the first deadline passing is not the second's
    assert loop.pending() == [12.0]
    conn.data_received(ANSWER)
    assert outcome(second) == "200 b'ok'"
    assert not transport.aborted


def test_a_later_request_times_out_at_its_own_deadline(loop: ManualLoop) -> None:
    conn, transport = connection(loop)
    conn.send(REQUEST, False, 1024, deadline=10.0)
    conn.data_received(ANSWER)
    second = conn.send(REQUEST, False, 1024, deadline=14.0)
    loop.advance(13.9)
    assert outcome(second) == "pending" and not transport.aborted
    loop.advance(14.0)
    assert outcome(second) == "TimeoutError"
    assert transport.aborted


def test_an_earlier_deadline_than_the_armed_one_moves_the_timer(loop: ManualLoop) -> None:
    # A waiter that queued for a connection before the previous request started has the earlier deadline.
    conn, transport = connection(loop)
    conn.send(REQUEST, False, 1024, deadline=10.0)
    conn.data_received(ANSWER)
    second = conn.send(REQUEST, False, 1024, deadline=8.0)
    assert loop.pending() == [8.0]
    loop.advance(8.0)
    assert outcome(second) == "TimeoutError"
    assert transport.aborted


def test_the_timer_of_an_idle_connection_stops_and_the_next_request_arms_it(loop: ManualLoop) -> None:
    conn, _ = connection(loop)
    conn.send(REQUEST, False, 1024, deadline=10.0)
    conn.data_received(ANSWER)
    loop.advance(10.0)
    assert loop.pending() == []
    third = conn.send(REQUEST, False, 1024, deadline=20.0)
    assert loop.pending() == [20.0]
    loop.advance(20.0)
    assert outcome(third) == "TimeoutError"


def test_a_lost_connection_cancels_its_timer(loop: ManualLoop) -> None:
    conn, _ = connection(loop)
    request = conn.send(REQUEST, False, 1024, deadline=10.0)
    conn.connection_lost(None)
    assert outcome(request) == "ConnectionClosedError"
    assert loop.pending() == []


def test_the_first_request_after_a_read_is_written_at_once_and_the_rest_of_the_turn_together(
    loop: ManualLoop,
) -> None:
    client = http11.HTTP11Client(timeout_s=5.0)
    pool = http11._Pool(client, http11.Origin.from_url("http://backend"), loop)  # type: ignore[arg-type]
    (a, ta), (b, tb), (c, tc), (d, td) = (connection(loop) for _ in range(4))
    for conn in (a, b, c, d):
        conn._pool = pool
    first = a.send(b"A", False, 1024, 10.0, pool._turn_writes())
    assert ta.written == [b"A"] and loop.soon == []  # a lone request: no callback, no extra turn
    b.send(b"B", False, 1024, 10.0, pool._turn_writes())
    c.send(b"C", False, 1024, 10.0, pool._turn_writes())
    d.send(b"D", False, 1024, 10.0, pool._turn_writes())
    assert len(loop.soon) == 1 and tb.written == tc.written == td.written == []
    c.abort()  # e.g. a deadline or close() before the end of the turn
    loop.run_soon()
    assert (tb.written, tc.written, td.written) == ([b"B"], [], [b"D"])
    assert outcome(first) == "pending"
    a.data_received(ANSWER)  # an answer read: the next request goes out at once again
    assert outcome(first) == "200 b'ok'"
    a.send(b"A2", False, 1024, 10.0, pool._turn_writes())
    assert ta.written == [b"A", b"A2"] and loop.soon == []
    b.data_received(ANSWER)
    b.send(b"B2", False, 1024, 10.0, pool._turn_writes())
    d.data_received(ANSWER)
    d.send(b"D2", False, 1024, 10.0, pool._turn_writes())
    assert tb.written == [b"B", b"B2"] and td.written == [b"D", b"D2"]


def test_header_names_are_remembered_only_when_valid_and_values_are_always_checked() -> None:
    http11._VALID_NAMES.clear()
    good = {"X-A": "1", "X-B": "2"}
    encoded = http11._encode_request("GET", "/", "h", good, None)
    assert encoded == b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
    assert ("X-A", "X-B") in http11._VALID_NAMES
    with pytest.raises(http11.InvalidRequestError):
        http11._encode_request("GET", "/", "h", {"X-A": "1\r\nX-Evil: 1", "X-B": "2"}, None)
    for bad in ({"X-A": "1", "Host": "other"}, {"X A": "1"}, {"X-A": "1", "Content-Length": "0"}):
        with pytest.raises(http11.InvalidRequestError):
            http11._encode_request("GET", "/", "h", bad, None)
        assert tuple(bad) not in http11._VALID_NAMES
    for i in range(http11._MAX_VALID_NAMES + 10):  # names that change per request do not grow it
        http11._encode_request("GET", "/", "h", {f"X-{i}": "v"}, None)
    assert len(http11._VALID_NAMES) <= http11._MAX_VALID_NAMES
