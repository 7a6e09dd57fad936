"""Client CPU per backend call: the candidates for BackendClient's HTTP client, side by side.

An aiohttp.web echo server runs in a subprocess (on uvloop), so ``time.process_time`` in this
process counts the client side only: building and writing the request, the event loop's work
for the socket, parsing the answer, pooling and timeouts. Each candidate sends the same
sequential keep-alive POSTs of a ~200-byte JSON body with the headers BackendClient.forward
sends, and checks the echoed body. Candidates are measured in alternating rounds of the same
run, on uvloop (what ``edgeward serve`` runs) and on asyncio's own loop, and each one's best
round is kept. Only ratios against aiohttp are asserted, never absolute times.

Candidates:
- aiohttp: a ClientSession configured and called as BackendClient used it before http11.
- http11: ``edgeward.io.http11.HTTP11Client`` (pool, deadline, size bound, validation).
- BackendClient.forward: the whole backend call on the hot path (headers, traceparent, answer
  mapping) over http11.
- asyncio streams: a bare HTTP/1.1 exchange on StreamReader/StreamWriter, with no pool, no
  deadline and no header validation: a floor for "hand-written over asyncio", not a client.
- httpx, aiosonic: measured when importable (they are not dependencies of edgeward).

``test_http11_against_a_bare_protocol`` answers another question: what the client costs over the
least a hand-written client must do, at the gateway's load (32 requests in flight, as in
bench.e2e) rather than one at a time. Against a minimal uvloop + httptools echo server in a
subprocess, it alternates rounds of http11, BackendClient.forward and a bare ``asyncio.Protocol``
on uvloop (one connection per caller, prepared request bytes, httptools parsing the answer, a
future resolved per request: no pool, no deadline, no validation, no bounds). Each round's
client CPU (user + system, from getrusage) is divided by the bare protocol's of the same round;
the median, min and max of those ratios are printed. Reported, not budgeted: on a shared machine
a round's ratio moves with the neighbours' load.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httptools
import orjson
import pytest
import uvloop
from yarl import URL

from edgeward.gateway.backend import BackendClient, CommandContext
from edgeward.gateway.routes import Route
from edgeward.io.http11 import HTTP11Client, Origin

PATH = "/api/v1/user/echo"
PAYLOAD = orjson.dumps({"display_name": "Ada Lovelace", "locale": "en-GB", "notes": "x" * 130})
HEADERS = {
    "X-User-Id": "usr_ada",
    "X-Device-Session-Id": "dsn_" + "a" * 32,
    "X-Request-Id": "0123456789abcdef0123456789abcdef",
    "X-Message-Type": "user.echo",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "Content-Type": "application/json",
}
CTX = CommandContext("usr_ada", "dsn_" + "a" * 32, "0123456789abcdef0123456789abcdef", "user.echo", "4bf92f35" * 4)
TIMEOUT_S = 5.0
REQUESTS = 1_000  # per round and candidate
ROUNDS = 5
WARMUP = 200
CHOSEN = "http11"

SERVER = """
import asyncio, sys
import uvloop
from aiohttp import web

async def echo(request):
    return web.Response(body=await request.read(), content_type="application/json")

