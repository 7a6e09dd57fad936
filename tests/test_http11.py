"""edgeward.io.http11 against real servers on 127.0.0.1: pooling, bodies, failures, retries, deadlines.

Well-behaved answers come from an aiohttp.web server; misbehaving ones (closing, dying mid-answer,
never answering, streaming without end) from asyncio.start_server handlers written per test.
Every test runs on asyncio's own loop and on uvloop (what ``edgeward serve`` runs), inside one
bounded ``asyncio.wait_for``; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web

from edgeward.gateway.backend import BackendClient, CommandContext
from edgeward.gateway.routes import Route
from edgeward.io.http11 import (
    MAX_HEAD_BYTES,
    ClientClosedError,
    ConnectError,
    ConnectionClosedError,
    HTTP11Client,
    HTTPClientError,
    InvalidRequestError,
    Origin,
    ProtocolError,
    ResponseTooLargeError,
)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
BOUND_S = 30.0  # no test needs anywhere near this; it only turns a hang into a failure
LIMIT = 64 * 1024


def run(loop: str, body: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(body, BOUND_S))


def on_both_loops(body: Callable[[], Coroutine[Any, Any, None]]) -> Any:
    """The test ``body`` run once on each loop of LOOPS, with a bounded wait."""

    def test(loop: str) -> None:
        run(loop, body())

    test.__name__, test.__qualname__, test.__doc__ = body.__name__, body.__qualname__, body.__doc__
    return pytest.mark.parametrize("loop", list(LOOPS))(test)


def client(**kw: Any) -> HTTP11Client:
    return HTTP11Client(**{"timeout_s": 10.0, "max_response_bytes": LIMIT, **kw})


@contextlib.asynccontextmanager
async def opened(**kw: Any) -> AsyncIterator[HTTP11Client]:
    """``client(**kw)``, closed on the way out whatever the test raised."""
    http = client(**kw)
    try:
        yield http
    finally:
        await http.close()


# -- a well-behaved backend --------------------------------------------------------------------


@dataclasses.dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


class Backend:
    """aiohttp.web on 127.0.0.1: records each request and its client port (one port, one connection)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.release = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self._holding = asyncio.Condition()
        app = web.Application()
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_route("*", "/prefix/echo", self._echo)
        app.router.add_get("/chunked", self._chunked)
        app.router.add_get("/big", self._big)
        app.router.add_get("/close", self._close)
        app.router.add_get("/hold", self._hold)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self.origin = Origin("http", "127.0.0.1", 0, "")

    async def __aenter__(self) -> Backend:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.origin = Origin.from_url(f"http://127.0.0.1:{self._runner.addresses[0][1]}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self._runner.cleanup()

    @property
    def peers(self) -> set[tuple[str, int]]:
        return {seen.peer for seen in self.seen}

    async def holding(self, n: int) -> None:
        """Until ``n`` requests are held in /hold."""
        async with self._holding:
            await self._holding.wait_for(lambda: self.in_flight >= n)

    async def _record(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else ("?", 0)
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body, tuple(peer[:2])))

    async def _echo(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(body=self.seen[-1].body, headers={"X-Method": request.method})

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(int(request.query.get("parts", "5"))):
            await resp.write(f"part{i};".encode() * int(request.query.get("repeat", "1")))
        await resp.write_eof()
        return resp

    async def _big(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(body=b"b" * int(request.query["n"]))

    async def _close(self, request: web.Request) -> web.Response:
        await self._record(request)
        resp = web.Response(body=b"bye")
        resp.force_close()  # Connection: close
        return resp

    async def _hold(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        async with self._holding:
            self._holding.notify_all()
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return web.Response(body=request.query.get("id", "").encode())


# -- misbehaving servers -----------------------------------------------------------------------


Handler = Callable[["RawConnection"], Awaitable[None]]


@dataclasses.dataclass
class RawConnection:
    index: int  # 0 for the server's first connection
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: RawServer
    requests: int = 0

    async def read_request(self) -> bytes | None:
        """The next request (head and body), or None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        self.requests += 1
        self.server.requests += 1
        return head + body

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class RawServer:
    """asyncio.start_server on 127.0.0.1 running ``handler`` per connection; counts what it saw."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.connections = 0
        self.requests = 0
        self.release = asyncio.Event()
        self.disconnected = asyncio.Event()  # a client closed a connection (EOF seen by a handler)
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.origin = Origin("http", "127.0.0.1", 0, "")

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.origin = Origin.from_url(f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        conn = RawConnection(self.connections, reader, writer, self)
        self.connections += 1
        try:
            await self._handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def keep_answering(conn: RawConnection) -> None:
    while await conn.read_request() is not None:
        await conn.send(ok())
    conn.server.disconnected.set()


# -- requests, keep-alive and the pool ---------------------------------------------------------


@on_both_loops
async def test_the_request_arrives_as_sent_and_the_answer_is_whole() -> None:
    async with Backend() as backend, opened() as http:
        resp = await http.request(
            backend.origin, "PUT", "/echo?a=1&b=%20", headers={"X-Id": "r-1", "X-Uni": "é"}, body=b"payload"
        )
        get = await http.request(backend.origin, "GET", "/echo")
        empty_post = await http.request(backend.origin, "POST", "/echo")
    assert (resp.status, resp.body) == (200, b"payload")
    assert (b"X-Method", b"PUT") in resp.headers
    put, plain, _ = backend.seen
    assert (put.method, put.path_qs, put.body) == ("PUT", "/echo?a=1&b=%20", b"payload")
    assert put.headers["X-Id"] == "r-1" and put.headers["X-Uni"] == "é"
    assert put.headers["Host"] == backend.origin.host_header
    assert put.headers["Content-Length"] == "7"
    assert "Cookie" not in put.headers
    assert (get.status, get.body, plain.method) == (200, b"", "GET")
    assert "Content-Length" not in plain.headers  # a GET without a body says nothing of one
    assert empty_post.body == b"" and backend.seen[2].headers["Content-Length"] == "0"


@on_both_loops
async def test_sequential_requests_reuse_one_keep_alive_connection() -> None:
    async with Backend() as backend, opened() as http:
        for i in range(5):
            resp = await http.request(backend.origin, "POST", "/echo", body=b"n%d" % i)
            assert resp.body == b"n%d" % i
    assert len(backend.seen) == 5 and len(backend.peers) == 1


@on_both_loops
async def test_the_pool_never_opens_more_than_max_connections() -> None:
    async with Backend() as backend, opened(max_connections=2) as http:
        calls = [asyncio.ensure_future(http.request(backend.origin, "GET", f"/hold?id={i}")) for i in range(6)]
        await backend.holding(2)  # both connections busy; the other four wait for one
        await asyncio.sleep(0.05)
        assert backend.in_flight == 2 and not any(call.done() for call in calls)
        backend.release.set()
        bodies = [resp.body for resp in await asyncio.gather(*calls)]
    assert bodies == [str(i).encode() for i in range(6)]
    assert backend.max_in_flight == 2 and len(backend.peers) == 2


@on_both_loops
async def test_concurrent_requests_each_get_their_own_answer() -> None:
    async with Backend() as backend, opened(max_connections=8) as http:
        bodies = [b"request-%03d" % i * (i + 1) for i in range(60)]
        answers = await asyncio.gather(*(http.request(backend.origin, "POST", "/echo", body=body) for body in bodies))
    assert [answer.body for answer in answers] == bodies
    assert len(backend.seen) == 60 and len(backend.peers) <= 8


@on_both_loops
async def test_a_deadline_passing_while_waiting_for_a_connection_is_a_timeout() -> None:
    async with Backend() as backend, opened(max_connections=1, timeout_s=0.2) as http:
        holder = asyncio.ensure_future(http.request(backend.origin, "GET", "/hold"))
        await backend.holding(1)
        waiter = asyncio.ensure_future(http.request(backend.origin, "GET", "/echo"))
        with pytest.raises(TimeoutError):
            await holder
        # The holder's deadline came first; its connection was dropped and the waiter got
        # the freed slot, or its own deadline passed too. Either way it ends, and the pool
        # still serves.
        with contextlib.suppress(TimeoutError):
            await waiter
        assert (await http.request(backend.origin, "POST", "/echo", body=b"again")).body == b"again"


@on_both_loops
async def test_a_cancelled_waiter_gives_its_turn_back() -> None:
    async with Backend() as backend:
        http = client(max_connections=1)
        handed: list[asyncio.Future[object]] = []

        async def hold_then_cancel_the_next() -> None:
            await http.request(backend.origin, "GET", "/hold")
            # The connection was handed to the waiting request as this one finished, in this
            # same step: it has not run yet. Cancelling it now must pass the connection on.
            handed[0].cancel()

        try:
            holder = asyncio.ensure_future(hold_then_cancel_the_next())
            await backend.holding(1)
            with pytest.raises(TimeoutError):  # cancelled by the caller while waiting
                async with asyncio.timeout(0.05):
                    await http.request(backend.origin, "GET", "/echo")
            handed.append(asyncio.ensure_future(http.request(backend.origin, "GET", "/echo")))
            await asyncio.sleep(0)  # now waiting for the connection
            backend.release.set()
            await holder
            with pytest.raises(asyncio.CancelledError):
                await handed[0]
            assert (await http.request(backend.origin, "POST", "/echo", body=b"again")).body == b"again"
        finally:
            await http.close()
    assert len(backend.peers) == 1  # the one connection was kept through all of it
    assert [seen.path_qs for seen in backend.seen] == ["/hold", "/echo"]


# -- bodies ------------------------------------------------------------------------------------


@on_both_loops
async def test_content_length_bodies_small_empty_and_over_many_reads() -> None:
    async with Backend() as backend, opened() as http:
        assert (await http.request(backend.origin, "GET", "/big?n=0")).body == b""
        assert (await http.request(backend.origin, "GET", "/big?n=1")).body == b"b"
        assert (await http.request(backend.origin, "GET", f"/big?n={LIMIT}")).body == b"b" * LIMIT
    assert len(backend.peers) == 1


@on_both_loops
async def test_chunked_bodies_are_reassembled_and_the_connection_reused() -> None:
    async with Backend() as backend, opened() as http:
        first = await http.request(backend.origin, "GET", "/chunked?parts=5")
        many = await http.request(backend.origin, "GET", "/chunked?parts=100&repeat=50")
    assert first.body == b"part0;part1;part2;part3;part4;"
    assert many.body == b"".join(f"part{i};".encode() * 50 for i in range(100))
    assert len(backend.peers) == 1


@on_both_loops
async def test_a_close_delimited_body_ends_at_eof() -> None:
    async def answer(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        conn.writer.close()

    async with RawServer(answer) as server, opened() as http:
        resp = await http.request(server.origin, "GET", "/")
    assert (resp.status, resp.body) == (200, b"until the end")


@on_both_loops
async def test_informational_answers_are_skipped() -> None:
    async def answer(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + ok(b"final"))
        await conn.server.release.wait()

    async with RawServer(answer) as server, opened() as http:
        resp = await http.request(server.origin, "GET", "/")
    assert (resp.status, resp.body) == (200, b"final")


@on_both_loops
async def test_head_has_no_body_whatever_content_length_says() -> None:
    async with Backend() as backend, opened() as http:
        resp = await http.request(backend.origin, "HEAD", "/big?n=100")
        after = await http.request(backend.origin, "GET", "/big?n=3")
    assert (resp.status, resp.body) == (200, b"")
    assert (b"Content-Length", b"100") in resp.headers
    assert after.body == b"bbb"


# -- connection: close and closed connections --------------------------------------------------


@on_both_loops
async def test_connection_close_is_honoured_and_not_pooled() -> None:
    async with Backend() as backend, opened() as http:
        assert (await http.request(backend.origin, "GET", "/close")).body == b"bye"
        assert (await http.request(backend.origin, "GET", "/close")).body == b"bye"
        assert (await http.request(backend.origin, "POST", "/echo", body=b"x")).body == b"x"
    assert len(backend.peers) == 3


@on_both_loops
async def test_connection_close_is_honoured_even_while_the_server_keeps_the_socket_open() -> None:
    async def say_close_but_linger(conn: RawConnection) -> None:
        while await conn.read_request() is not None:
            await conn.send(ok(b"x", b"Connection: close\r\n"))

    async with RawServer(say_close_but_linger) as server, opened() as http:
        for _ in range(3):
            assert (await http.request(server.origin, "GET", "/")).body == b"x"
    assert (server.connections, server.requests) == (3, 3)


@on_both_loops
async def test_a_stale_connection_is_retried_once_on_a_new_one() -> None:
    # Each connection answers its first request, then closes without answering the next: what a
    # client sees when the server closes an idle keep-alive connection as the request goes out.
    async def one_answer(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(ok(b"first"))
        await conn.read_request()
        conn.writer.close()

    async with RawServer(one_answer) as server, opened() as http:
        assert (await http.request(server.origin, "POST", "/", body=b"a")).body == b"first"
        resp = await http.request(server.origin, "POST", "/", body=b"b")  # not idempotent: retried all the same
    assert resp.body == b"first"
    assert (server.connections, server.requests) == (2, 3)


@on_both_loops
async def test_an_idle_connection_closed_by_the_server_is_not_a_failure() -> None:
    async def close_when_idle(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(ok(b"one"))
        conn.writer.close()  # keep-alive was promised, but the server drops the connection
        conn.server.disconnected.set()

    async with RawServer(close_when_idle) as server, opened() as http:
        assert (await http.request(server.origin, "GET", "/")).body == b"one"
        await server.disconnected.wait()
        await asyncio.sleep(0.05)  # the client may or may not have seen the EOF yet: both must work
        assert (await http.request(server.origin, "GET", "/")).body == b"one"
    assert server.connections == 2


@on_both_loops
async def test_a_server_dying_mid_answer_fails_the_request_without_retry() -> None:
    async def die_on_second(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(ok(b"first"))
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        conn.writer.close()

    async with RawServer(die_on_second) as server, opened() as http:
        await http.request(server.origin, "POST", "/", body=b"a")
        with pytest.raises(ConnectionClosedError) as info:
            await http.request(server.origin, "POST", "/", body=b"b")  # on the reused connection
    assert info.value.response_started
    assert (server.connections, server.requests) == (1, 2)  # the partial answer was not retried


@on_both_loops
async def test_a_new_connection_closed_before_an_answer_is_not_retried() -> None:
    async def hang_up(conn: RawConnection) -> None:
        await conn.read_request()
        conn.writer.close()

    async with RawServer(hang_up) as server, opened() as http:
        with pytest.raises(ConnectionClosedError) as info:
            await http.request(server.origin, "GET", "/")
    assert not info.value.response_started
    assert server.requests == 1


@on_both_loops
async def test_idle_connections_are_closed_after_the_keepalive_time() -> None:
    async with RawServer(keep_answering) as server, opened(keepalive_s=0.05) as http:
        await http.request(server.origin, "GET", "/")
        await server.disconnected.wait()  # the client, not the server, ended the connection
        await http.request(server.origin, "GET", "/")
    assert server.connections == 2


# -- failures ----------------------------------------------------------------------------------


@on_both_loops
async def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    async def answer_second_connection_only(conn: RawConnection) -> None:
        await conn.read_request()
        if conn.index == 0:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nslow")  # then nothing
            await conn.reader.read()  # until the client gives up and closes
            conn.server.disconnected.set()
            return
        await conn.send(ok(b"fast"))
        await conn.server.release.wait()

    async with RawServer(answer_second_connection_only) as server, opened(timeout_s=0.1) as http:
        with pytest.raises(TimeoutError):
            await http.request(server.origin, "GET", "/")
        await server.disconnected.wait()
        assert (await http.request(server.origin, "GET", "/")).body == b"fast"


@on_both_loops
async def test_answers_over_the_limit_fail_without_reading_them_whole() -> None:
    sent: list[int] = []

    async def endless(conn: RawConnection) -> None:
        await conn.read_request()
        chunk = b"%x\r\n%s\r\n" % (16 * 1024, b"z" * 16 * 1024)
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        total = 0
        while total < 256 * LIMIT:  # bounded: far more than the client may take
            await conn.send(chunk)
            total += len(chunk)
        sent.append(total)

    async with Backend() as backend, RawServer(endless) as server, opened() as http:
        for target in (f"/big?n={LIMIT + 1}", "/chunked?parts=100&repeat=200"):
            with pytest.raises(ResponseTooLargeError):
                await http.request(backend.origin, "GET", target)
        with pytest.raises(ResponseTooLargeError):
            await http.request(server.origin, "GET", "/")
    assert sent == []  # the client hung up long before the server could send it all


@on_both_loops
async def test_a_header_section_over_the_limit_is_a_protocol_error() -> None:
    async def huge_head(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\n")
        for _ in range(2 * MAX_HEAD_BYTES // 1024):
            await conn.send(b"X-Filler: " + b"f" * 1012 + b"\r\n")
        await conn.server.release.wait()

    async with RawServer(huge_head) as server, opened() as http:
        with pytest.raises(ProtocolError):
            await http.request(server.origin, "GET", "/")


@on_both_loops
async def test_an_answer_that_is_not_http_is_a_protocol_error() -> None:
    async def garbage(conn: RawConnection) -> None:
        await conn.read_request()
        await conn.send(b"this is not HTTP\r\n\r\n")
        await conn.server.release.wait()

    async with RawServer(garbage) as server, opened() as http:
        with pytest.raises(ProtocolError):
            await http.request(server.origin, "GET", "/")


@on_both_loops
async def test_a_refused_connection_is_a_connect_error() -> None:
    async with RawServer(keep_answering) as server:
        origin = server.origin
    async with opened() as http:
        with pytest.raises(ConnectError):
            await http.request(origin, "GET", "/")
        with pytest.raises(ConnectError):  # the failed connect gave its slot back
            await http.request(origin, "GET", "/")


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/a\r\nX-Evil: 1", {}),
        ("GET", "/a b", {}),
        ("GET", "", {}),
        ("G ET", "/", {}),
        ("GET", "/", {"X-A": "1\r\nX-Evil: 1"}),
        ("GET", "/", {"X-A": "1\n"}),
        ("GET", "/", {"X-A": "\x00"}),
        ("GET", "/", {"X A": "1"}),
        ("GET", "/", {"X-A:": "1"}),
        ("GET", "/", {"Host": "elsewhere"}),
        ("GET", "/", {"content-length": "5"}),
        ("GET", "/", {"Transfer-Encoding": "chunked"}),
    ],
)
def test_requests_that_could_split_or_reframe_are_refused(method: str, target: str, headers: dict[str, str]) -> None:
    async def body() -> None:
        async with RawServer(keep_answering) as server, opened() as http:
            with pytest.raises(InvalidRequestError):
                await http.request(server.origin, method, target, headers=headers)
        assert server.connections == 0  # refused before anything was sent

    asyncio.run(asyncio.wait_for(body(), BOUND_S))


@on_both_loops
async def test_close_fails_requests_in_flight_and_refuses_new_ones() -> None:
    async with Backend() as backend:
        http = client(max_connections=1)
        busy = asyncio.ensure_future(http.request(backend.origin, "GET", "/hold"))
        waiting = asyncio.ensure_future(http.request(backend.origin, "GET", "/echo"))
        await backend.holding(1)
        await http.close()
        for call in (busy, waiting):
            with pytest.raises(HTTPClientError):
                await call
        with pytest.raises(ClientClosedError):
            await http.request(backend.origin, "GET", "/echo")
        await http.close()  # idempotent


def test_origin_from_url() -> None:
    assert Origin.from_url("http://example.org/x") == Origin("http", "example.org", 80, "example.org")
    assert Origin.from_url("https://u:p@Example.org:8443") == Origin("https", "example.org", 8443, "Example.org:8443")
    assert Origin.from_url("http://[::1]:81/") == Origin("http", "::1", 81, "[::1]:81")
    for bad in ("ftp://example.org", "http://", "example.org"):
        with pytest.raises(ValueError):
            Origin.from_url(bad)


# -- TLS and the BackendClient on top ----------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.mark.parametrize("loop", list(LOOPS))
def test_https_with_keep_alive(loop: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def body() -> None:
        backend = Backend()
        await backend._runner.setup()
        await web.TCPSite(backend._runner, "127.0.0.1", 0, ssl_context=server_tls).start()
        origin = Origin.from_url(f"https://127.0.0.1:{backend._runner.addresses[0][1]}")
        try:
            trusting = client(ssl_context=ssl.create_default_context(cafile=str(cert)))
            try:
                for i in range(3):
                    assert (await trusting.request(origin, "POST", "/echo", body=b"tls%d" % i)).body == b"tls%d" % i
            finally:
                await trusting.close()
            default = client()  # the system's trust store does not know the test certificate
            try:
                with pytest.raises(ConnectError):
                    await default.request(origin, "GET", "/echo")
            finally:
                await default.close()
        finally:
            await backend.__aexit__()
        assert len(backend.seen) == 3 and len(backend.peers) == 1

    run(loop, body())


@on_both_loops
async def test_backend_client_keeps_the_base_url_path_and_credentials() -> None:
    async with Backend() as backend:
        base = f"http://user%40x:p%3Aw@{backend.origin.host_header}/prefix"
        client_ = BackendClient(base + "/", timeout_ms=5_000)
        await client_.start()
        try:
            ctx = CommandContext("u-1", "dev-1", "req-1", "user.test", "")
            answer = await client_.forward(Route("user.test", "GET", "/echo"), b'{"q": "a b&c"}', ctx)
            assert await client_.ping()
        finally:
            await client_.close()
    assert answer.result_code == "ok"
    seen = backend.seen[0]
    assert (seen.method, seen.path_qs) == ("GET", "/prefix/echo?q=a+b%26c")
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"user@x:p:w").decode()
