"""edgeward.io.resp against a real redis-server: one write per loop turn, FIFO replies, error replies,
Redis stopped and restarted, a server that never answers, AUTH/SELECT, close with pending commands,
and the replay store sending a batch lost on a broken connection once more (never twice).

Every scenario runs on asyncio's own loop and on uvloop (what ``edgeward serve`` uses): the
``run`` fixture drives the coroutine, since loop parametrisation hooks live in conftests only.

Timeouts never decide a test by the machine's speed: a connection to a Redis that answers gets
``HEALTHY_TIMEOUT_MS``, which a loaded machine cannot miss, and a test about a timeout points a
short one at a server that never answers, so it fires whatever the speed. ``GUARD_S`` only turns
a hang into a clean failure; it is no assertion of speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import uvloop

from edgeward.gateway.replay import RedisReplayStore
from edgeward.io import resp
from edgeward.io.resp import CommandTimeout, ConnectionLost, Endpoint, RespConnection, RespError, parse_url
from edgeward.reasons import Rejection
from tests.support.redis_server import RedisServer

Run = Callable[[Coroutine[Any, Any, None]], None]
HEALTHY_TIMEOUT_MS = 30_000
GUARD_S = 60
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    def run(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            runner.run(asyncio.wait_for(coro, GUARD_S))  # bounded, whatever goes wrong

    return run


@contextlib.asynccontextmanager
async def connection(url: str, **kw: int) -> AsyncIterator[RespConnection]:
    kw.setdefault("socket_timeout_ms", HEALTHY_TIMEOUT_MS)
    conn = RespConnection(url, **kw)
    try:
        yield conn
    finally:
        await conn.close()


async def pipelined(conn: RespConnection, commands: list[tuple[resp.Arg, ...]]) -> list[resp.Reply]:
    return await conn.pipeline(commands)


async def outcome(aw: asyncio.Future[Any] | Coroutine[Any, Any, Any]) -> object:
    """The result, or the type of the exception."""
    try:
        return await aw
    except Exception as exc:
        return type(exc)


async def refused(aw: asyncio.Future[Any] | Coroutine[Any, Any, Any]) -> bool:
    """True when ``aw`` failed because nothing listens: failed at once, so not by a timeout."""
    try:
        await aw
    except RespError as exc:
        return type(exc) is RespError and "ConnectionRefusedError" in str(exc)
    return False


# --- URLs ------------------------------------------------------------------------------------


def test_parse_url() -> None:
    assert parse_url("redis://10.0.0.5:6380/2") == Endpoint(host="10.0.0.5", port=6380, db=2)
    assert parse_url("redis://localhost") == Endpoint()
    assert parse_url("redis://:p%40ss@h/0") == Endpoint(host="h", password="p@ss")
    assert parse_url("rediss://alice:pw@h:7000") == Endpoint(
        host="h", port=7000, tls=True, username="alice", password="pw"
    )
    assert parse_url("unix:///run/redis.sock?db=3&password=pw") == Endpoint(path="/run/redis.sock", db=3, password="pw")
    assert parse_url("redis://:pw@h/3").handshake() == [("AUTH", "pw"), ("SELECT", 3)]
    assert parse_url("redis://u:pw@h").handshake() == [("AUTH", "u", "pw")]
    assert parse_url("redis://h/0").handshake() == []
    for bad in ("http://h", "redis://h/x", "redis://h/0?ssl_cert_reqs=none", "unix://"):
        with pytest.raises(ValueError):
            parse_url(bad)
    with pytest.raises(ValueError):
        RespConnection("redis://h", socket_timeout_ms=0)


# --- pipelining and replies -------------------------------------------------------------------


@dataclasses.dataclass
class CountingTransport:
    """Wraps the real transport and records each write."""

    inner: asyncio.Transport
    writes: list[bytes]

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every ``transport.write`` of every edgeward.io.resp connection in the test."""
    seen: list[bytes] = []
    made = resp._Protocol.connection_made

    def connection_made(self: resp._Protocol, transport: asyncio.BaseTransport) -> None:
        made(self, CountingTransport(transport, seen))  # type: ignore[arg-type]

    monkeypatch.setattr(resp._Protocol, "connection_made", connection_made)
    return seen


