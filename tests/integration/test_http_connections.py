"""One client must not hold the HTTP listeners (issue 10.1, 10.4): timeouts, caps, early refusals.

Raw sockets against a real gateway on loopback: a trickled request head, a silent connection and
an idle keep-alive connection are closed by the server; connections over the per-IP or total cap
are refused with 503 ``too_many_connections`` (a trusted proxy is exempt from the per-IP cap); a
body over the limit is refused at once and the connection closed without the rest being read; a
body that does not arrive in time gets 408. Waits are bounded by generous deadlines: a test fails
when the server never acts, never because it acted late.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from edgeward.gateway.server import Gateway
from edgeward.protection.client_address import TrustedProxies
from tests.integration.conftest import GatewayFactory
from tests.integration.streams import eventually

DEADLINE_S = 30.0
SEND_CODE = "/api/v1/public/auth/send-email-code"
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def connected(port: int) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails after DEADLINE_S)."""
    data = bytearray()
    async with asyncio.timeout(DEADLINE_S):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                data += chunk
    return bytes(data)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length: its status and body."""
    async with asyncio.timeout(DEADLINE_S):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
        return int(lines[0].split()[1]), await reader.readexactly(length)


async def metrics_text(gateway: Gateway) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gateway.admin_http_port}/metrics") as r:
        return await r.text()


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_a_trickled_request_head_is_cut_at_the_header_timeout(
    start_gateway: GatewayFactory, listener: str
) -> None:
    gateway = await start_gateway(http_header_timeout_ms=500)
    port = gateway.public_http_port if listener == "public" else gateway.admin_http_port
    guard = gateway.public_guard if listener == "public" else gateway.admin_guard
    async with connected(port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Trickle: ")
        closed = False
        async with asyncio.timeout(DEADLINE_S):
            while not closed:  # one more header byte every 50 ms, as a slowloris client does
                try:
                    writer.write(b"a")
                    await writer.drain()
                    closed = await asyncio.wait_for(reader.read(1), 0.05) == b""
                except TimeoutError:
                    continue
                except ConnectionError:
                    closed = True
    assert guard.timeouts["header"] == 1


async def test_a_silent_connection_is_closed_at_the_header_timeout(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(http_header_timeout_ms=300)
    async with connected(gateway.public_http_port) as (reader, _):
        assert await until_closed(reader) == b""
    assert gateway.public_guard.timeouts["header"] == 1
    assert 'edgeward_http_connection_timeouts_total{listener="public",phase="header"} 1.0' in await metrics_text(
        gateway
    )


async def test_an_idle_keepalive_connection_is_closed_at_the_idle_timeout(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(http_idle_timeout_ms=300)
    async with connected(gateway.admin_http_port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _ = await read_answer(reader)
        assert status == 200
        assert await until_closed(reader) == b""
    assert gateway.admin_guard.timeouts["idle"] == 1


async def test_a_second_request_on_a_kept_alive_connection_is_served(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(http_idle_timeout_ms=10_000)
    async with connected(gateway.admin_http_port) as (reader, writer):
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_answer(reader))[0] == 200
    assert gateway.admin_guard.timeouts == {}


async def hold(port: int, count: int, stack: contextlib.AsyncExitStack) -> list[Connection]:
    return [await stack.enter_async_context(connected(port)) for _ in range(count)]


async def test_connections_over_the_per_ip_cap_are_refused_with_503(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(public_max_connections_per_ip=3, http_header_timeout_ms=60_000)
    guard = gateway.public_guard
    async with contextlib.AsyncExitStack() as stack:
        held = await hold(gateway.public_http_port, 3, stack)
        await eventually(lambda: guard.open == 3, "three connections held")
        async with connected(gateway.public_http_port) as (reader, _):
            answer = await until_closed(reader)
        assert answer.startswith(b"HTTP/1.1 503 ") and b'"too_many_connections"' in answer
        assert guard.refused["per_ip"] == 1
        held[0][1].close()  # a slot frees when one of them goes
        await eventually(lambda: guard.open == 2, "the closed connection released")
        async with connected(gateway.public_http_port) as (reader, writer):
            writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_answer(reader))[0] == 404  # admitted and served
    text = await metrics_text(gateway)
    assert 'edgeward_http_connections_refused_total{cap="per_ip",listener="public"} 1.0' in text


async def test_a_trusted_proxy_is_not_held_to_the_per_ip_cap(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(
        public_max_connections_per_ip=1, trusted_proxies=TrustedProxies.parse("127.0.0.1/32"),
        http_header_timeout_ms=60_000,
    )
    async with contextlib.AsyncExitStack() as stack:
        await hold(gateway.public_http_port, 4, stack)
        await eventually(lambda: gateway.public_guard.open == 4, "four connections from the proxy held")
    assert gateway.public_guard.refused == {}


async def test_connections_over_the_total_cap_are_refused(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(public_max_connections=2, http_header_timeout_ms=60_000)
    async with contextlib.AsyncExitStack() as stack:
        await hold(gateway.public_http_port, 2, stack)
        await eventually(lambda: gateway.public_guard.open == 2, "two connections held")
        async with connected(gateway.public_http_port) as (reader, _):
            assert (await until_closed(reader)).startswith(b"HTTP/1.1 503 ")
    assert gateway.public_guard.refused["total"] == 1


async def send_until_refused(writer: asyncio.StreamWriter, total: int, piece: bytes = b"x" * 65536) -> int:
    """Send ``piece`` until ``total`` bytes went out; how many did before the connection failed."""
    sent = 0
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(DEADLINE_S):
            while sent < total:
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
    return sent


BODY_TOTAL = 64 * 1024 * 1024  # far more than the kernel buffers on both sides can hold


async def test_an_announced_oversized_body_is_refused_and_never_read(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway()
    async with connected(gateway.public_http_port) as (reader, writer):
        writer.write(
            f"POST {SEND_CODE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {BODY_TOTAL}\r\n\r\n".encode()
        )
        status, body = await read_answer(reader)
        assert (status, b'"request_too_large"' in body) == (413, True)
        # The server closed: the announced body cannot all be sent (before, it was read and discarded).
        assert await send_until_refused(writer, BODY_TOTAL) < BODY_TOTAL


async def test_a_chunked_body_growing_past_the_limit_is_refused_and_the_rest_not_read(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(public_max_body_bytes=1024)
    async with connected(gateway.public_http_port) as (reader, writer):
        chunk = b"x" * 2048
        writer.write(
            f"POST {SEND_CODE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode() + b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        )
        status, _ = await read_answer(reader)
        assert status == 413
        # Well-formed chunks: before, they were read and discarded for as long as they came.
        piece = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
        assert await send_until_refused(writer, BODY_TOTAL, piece) < BODY_TOTAL


async def test_a_body_that_does_not_arrive_in_time_gets_408(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(http_body_timeout_ms=300)
    async with connected(gateway.public_http_port) as (reader, writer):
        writer.write(
            f"POST {SEND_CODE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 40\r\n\r\n{\"email\":".encode()
        )
        status, body = await read_answer(reader)
        assert (status, b'"request_timeout"' in body) == (408, True)
        assert await until_closed(reader) == b""
    assert gateway.protection.public_refused["request_timeout"] == 1

