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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
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
def echo_server() -> Any:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
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
