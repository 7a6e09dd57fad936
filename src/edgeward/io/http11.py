"""A small pooled HTTP/1.1 client over ``asyncio.Protocol`` and llhttp (``httptools``).

Why not aiohttp: the backend call is on the hot path of every command, and a keep-alive aiohttp
request costs several times the CPU of this client (``bench/test_backend_client.py`` measures
both). The gateway needs little of what aiohttp offers: one origin, bodies in memory, no
cookies, no redirects, no compression, no proxies. What it does need is here:

- A pool per origin (scheme, host, port) of at most ``max_connections`` connections, reused LIFO
  so surplus connections go idle and are closed after ``keepalive_s``; callers over the limit
  wait in FIFO order.
- One total deadline per request (waiting for a connection, connecting, sending, reading).
- Content-Length, chunked and close-delimited bodies; ``Connection: close`` and HTTP/1.0 answers
  close the connection instead of pooling it.
- A bounded answer: at most ``max_response_bytes`` of body and ``MAX_HEAD_BYTES`` of status line
  and headers are buffered; past that the request fails and the connection is dropped.
- A transparent retry in exactly one case: a *reused* connection that is found closed, or is
  closed or reset by the server, before any byte of the answer arrived. That is the stale
  keep-alive race (the server closed the idle socket as we wrote to it), and the server did not
  answer, so the request is sent once more on a new connection, whatever its method. A failure
  after any byte of the answer, or on a new connection, is never retried: the server may have
  acted on the request.

Failures are ``HTTPClientError`` subclasses, and ``TimeoutError`` when the deadline passes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import re
import ssl
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = (
    "MAX_HEAD_BYTES",
    "ClientClosedError",
    "ConnectError",
    "ConnectionClosedError",
    "HTTP11Client",
    "HTTPClientError",
    "InvalidRequestError",
    "Origin",
    "ProtocolError",
    "Response",
    "ResponseTooLargeError",
)

MAX_HEAD_BYTES = 64 * 1024  # status line and headers; llhttp itself sets no limit
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SET_BY_CLIENT = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_COMMON_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_VALID_NAMES: set[tuple[str, ...]] = set()  # header name tuples already checked (_encode_request)
_MAX_VALID_NAMES = 256


class HTTPClientError(Exception):
    """The request got no usable answer."""


class ConnectError(HTTPClientError):
    """No connection to the origin could be opened (refused, unreachable, DNS, TLS)."""


class ConnectionClosedError(HTTPClientError):
    """The connection was closed or reset before the answer was complete."""

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


class ProtocolError(HTTPClientError):
    """The server's answer is not valid HTTP/1.1 (or its header section is too large)."""


class ResponseTooLargeError(HTTPClientError):
    """The answer's body is over the client's ``max_response_bytes``."""


class InvalidRequestError(HTTPClientError, ValueError):
    """A method, target or header that cannot be sent as is (a CR or LF would split the request)."""


class ClientClosedError(HTTPClientError):
    """The client was closed."""


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host and port, and the Host header that names them."""

    scheme: str
    host: str
    port: int
    host_header: str

    @classmethod
    def from_url(cls, url: str) -> Origin:
        """The origin of an ``http://`` or ``https://`` URL (its path, query and user are ignored)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.netloc.rpartition("@")[2])