def test_one_loop_turn_is_one_write(run: Run, redis_server: RedisServer, writes: list[bytes]) -> None:
    async def scenario() -> None:
        async with connection(redis_server.url) as conn:
            # First turn: connecting; everything queued meanwhile still goes out as one write.
            assert await asyncio.gather(*(conn.execute("SET", f"k{i}", i) for i in range(50))) == [b"OK"] * 50
            assert len(writes) == 1 and writes[0].count(b"SET") == 50

            # Next turn: every task's command queued before the flush, in one write, minus the one
            # cancelled meanwhile.
            gets = [asyncio.ensure_future(conn.execute("GET", f"k{i}")) for i in range(40)]
            incrs = asyncio.ensure_future(pipelined(conn, [("INCR", "k1"), ("INCR", "k1"), ("GET", "k1")]))
            cancelled = asyncio.ensure_future(conn.execute("SET", "cancelled", 1))
            await asyncio.sleep(0)  # all of them queued; the flush is scheduled after this
            cancelled.cancel()
            assert await asyncio.gather(*gets) == [str(i).encode() for i in range(40)]
            assert await incrs == [2, 3, b"3"]
            assert len(writes) == 2 and writes[1].count(b"\r\nGET\r\n") == 41 and b"cancelled" not in writes[1]
            assert cancelled.cancelled()
            assert await conn.execute("EXISTS", "cancelled") == 0
            assert len(writes) == 3  # one more turn, one more write

    run(scenario())


def test_send_is_a_pipeline_of_one_and_writes_are_counted(
    run: Run, redis_server: RedisServer, writes: list[bytes]
) -> None:
    async def scenario() -> None:
        async with connection(redis_server.url) as conn:
            assert await conn.execute("PING") == b"PONG"  # connected
            before, counted = len(writes), conn.writes
            first, second = conn.send(("SET", "a", 1)), conn.send(("GET", "a"))
            assert await first == [b"OK"] and await second == [b"1"]
            assert len(writes) == before + 1  # one turn, one write
            assert (conn.writes - counted, conn.commands_written) == (1, 3)

    run(scenario())


