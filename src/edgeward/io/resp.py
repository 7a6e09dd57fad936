"""A minimal auto-pipelining Redis connection: ``asyncio.Protocol`` plus ``hiredis.Reader``.

Why not redis-py: the replay store sends one small batch of ``SET NX PX`` per event-loop turn,
and a redis-py pipeline spends far more CPU per command (command objects, response callbacks,
a pooled connection checked out and back, a reader task) than the wire work itself. Here a
command is packed in C (``hiredis.pack_command``), every command issued in one loop turn goes
out in one ``transport.write``, and replies are parsed in C and matched to futures in FIFO
order, which is all Redis guarantees and all we need (``bench/test_replay_client.py``).

Failure model, meant for callers that fail closed:

- One connection, opened lazily by the first command and again by the first command after it
  broke, under a connect timeout: a Redis restart heals without anybody calling ``connect``.
- Each write has a deadline (the socket timeout). When the oldest unanswered command misses
  it, every pending command fails with ``CommandTimeout`` and the connection is dropped: a reply
  that comes later could be matched to the wrong command.
- A connection that closes, resets or sends garbage fails its pending commands with
  ``ConnectionLost``: they were written, so Redis may or may not have run them.
- Error replies (``-OOM ...``) are answers, not failures: they come back as
  ``hiredis.ReplyError`` values in place and the connection stays up.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

__all__ = (
    "Arg",
    "CommandTimeout",
    "ConnectionLost",
    "Endpoint",
    "Reply",
    "RespConnection",
    "RespError",
    "parse_url",
)

Arg = bytes | str | int | float | memoryview
Reply = bytes | int | None | list["Reply"] | hiredis.ReplyError
# The stub types the argument as a 1-tuple; it packs any number of arguments.
_pack = cast(Callable[[Sequence[Arg]], bytes], hiredis.pack_command)
# What ``Reader.gets`` returns while no reply is complete. hiredis's default is False, which is
# also its reply to a RESP3 boolean (``#f``): a server sending one would have that reply dropped
# and every later reply matched to the command before its own (tests/fuzz, docs/fuzzing.md).
_INCOMPLETE = object()


class RespError(Exception):
    """Redis gave no answer: cannot connect, connection lost or closed, or too slow."""


class ConnectionLost(RespError):
    """The connection broke after the command was written: Redis may or may not have run it."""


class CommandTimeout(RespError):
    """No reply within the socket timeout; the connection was dropped."""


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect, from ``parse_url``."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket instead of host:port
    tls: bool = False
    db: int = 0
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    def handshake(self) -> list[tuple[Arg, ...]]:
        """AUTH and SELECT, sent first on every new connection (nothing when not needed)."""
        commands: list[tuple[Arg, ...]] = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, verified) or
    ``unix:///path?db=N&password=P``. Other query parameters are refused, not ignored, so a
    setting meant for redis-py (say ``ssl_cert_reqs``) cannot silently stop applying."""
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"db", "password"}
    if unknown:
        raise ValueError(f"unsupported Redis URL parameters: {', '.join(sorted(unknown))}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else query.get("password")
    db_text = query.get("db") or ("" if parts.scheme == "unix" else parts.path.strip("/"))
    if not (db_text or "0").isdigit():
        raise ValueError(f"Redis database must be a number, got {db_text!r}")
    db = int(db_text or 0)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// Redis URL needs a socket path")
        return Endpoint(path=unquote(parts.path), db=db, username=username, password=password)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {parts.scheme!r}")
    return Endpoint(
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        tls=parts.scheme == "rediss",
        db=db,
        username=username,
        password=password,
    )


class _Unit:
    """Commands sent together and answered by one future, with the list of their replies."""

    __slots__ = ("count", "deadline", "future", "payload", "replies")

    def __init__(self, future: asyncio.Future[list[Reply]], payload: bytes, count: int) -> None:
        self.future = future
        self.payload = payload
        self.count = count
        self.replies: list[Reply] = []
        self.deadline = 0.0


class _Protocol(asyncio.Protocol):
    """One TCP connection: writes units, parses replies, enforces the deadline of the oldest."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._reader = hiredis.Reader(notEnoughData=_INCOMPLETE)
        self._waiting: collections.deque[_Unit] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = loop.create_future()
        self.broken = False  # no more writes: lost, timed out or closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def send(self, units: list[_Unit]) -> None:
        """Write ``units`` in one call; their replies are due within the socket timeout."""
        assert self._transport is not None and not self.broken
        deadline = self._loop.time() + self._timeout
        for unit in units:
            unit.deadline = deadline
        self._waiting.extend(units)
        self._transport.write(units[0].payload if len(units) == 1 else b"".join([u.payload for u in units]))
        if self._timer is None:  # one timer at a time, not one per write: see _check_deadline
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = self._reader.gets()
            except (hiredis.ProtocolError, TypeError) as exc:  # TypeError: a RESP3 map keyed by an aggregate
                self.fail(ConnectionLost(f"Redis protocol error: {exc}"), abort=True)
                return
            if reply is _INCOMPLETE:
                return
            if not waiting:
                self.fail(ConnectionLost("Redis sent a reply nobody asked for"), abort=True)
                return
            unit = waiting[0]
            unit.replies.append(reply)
            if len(unit.replies) == unit.count:
                waiting.popleft()
                if not unit.future.done():  # its caller may have been cancelled
                    unit.future.set_result(unit.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionLost(f"connection to Redis lost: {exc!r}" if exc else "Redis closed the connection"))
        if not self._closed.done():
            self._closed.set_result(None)

    def _check_deadline(self) -> None:
        """Fired at the deadline of what was the oldest unit. Deadlines grow along the FIFO, so
        only the head needs watching; a timer is re-armed for the new head instead of one timer
        per write, which keeps the busy path free of timer handles."""
        self._timer = None
        if not self._waiting or self.broken:
            return
        head = self._waiting[0].deadline
        if self._loop.time() >= head:
            self.fail(CommandTimeout(f"no reply from Redis within {self._timeout:g} s"), abort=True)
        else:
            self._timer = self._loop.call_at(head, self._check_deadline)

    def fail(self, error: RespError, *, abort: bool = False) -> None:
        """Fail every pending unit with ``error`` and stop using the connection."""
        self.broken = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, collections.deque()
        for unit in waiting:
            if not unit.future.done():
                unit.future.set_exception(error)
        if self._transport is None:
            return
        if abort:  # discard the buffers: later bytes on this socket could not be matched anyway
            self._transport.abort()
        else:
            self._transport.close()

    async def wait_closed(self) -> None:
        await self._closed

    def pending(self) -> list[asyncio.Future[list[Reply]]]:
        """The futures of the units written and not answered yet."""
        return [unit.future for unit in self._waiting]


class RespConnection:
    """An auto-pipelining Redis connection.

    ``pipeline``/``execute`` only queue: the first command of a loop turn schedules a flush with
    ``call_soon``, which writes everything queued by then at once, so concurrent callers share
    one write and one round trip without any timer. A command cancelled before the flush is not
    sent. Nothing is retried here: whether a command that may have run can be sent again is the
    caller's call (``ConnectionLost`` versus ``CommandTimeout``).
    """

    def __init__(self, url: str, *, socket_timeout_ms: int = 1000, connect_timeout_ms: int | None = None) -> None:
        if socket_timeout_ms <= 0 or (connect_timeout_ms is not None and connect_timeout_ms <= 0):
            raise ValueError("timeouts must be positive")
        self.endpoint = parse_url(url)
        self._handshake = self.endpoint.handshake()
        self._timeout = socket_timeout_ms / 1000
        self._connect_timeout = (connect_timeout_ms or socket_timeout_ms) / 1000
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._queued: list[_Unit] = []  # invariant: non-empty => a flush is scheduled or a connect runs
        self._closed = False
        self.writes = 0  # flushes that wrote commands (the handshake not counted)
        self.commands_written = 0

    def pipeline(self, commands: Iterable[Sequence[Arg]]) -> asyncio.Future[list[Reply]]:
        """Queue ``commands`` for this turn's write; the future gets their replies in order.

        Error replies are in the list as ``hiredis.ReplyError``; the future fails with a
        ``RespError`` when there is no answer at all. Call it with the event loop running.
        """
        packed = [_pack(command) for command in commands]
        if not packed:
            raise ValueError("no commands")
        return self._submit(b"".join(packed), len(packed))

    def send(self, command: Sequence[Arg]) -> asyncio.Future[list[Reply]]:
        """``pipeline`` of one command, without the list: the replay store's hot path."""
        return self._submit(_pack(command), 1)

    async def execute(self, *args: Arg) -> Reply:
        """One command, pipelined with whatever else this loop turn sends."""
        return (await self._submit(_pack(args), 1))[0]

    async def ping(self) -> bool:
        """Readiness: True when Redis answers PING now (connecting first if needed)."""
        try:
            return await self.execute("PING") == b"PONG"
        except RespError:
            return False

    async def drain(self) -> None:
        """Wait until every command submitted so far has its replies or its failure.

        Bounded by the connect and socket timeouts: each command is written within the first and
        answered or failed within the second.
        """
        futures = [unit.future for unit in self._queued]
        if self._protocol is not None:
            futures += self._protocol.pending()
        if futures:
            await asyncio.wait(futures)

    async def close(self) -> None:
        """Fail queued and pending commands, then close the socket and wait until it is closed."""
        self._closed = True
        self._fail_queued(RespError("Redis connection closed"))
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.wait([self._connecting])
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.fail(RespError("Redis connection closed"))
            await protocol.wait_closed()

    def _submit(self, payload: bytes, count: int) -> asyncio.Future[list[Reply]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Reply]] = loop.create_future()
        if self._closed:
            future.set_exception(RespError("Redis connection closed"))
            return future
        if not self._queued and self._connecting is None:
            loop.call_soon(self._flush)
        self._queued.append(_Unit(future, payload, count))
        return future

    def _flush(self) -> None:
        if self._closed or self._connecting is not None:
            return  # close() failed the queue / the connect task flushes when it is done
        protocol = self._protocol
        if protocol is None or protocol.broken:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return
        units = [unit for unit in self._queued if not unit.future.done()]
        self._queued = []
        if units:
            self.writes += 1
            self.commands_written += sum(unit.count for unit in units)
            protocol.send(units)

    async def _connect(self) -> None:
        """Open a connection and run the handshake under the connect timeout, then flush the queue;
        on failure fail the queue (the next command tries again: reconnection is lazy)."""
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                if endpoint.path is not None:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(loop, self._timeout), endpoint.path
                    )
                else:
                    tls = ssl.create_default_context() if endpoint.tls else None
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(loop, self._timeout), endpoint.host, endpoint.port, ssl=tls
                    )
                if self._handshake:
                    unit = _Unit(loop.create_future(), b"".join(map(_pack, self._handshake)), len(self._handshake))
                    protocol.send([unit])
                    for reply in await unit.future:
                        if isinstance(reply, hiredis.ReplyError):
                            raise RespError(f"Redis refused the handshake: {reply}")
        except BaseException as exc:
            self._connecting = None
            if protocol is not None:
                protocol.fail(RespError("handshake failed"), abort=True)
            if not isinstance(exc, Exception):  # cancelled by close()
                raise
            error = exc if isinstance(exc, RespError) else RespError(f"cannot connect to Redis at {endpoint}: {exc!r}")
            self._fail_queued(error)
            return
        self._connecting = None
        if protocol.broken:  # closed right after the handshake (say Redis at maxclients): no retry loop
            self._fail_queued(RespError(f"Redis at {endpoint} closed the connection at once"))
            return
        self._protocol = protocol
        self._flush()

    def _fail_queued(self, error: RespError) -> None:
        queued, self._queued = self._queued, []
        for unit in queued:
            if not unit.future.done():
                unit.future.set_exception(error)