class Response:
    """A complete answer: status, raw header pairs in arrival order, and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Stop(Exception):
    """Raised from a parser callback to stop parsing; the request has already been settled."""


class _Connection(asyncio.Protocol):
    """One socket: parses the answer to the one request in flight and settles its future."""

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._deadline = 0.0  # of the request in flight
        # One timer per connection, not per request (see send): armed at _timer_at, which is never
        # later than the deadline of the request in flight.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.lost = pool.loop.create_future()  # set by connection_lost, awaited by close()
        self.closed = False
        self.idle = False  # in the pool's idle deque
        self.discarded = False  # its pool slot has been given back
        self.keep_alive = False  # the last answer allows reusing the connection
        self.idle_since = 0.0
        self._limit = 0
        self._head_only = False
        self._started = False  # a byte of the current answer arrived
        self._headers_done = False
        self._head_bytes = 0
        self._framed = False  # Content-Length or chunked: EOF before the end is an error
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_bytes = 0

    # -- driven by the pool ---------------------------------------------------------------

    def send(
        self,
        data: bytes,
        head_only: bool,
        limit: int,
        deadline: float,
        unsent: list[tuple[asyncio.Transport, bytes]] | None = None,
    ) -> asyncio.Future[Response]:
        """Write one request; the future settles with its answer, its failure or TimeoutError.

        With ``unsent`` (the pool's writes of this loop turn, see ``_Pool._turn_writes``) the
        bytes are queued there instead of written now.

        The deadline is kept by one timer per connection rather than one per request: arming and
        cancelling a loop timer per request cost more than the rest of ``send`` (uvloop allocates
        a libuv timer each time). A settled request leaves the timer armed; when it fires it times
        out the request then in flight if that one's deadline has come, and otherwise moves on to
        that deadline (or stops, on an idle connection). So a keep-alive connection re-arms about
        once per ``timeout_s``, and every request still fails at its own deadline. The rarer
        awaits before ``send`` (a free slot, a connect) run under ``asyncio.timeout_at``.
        """
        transport = self._transport
        if transport is None or self.closed or transport.is_closing():
            raise ConnectionClosedError("connection closed before the request", response_started=False)
        self._limit = limit
        self._head_only = head_only
        self._reset_answer()
        self._started = False
        self.keep_alive = False
        loop = self._pool.loop
        self._waiter = waiter = loop.create_future()
        self._deadline = deadline
        timer = self._timer
        if timer is None or deadline < self._timer_at:  # e.g. a waiter that started earlier
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
        if unsent is None:
            transport.write(data)
        else:
            unsent.append((transport, data))
        return waiter

    def abort(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._pool.sent_since_read = False  # the next request is written at once (_turn_writes)
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        self._started = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(ProtocolError(f"invalid HTTP answer: {exc}"))
            return
        if not self._headers_done and not waiter.done():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(ProtocolError(f"header section over {MAX_HEAD_BYTES} bytes"))

    def eof_received(self) -> bool:
        return False  # close the transport: a half-closed connection is of no use to a client

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.lost.done():
            self.lost.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if exc is None and self._headers_done and not self._framed and not self._head_only and self._status >= 200:
                self._complete()  # a close-delimited body ends here (a 1xx is never the answer)
            else:
                why = f"connection closed: {type(exc).__name__}" if exc else "connection closed by the server"
                self._settle(ConnectionClosedError(why, response_started=self._started))
        self._pool.connection_lost(self)

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.abort()  # a second answer to one request
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(name) == 14 and name.lower() == b"content-length":
            self._framed = True
            if value.isdigit() and int(value) > self._limit:
                self._fail(ResponseTooLargeError(f"Content-Length {int(value)} over {self._limit}"))
                raise _Stop
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            self._framed = value.rstrip().lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()
        if self._status < 100:  # llhttp takes any three digits; RFC 9110 §15 starts at 1xx
            self._fail(ProtocolError(f"invalid HTTP answer: status {self._status}"))
            raise _Stop
        if self._head_only and self._status >= 200:  # a 1xx is interim: the answer follows
            # llhttp cannot be told that an answer to HEAD has no body: settle now and drop the
            # connection rather than mis-parse what follows.
            self._complete()
            self.close()
            raise _Stop

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._limit:
            self._fail(ResponseTooLargeError(f"body over {self._limit} bytes"))
            raise _Stop
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 1xx (100 Continue, 103 Early Hints): the real answer follows
            self._reset_answer()
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -- helpers -------------------------------------------------------------------------

    def _reset_answer(self) -> None:
        self._headers_done = False
        self._head_bytes = 0
        self._framed = False
        self._status = 0
        self._headers = []
        self._body = []
        self._body_bytes = 0

    def _settle(self, outcome: Response | Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if isinstance(outcome, Response):
                waiter.set_result(outcome)
            else:
                waiter.set_exception(outcome)

    def _complete(self) -> None:
        self._settle(Response(self._status, self._headers, b"".join(self._body)))

    def _fail(self, exc: HTTPClientError) -> None:
        self._settle(exc)
        self.abort()

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or self.closed:
            return  # idle: the next send arms it again
        if self._deadline > self._timer_at:  # a later request: its deadline has not come yet
            self._timer = self._pool.loop.call_at(self._deadline, self._on_timer)
            self._timer_at = self._deadline
            return
        self._settle(TimeoutError("no complete answer before the deadline"))
        self.abort()


class _Pool:
    """The connections to one origin. Each connection holds one of ``max_connections`` slots
    from the start of its connect until it is discarded; a freed slot or a released connection
    goes to the oldest waiter first."""

    def __init__(self, client: HTTP11Client, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._client = client
        self._origin = origin
        self._size = 0
        self._idle: collections.deque[_Connection] = collections.deque()  # oldest first
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._conns: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._unsent: list[tuple[asyncio.Transport, bytes]] | None = None  # this turn's writes
        self.sent_since_read = False  # see _turn_writes; cleared by a connection's data_received

    async def request(self, data: bytes, head_only: bool, deadline: float) -> Response:
        limit = self._client.max_response_bytes
        conn = self._take_idle()
        reused = conn is not None
        if conn is None:
            async with asyncio.timeout_at(deadline):
                conn, reused = await self._acquire()
        try:
            try:
                response = await conn.send(data, head_only, limit, deadline, self._turn_writes())
            except ConnectionClosedError as exc:
                if not reused or exc.response_started or conn.discarded:
                    raise
                # The stale keep-alive case: the server did not answer, so ask again on a new
                # connection, which takes over the stale one's slot.
                conn.discarded = True
                conn.abort()
                async with asyncio.timeout_at(deadline):
                    conn = await self._connect()
                response = await conn.send(data, head_only, limit, deadline, self._turn_writes())
        except BaseException:
            self._discard(conn)
            raise
        self._release(conn)
        return response

    def _turn_writes(self) -> list[tuple[asyncio.Transport, bytes]] | None:
        """Where a request's bytes go: None (write now) for the first request since this pool
        last read an answer or flushed, else the list that one callback writes at the end of
        this loop turn.

        Answers read in one poll of the loop wake as many callers, which send their next
        requests in the next turn. Written one by one between the callers' code, each request
        tends to find the backend asleep and pays for waking it (on loopback the sender's system
        call does the receiver's kernel work); queued, they reach it in one burst. The first is
        written at once, so a lone request, or a backend answering one at a time, costs no
        callback and no extra loop turn. At 32 requests in flight (bench/test_backend_client.py)
        this cut the client's CPU per request by about an eighth against a fast loopback backend
        and changed nothing against a saturated aiohttp one, where queueing every request but a
        lone one had cost 10% more.
        """
        if not self.sent_since_read:
            self.sent_since_read = True
            return None
        unsent = self._unsent
        if unsent is None:
            unsent = self._unsent = []
            self.loop.call_soon(self._flush)
        return unsent

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, None
        self.sent_since_read = False
        for transport, data in unsent or ():
            if not transport.is_closing():  # dropped meanwhile: its request fails with it
                transport.write(data)

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection, closing any found expired or closed."""
        idle = self._idle
        if idle:
            now = self.loop.time()
            keepalive = self._client.keepalive_s
            while idle:
                conn = idle.pop()
                conn.idle = False
                if not conn.closed and now - conn.idle_since < keepalive:
                    return conn
                self._discard(conn, graceful=True)
        return None

    async def _acquire(self) -> tuple[_Connection, bool]:
        """A new connection, or the next one released or slot freed, and whether it was used before."""
        if self._size < self._client.max_connections:
            self._size += 1
            return await self._connect(), False
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            got = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()  # handed over as we were cancelled: pass it on
                if handed is None:
                    self._free_slot()
                else:
                    self._release(handed)
            else:
                with contextlib.suppress(ValueError):  # already skipped by a hand-over
                    self._waiters.remove(waiter)
            raise
        if got is None:
            return await self._connect(), False
        return got, True

    async def _connect(self) -> _Connection:
        """A new connection in a slot the caller holds; the slot is freed when this fails."""
        try:
            origin = self._origin
            tls = self._client.ssl_context() if origin.scheme == "https" else None
            try:
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
            except (OSError, ssl.SSLError) as exc:  # SSLError is an OSError; named for the reader
                raise ConnectError(f"cannot connect to {origin.host_header}: {exc}") from exc
        except BaseException:
            self._free_slot()
            raise
        if self._closed:  # closed while connecting
            conn.discarded = True
            conn.abort()
            self._free_slot()
            raise ClientClosedError("the client is closed")
        self._conns.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        """Back to the pool after a complete answer: to a waiter, to the idle deque, or closed."""
        if not conn.keep_alive or conn.closed or self._closed:
            self._discard(conn, graceful=True)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        conn.idle = True
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(conn.idle_since + self._client.keepalive_s, self._sweep)

    def _discard(self, conn: _Connection, *, graceful: bool = False) -> None:
        """Close a connection and give its slot back (once, however often this is called)."""
        if conn.idle:
            conn.idle = False
            self._idle.remove(conn)
        if graceful:
            conn.close()
        else:
            conn.abort()
        if not conn.discarded:
            conn.discarded = True
            self._free_slot()

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot now belongs to the waiter
                return
        self._size -= 1

    def _sweep(self) -> None:
        """Close connections idle for ``keepalive_s``, before the server does (see backend.py)."""
        self._sweeper = None
        keepalive = self._client.keepalive_s
        expired = self.loop.time() - keepalive
        while self._idle and self._idle[0].idle_since <= expired:
            self._discard(self._idle[0], graceful=True)
        if self._idle:
            self._sweeper = self.loop.call_at(self._idle[0].idle_since + keepalive, self._sweep)

    def connection_lost(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        if conn.idle:  # the server closed an idle connection: forget it now
            self._discard(conn)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ClientClosedError("the client is closed"))
        conns = list(self._conns)
        for conn in conns:
            self._discard(conn)
        if conns:
            # Let the transports finish closing so no socket outlives the loop.
            await asyncio.wait([conn.lost for conn in conns], timeout=5)


class HTTP11Client:
    """Pooled HTTP/1.1 requests with one deadline each; see the module docstring.

    ``timeout_s`` bounds each request as a whole; ``max_connections`` is per origin;
    ``max_response_bytes`` bounds each body; ``ssl_context`` is used for https origins (the
    system's default context when None). Use from one event loop; ``close()`` when done.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        max_connections: int = 256,
        keepalive_s: float = 4.0,
        max_response_bytes: int = 4 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self.max_response_bytes = max_response_bytes
        self._ssl_context = ssl_context
        self._pools: dict[Origin, _Pool] = {}
        self._last: tuple[Origin, _Pool] | None = None  # the last origin asked for, and its pool
        self._closed = False

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """Send ``method target`` to ``origin`` and read the whole answer within ``timeout_s``.

        ``target`` is the request target as sent (path and query, already percent-encoded).
        Host and Content-Length are set here and may not be in ``headers``; Content-Length is
        sent for a body, and for POST, PUT and PATCH without one. Any status is an answer.
        """
        if self._closed:
            raise ClientClosedError("the client is closed")
        data = _encode_request(method, target, origin.host_header, headers, body)
        last = self._last
        if last is not None and last[0] is origin:  # callers reuse one Origin: skip hashing it
            pool = last[1]
        else:
            found = self._pools.get(origin)
            if found is None:
                found = _Pool(self, origin, asyncio.get_running_loop())
                self._pools[origin] = found
            pool = found
            self._last = (origin, pool)
        return await pool.request(data, method == "HEAD", pool.loop.time() + self.timeout_s)

    async def close(self) -> None:
        """Close every connection; requests in flight fail with an ``HTTPClientError``."""
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        self._last = None
        for pool in pools:
            await pool.close()


def _encode_request(
    method: str, target: str, host: str, headers: Mapping[str, str] | None, body: bytes | None
) -> bytes:
    """The request's bytes, refusing anything that could end a line or the header section early.

    Checked in C-level passes over joined strings rather than per header (the hot path): the
    values are printable (no CR, LF, NUL or other control character; a tab is refused too), the
    names are tokens and none is one this client sets itself. A caller sends the same few sets of
    header names again and again, so a set of names found valid is remembered (``_VALID_NAMES``)
    and only the values are checked per request.
    """
    if (method not in _COMMON_METHODS and not _TOKEN.fullmatch(method)) or not _is_target(target):
        raise InvalidRequestError(f"cannot send {method!r} {target!r}")
    fields = ""
    if headers:
        names = tuple(headers)
        if not ("".join(headers.values()).isprintable() and (names in _VALID_NAMES or _valid_names(names))):
            raise InvalidRequestError(f"cannot send these headers: {', '.join(map(repr, headers))}")
        fields = "\r\n".join(map(": ".join, headers.items())) + "\r\n"
    if body is None and method not in _BODY_METHODS:
        return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{fields}\r\n".encode()
    body = body or b""
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{fields}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _valid_names(names: tuple[str, ...]) -> bool:
    """Whether these header names may be sent; a valid tuple is remembered (a bounded set)."""
    if not (_TOKEN.fullmatch("".join(names)) and _SET_BY_CLIENT.isdisjoint(map(str.lower, names))):
        return False
    if len(_VALID_NAMES) >= _MAX_VALID_NAMES:  # names chosen per request: start over, never grow
        _VALID_NAMES.clear()
    _VALID_NAMES.add(names)
    return True


def _is_target(target: str) -> bool:
    return bool(target) and target.isascii() and target.isprintable() and " " not in target