def test_drain_waits_for_every_submitted_command(run: Run, redis_server: RedisServer) -> None:
    async def scenario() -> None:
        conn = RespConnection(redis_server.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
        assert await conn.execute("PING") == b"PONG"
        sent = conn.send(("SET", "k", 1))
        await asyncio.sleep(0)  # flushed: written, not answered yet
        queued = conn.send(("SET", "q", 1))  # not written yet
        await conn.drain()
        assert sent.result() == [b"OK"] and queued.result() == [b"OK"]
        await conn.close()

    run(scenario())


def test_replies_match_commands_fifo_under_concurrency(run: Run, redis_server: RedisServer) -> None:
    async def client(conn: RespConnection, n: int) -> None:
        for i in range(30):
            payload = f"{n}:{i}:" + "x" * (n * 97 % 3000)  # replies of mixed sizes split across reads
            assert await conn.execute("ECHO", payload) == payload.encode()
            if i % 7 == n % 7:
                await asyncio.sleep(0)

    async def counter(conn: RespConnection) -> None:
        seen = []
        for _ in range(20):
            replies = await conn.pipeline([("INCR", "counter")] * 5)
            seen.extend(replies)
        assert seen == list(range(1, 101))  # this client's INCRs only, in order

    async def scenario() -> None:
        async with connection(redis_server.url) as conn:
            await asyncio.gather(*(client(conn, n) for n in range(40)), counter(conn))

    run(scenario())


def test_error_replies_are_answers_not_failures(run: Run, redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with connection(redis_server.url) as conn:
            client_id = await conn.execute("CLIENT", "ID")
            set_, incr, get = await conn.pipeline([("SET", "k", "text"), ("INCR", "k"), ("GET", "k")])
            assert (set_, get) == (b"OK", b"text")
            assert isinstance(incr, hiredis.ReplyError) and "not an integer" in str(incr)
            assert isinstance(await conn.execute("NOSUCHCOMMAND"), hiredis.ReplyError)
            await conn.execute("CONFIG", "SET", "maxmemory", "1")  # noeviction: writes refused
            try:
                oom = await conn.execute("SET", "k2", "v", "NX", "PX", 1000)
            finally:
                await conn.execute("CONFIG", "SET", "maxmemory", "0")
            assert isinstance(oom, hiredis.ReplyError) and str(oom).startswith("OOM")
            assert await conn.execute("CLIENT", "ID") == client_id  # still the same connection

    run(scenario())


# --- failures and recovery --------------------------------------------------------------------


def test_redis_stopped_fails_closed_and_restarted_recovers(run: Run, redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with connection(redis_server.url) as conn:
            assert await conn.execute("SET", "before", 1) == b"OK"
            in_flight = asyncio.ensure_future(conn.execute("BLPOP", "nothing", 0))
            for _ in range(5):
                await asyncio.sleep(0)  # written; Redis holds it
            redis_server.stop()
            assert await outcome(in_flight) is ConnectionLost  # written, then the connection broke
            # Down: refused at once, every time, never a wait for the timeout.
            assert await refused(conn.execute("SET", "down", 1))
            assert await asyncio.gather(*(refused(conn.execute("PING")) for _ in range(5))) == [True] * 5
            assert await conn.ping() is False
            redis_server.start()  # same port, empty
            assert await conn.execute("GET", "before") is None
            assert await conn.execute("SET", "after", 1) == b"OK"
            assert await conn.ping() is True

    run(scenario())


@dataclasses.dataclass
class SilentServer:
    """Accepts connections and reads everything, never answers."""

    port: int
    connections: int = 0
    received: int = 0  # bytes
    closed_by_client: int = 0
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def count(self, *, connection: int = 0, received: int = 0, closed: int = 0) -> None:
        self.connections += connection
        self.received += received
        self.closed_by_client += closed
        self.changed.set()

    async def until(self, predicate: Callable[[SilentServer], bool]) -> None:
        while not predicate(self):
            self.changed.clear()
            await self.changed.wait()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[SilentServer]:
    state = SilentServer(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.count(connection=1)
        try:
            while data := await reader.read(65536):
                state.count(received=len(data))
            state.count(closed=1)
        except ConnectionResetError:  # aborted: RST instead of FIN
            state.count(closed=1)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def test_a_server_that_never_answers_times_out_and_is_dropped(run: Run) -> None:
    """The timeouts fire whatever the machine's speed: nothing ever answers. The one speed assumption
    left is that the few loop turns from the first write to the second take under the 1 s timeout
    (so the second goes out on the same connection): 200 ms left that to a loaded machine's luck."""

    async def scenario() -> None:
        async with silent_server() as server, connection(server.url, socket_timeout_ms=1000) as conn:
            first = asyncio.ensure_future(conn.execute("SET", "a", 1))
            await server.until(lambda s: s.received > 0)  # written, its deadline running
            second = conn.send(("SET", "b", 1))  # a later write, same connection
            async with asyncio.timeout(GUARD_S):
                assert await outcome(first) is CommandTimeout
                assert await outcome(second) is CommandTimeout  # its reply could not be trusted either
                await server.until(lambda s: s.closed_by_client == 1)  # the connection was dropped
                assert server.connections == 1
                assert await conn.ping() is False  # the next command reconnects, and times out again
                assert server.connections == 2
            # The handshake runs under the connect timeout: a plain RespError, where the socket
            # timeout (never reached) would have failed it with CommandTimeout.
            url = f"redis://:pw@127.0.0.1:{server.port}/1"
            async with asyncio.timeout(GUARD_S), connection(url, connect_timeout_ms=200) as authed:
                assert await outcome(authed.execute("PING")) is RespError
                await server.until(lambda s: s.closed_by_client == 3)

    run(scenario())


def test_close_fails_pending_and_later_commands(run: Run) -> None:
    async def scenario() -> None:
        async with silent_server() as server:
            conn = RespConnection(server.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)  # closed, never timed out
            sent = asyncio.ensure_future(conn.execute("GET", "a"))
            await server.until(lambda s: s.received > 0)  # written, waiting for its reply
            queued = asyncio.ensure_future(conn.execute("GET", "b"))
            await asyncio.sleep(0)  # queued, not flushed yet
            async with asyncio.timeout(GUARD_S):
                await conn.close()
                assert await outcome(sent) is RespError
                assert await outcome(queued) is RespError
                assert await outcome(conn.execute("PING")) is RespError
                assert await conn.ping() is False
                await server.until(lambda s: s.closed_by_client == 1)
            await conn.close()  # idempotent
            # Closed while still connecting (the handshake never gets an answer).
            connecting = RespConnection(f"redis://:pw@127.0.0.1:{server.port}", socket_timeout_ms=HEALTHY_TIMEOUT_MS)
            waiting = asyncio.ensure_future(connecting.execute("PING"))
            await server.until(lambda s: s.connections == 2 and s.received > len(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"))
            async with asyncio.timeout(GUARD_S):
                await connecting.close()
                assert await outcome(waiting) is RespError

    run(scenario())


# --- AUTH and SELECT --------------------------------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own: a password must not leak into the shared one."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


def test_auth_and_db_selection(run: Run, private_redis: RedisServer) -> None:
    async def scenario() -> None:
        base = f"127.0.0.1:{private_redis.port}"
        async with connection(f"redis://{base}") as admin:
            assert await admin.execute("ACL", "SETUSER", "alice", "on", ">alicepw", "~*", "+@all") == b"OK"
            assert await admin.execute("CONFIG", "SET", "requirepass", "secret") == b"OK"
        async with connection(f"redis://:secret@{base}/3") as conn:
            assert await conn.execute("SET", "in-db-3", 1) == b"OK"
            info = await conn.execute("CLIENT", "INFO")
            assert isinstance(info, bytes) and b" db=3 " in info
        async with connection(f"redis://alice:alicepw@{base}/0") as conn:
            assert await conn.execute("ACL", "WHOAMI") == b"alice"
            assert await conn.execute("EXISTS", "in-db-3") == 0
            assert await conn.execute("SELECT", 3) == b"OK"
            assert await conn.execute("EXISTS", "in-db-3") == 1
        for url in (f"redis://:wrong@{base}/3", f"redis://{base}/3"):
            async with asyncio.timeout(GUARD_S), connection(url) as conn:
                assert await outcome(conn.execute("PING")) is RespError  # refused handshake or NOAUTH
                assert await conn.ping() is False

    run(scenario())


def test_unix_socket_url(run: Run, tmp_path: Path) -> None:
    """The unix:// path: a minimal server on a unix socket answering PING (TCP is the real Redis above)."""

    async def scenario() -> None:
        async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(4096):
                writer.write(b"+PONG\r\n" * data.count(b"PING"))
            writer.close()

        path = tmp_path / "redis.sock"
        server = await asyncio.start_unix_server(pong, str(path))
        try:
            async with connection(f"unix://{path}") as conn:
                assert await conn.ping() is True
        finally:
            server.close()
            await server.wait_closed()

    run(scenario())


# --- the replay store over resp ------------------------------------------------------------


@dataclasses.dataclass
class HangingUpServer:
    """Its first ``hang_ups`` connections close on their first command, once it was written (so
    Redis might have run it); later ones answer every SET with OK."""

    hang_ups: int
    port: int = 0
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answering = self.connections > self.hang_ups
        try:
            while (data := await reader.read(65536)) and answering:
                writer.write(b"+OK\r\n" * data.count(b"\r\nSET\r\n"))
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def hanging_up_server(hang_ups: int) -> AsyncIterator[HangingUpServer]:
    state = HangingUpServer(hang_ups)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def test_replay_store_sends_a_lost_batch_once_more(run: Run) -> None:
    async def scenario() -> None:
        for hang_ups in (1, 2):
            async with hanging_up_server(hang_ups) as server:
                store = RedisReplayStore(f"redis://127.0.0.1:{server.port}", socket_timeout_ms=HEALTHY_TIMEOUT_MS)
                try:
                    async with asyncio.timeout(GUARD_S):
                        results = await asyncio.gather(
                            *(store.reserve("dev", f"r{i}", 60_000) for i in range(3)), return_exceptions=True
                        )
                finally:
                    await store.close()
                assert server.connections == 2  # never a third try
            if hang_ups == 1:  # lost on the first connection, answered on the second
                assert results == [True] * 3
                assert (store.stats.pipelines, store.stats.commands, store.stats.errors) == (2, 6, 0)
            else:  # lost twice: rejected
                assert all(isinstance(r, Rejection) for r in results)
                assert (store.stats.pipelines, store.stats.commands, store.stats.errors) == (2, 6, 3)

    run(scenario())