async def main():
    app = web.Application()
    app.router.add_post("/api/v1/user/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await runner.cleanup()

uvloop.run(main())
"""

Call = Callable[[], Awaitable[bytes]]
Opener = Callable[[str], contextlib.AbstractAsyncContextManager[Call]]


@contextlib.asynccontextmanager
async def aiohttp_client(base: str) -> AsyncIterator[Call]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=4.0),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    url = URL(base + PATH, encoded=True)

    async def call() -> bytes:
        async with session.request("POST", url, headers=HEADERS, data=PAYLOAD, allow_redirects=False) as resp:
            body = bytearray()
            while chunk := await resp.content.readany():
                body += chunk
            return bytes(body)

    try:
        yield call
    finally:
        await session.close()


@contextlib.asynccontextmanager
async def http11_client(base: str) -> AsyncIterator[Call]:
    client = HTTP11Client(timeout_s=TIMEOUT_S)
    origin = Origin.from_url(base)

    async def call() -> bytes:
        return (await client.request(origin, "POST", PATH, headers=HEADERS, body=PAYLOAD)).body

    try:
        yield call
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def backend_forward(base: str) -> AsyncIterator[Call]:
    backend = BackendClient(base, timeout_ms=int(TIMEOUT_S * 1000))
    await backend.start()
    route = Route("user.echo", "POST", PATH)

    async def call() -> bytes:
        return (await backend.forward(route, PAYLOAD, CTX)).body

    try:
        yield call
    finally:
        await backend.close()


@contextlib.asynccontextmanager
async def asyncio_streams(base: str) -> AsyncIterator[Call]:
    origin = Origin.from_url(base)
    reader, writer = await asyncio.open_connection(origin.host, origin.port)
    head = f"POST {PATH} HTTP/1.1\r\nHost: {origin.host_header}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in HEADERS.items()
    )
    request = f"{head}Content-Length: {len(PAYLOAD)}\r\n\r\n".encode() + PAYLOAD

    async def call() -> bytes:
        writer.write(request)
        answer = (await reader.readuntil(b"\r\n\r\n")).lower()
        start = answer.index(b"\r\ncontent-length:") + 17
        return await reader.readexactly(int(answer[start : answer.index(b"\r\n", start)]))

    try:
        yield call
    finally:
        writer.close()
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def httpx_client(base: str) -> AsyncIterator[Call]:
    httpx: Any = importlib.import_module("httpx")  # optional: not a dependency of edgeward
    client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
    url = base + PATH

    async def call() -> bytes:
        return (await client.post(url, headers=HEADERS, content=PAYLOAD)).content

    try:
        yield call
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def aiosonic_client(base: str) -> AsyncIterator[Call]:
    aiosonic: Any = importlib.import_module("aiosonic")  # optional: not a dependency of edgeward
    client = aiosonic.HTTPClient(aiosonic.TCPConnector(timeouts=aiosonic.Timeouts(request_timeout=TIMEOUT_S)))
    url = base + PATH

    async def call() -> bytes:
        return bytes(await (await client.post(url, headers=HEADERS, data=PAYLOAD)).content())

    try:
        yield call
    finally:
        await client.connector.cleanup()


CANDIDATES: dict[str, Opener] = {
    "aiohttp": aiohttp_client,
    "http11": http11_client,
    "BackendClient.forward": backend_forward,
    "asyncio streams (bare)": asyncio_streams,
}
if importlib.util.find_spec("httpx"):
    CANDIDATES["httpx"] = httpx_client
if importlib.util.find_spec("aiosonic"):
    CANDIDATES["aiosonic"] = aiosonic_client


@dataclasses.dataclass
class Result:
    cpu_us: float = float("inf")  # best round: client CPU µs per request
    wall_us: float = float("inf")


async def _run_round(call: Call, n: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        if await call() != PAYLOAD:
            raise AssertionError("wrong echo")
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


async def _measure(base: str) -> dict[str, Result]:
    results = {name: Result() for name in CANDIDATES}
    async with contextlib.AsyncExitStack() as stack:
        calls = {name: await stack.enter_async_context(opener(base)) for name, opener in CANDIDATES.items()}
        for call in calls.values():
            await _run_round(call, WARMUP)
        for _ in range(ROUNDS):
            for name, call in calls.items():
                cpu_us, wall_us = await _run_round(call, REQUESTS)
                best = results[name]
                best.cpu_us, best.wall_us = min(best.cpu_us, cpu_us), min(best.wall_us, wall_us)
    return results


@contextlib.contextmanager
def echo_server(source: str = SERVER) -> Any:
    proc = subprocess.Popen(
        [sys.executable, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the server stops when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


@pytest.mark.timeout(600)
def test_backend_client_cpu_per_request() -> None:
    tables: dict[str, dict[str, Result]] = {}
    with echo_server() as base:
        for loop_name, factory in LOOPS.items():
            with asyncio.Runner(loop_factory=factory) as runner:
                tables[loop_name] = runner.run(asyncio.wait_for(_measure(base), 250))

    print(f"\nbackend client: client CPU per sequential keep-alive POST ({len(PAYLOAD)}-byte body, echoed)")
    print(f"best of {ROUNDS} rounds x {REQUESTS} requests; server in a subprocess, not counted")
    print(f"{'loop':<8} {'candidate':<24} {'CPU µs/req':>11} {'vs aiohttp':>11} {'wall µs/req':>12}")
    for loop_name, results in tables.items():
        base_cpu = results["aiohttp"].cpu_us
        for name, result in results.items():
            print(
                f"{loop_name:<8} {name:<24} {result.cpu_us:>11.1f} {result.cpu_us / base_cpu:>10.2f}x "
                f"{result.wall_us:>12.1f}"
            )
    for loop_name, results in tables.items():
        ratio = results[CHOSEN].cpu_us / results["aiohttp"].cpu_us
        assert ratio < 0.8, f"{loop_name}: {CHOSEN} costs {ratio:.2f}x aiohttp's CPU per request"


# -- http11 against a bare protocol, 32 requests in flight ---------------------------------------

IN_FLIGHT = 32
BARE_ROUNDS = 15
BARE_REQUESTS = 3_200  # per round and candidate: 100 per caller

BARE_SERVER = """
import asyncio, sys
import httptools, uvloop

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.parser, self.body = transport, httptools.HttpRequestParser(self), []

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        body, self.body = b"".join(self.body), []
        self.transport.write(
            b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n"
            b"Date: Wed, 02 Dec 2026 08:00:00 GMT\\r\\nServer: echo\\r\\n\\r\\n%s" % (len(body), body)
        )

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until stdin closes
    server.close()

uvloop.run(main())
"""


class _BareConnection(asyncio.Protocol):
    """The least a client does: write prepared bytes, parse the answer with httptools, settle a future."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[bytes] | None = None
        self._body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body, self._body = b"".join(self._body), []
        assert self._waiter is not None
        self._waiter.set_result(body)

    def send(self, data: bytes) -> asyncio.Future[bytes]:
        assert self.transport is not None
        self._waiter = self._loop.create_future()
        self.transport.write(data)
        return self._waiter


# Each opener gives one call per caller (the bare protocol: one connection each).
PerCaller = Callable[[int], Call]


@contextlib.asynccontextmanager
async def bare_protocol(base: str) -> AsyncIterator[PerCaller]:
    loop = asyncio.get_running_loop()
    origin = Origin.from_url(base)
    head = f"POST {PATH} HTTP/1.1\r\nHost: {origin.host_header}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in HEADERS.items()
    )
    request = f"{head}Content-Length: {len(PAYLOAD)}\r\n\r\n".encode() + PAYLOAD
    conns = [
        (await loop.create_connection(lambda: _BareConnection(loop), origin.host, origin.port))[1]
        for _ in range(IN_FLIGHT)
    ]

    def caller(i: int) -> Call:
        conn = conns[i]

        async def call() -> bytes:
            return await conn.send(request)

        return call

    try:
        yield caller
    finally:
        for conn in conns:
            assert conn.transport is not None
            conn.transport.close()


def _shared(opener: Opener) -> Callable[[str], contextlib.AbstractAsyncContextManager[PerCaller]]:
    """An opener whose one client serves every caller."""

    @contextlib.asynccontextmanager
    async def open_(base: str) -> AsyncIterator[PerCaller]:
        async with opener(base) as call:
            yield lambda _i: call

    return open_


BARE_CANDIDATES = {
    "bare protocol": bare_protocol,
    "http11": _shared(http11_client),
    "BackendClient.forward": _shared(backend_forward),
}


async def _cpu_round(caller: PerCaller, n: int) -> tuple[float, float]:
    """(user, system) CPU µs per request of ``n`` requests from IN_FLIGHT callers."""

    async def run(call: Call) -> None:
        for _ in range(n // IN_FLIGHT):
            if await call() != PAYLOAD:
                raise AssertionError("wrong echo")

    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(run(caller(i)) for i in range(IN_FLIGHT)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    done = n // IN_FLIGHT * IN_FLIGHT
    return (after.ru_utime - before.ru_utime) / done * 1e6, (after.ru_stime - before.ru_stime) / done * 1e6


async def _measure_bare(base: str) -> dict[str, list[tuple[float, float]]]:
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in BARE_CANDIDATES}
    async with contextlib.AsyncExitStack() as stack:
        callers = {name: await stack.enter_async_context(opener(base)) for name, opener in BARE_CANDIDATES.items()}
        for caller in callers.values():
            await _cpu_round(caller, IN_FLIGHT * 10)  # warm-up: every connection open
        for _ in range(BARE_ROUNDS):
            for name, caller in callers.items():
                rounds[name].append(await _cpu_round(caller, BARE_REQUESTS))
    return rounds


@pytest.mark.timeout(600)
def test_http11_against_a_bare_protocol() -> None:
    with echo_server(BARE_SERVER) as base, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        rounds = runner.run(asyncio.wait_for(_measure_bare(base), 300))
    bare = [user + system for user, system in rounds["bare protocol"]]
    print(f"\nbackend client against a bare uvloop protocol: {IN_FLIGHT} requests in flight, {len(PAYLOAD)}-byte POST")
    print(f"{BARE_ROUNDS} alternating rounds x {BARE_REQUESTS} requests; client CPU (user + system) µs per request")
    print(f"{'candidate':<24} {'median':>7} {'min':>6} {'user':>6} {'system':>7}   x bare per round: median (min-max)")
    for name, cpu in rounds.items():
        total = [user + system for user, system in cpu]
        ratios = [t / b for t, b in zip(total, bare, strict=True)]
        user = statistics.median(u for u, _ in cpu)
        system = statistics.median(s for _, s in cpu)
        print(
            f"{name:<24} {statistics.median(total):>7.1f} {min(total):>6.1f} {user:>6.1f} {system:>7.1f}   "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        )
