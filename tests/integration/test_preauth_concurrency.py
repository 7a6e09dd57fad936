"""The pre-auth guard under concurrency: hundreds of requests at once from one IP, over real sockets.

The work a forger can cost is bounded by the guard's burst however many requests are in flight
(docs/edge-protection.md §5): backend session reads, counted by the stub, and Ed25519
verifications, counted in /metrics. Each test runs with the in-process limiter and with the
Redis one. The limiter clock is a fake one that never moves, so no unit of the budget comes
back during a test and the counts are exact.

The gateway reaches the stub, and its limiter Redis, through ``HeldRelay``: a TCP relay that can
hold the server's answers, so that a test decides how long requests stay in flight, not the
machine's speed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import grpc
import pytest

from edgeward.client import error_from_rpc
from edgeward.gateway.server import Gateway
from edgeward.native.crypto import Signer
from edgeward.protection.limiter import Limit
from edgeward.stub import StubBackend
from tests.integration.conftest import Device, GatewayFactory, call, login
from tests.integration.test_edge_protection import FakeClock, metric
from tests.support.redis_server import RedisServer

BURST = 20
FLOOD = 250  # requests sent at once from 127.0.0.1; fewer than the backend client's 256 connections
CONNECTIONS = 10  # gRPC connections the flood is spread over, each under its stream limit
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own TCP connection


class HeldRelay:
    """A TCP relay in front of a server that can hold the server's answers, as a slow server would.

    While held, requests still reach the server (the stub counts them, Redis runs them) but their
    answers wait, so every request that needs the server stays in flight. ``held_requests``
    counts the requests sent meanwhile, by a ``marker`` each of them carries once; ``progress``
    is set at each one.
    """

    def __init__(self, port: int, marker: bytes) -> None:
        self._port = port
        self._marker = marker
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.held_requests = 0
        self.progress = asyncio.Event()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def hold(self) -> None:
        self.held_requests = 0
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for writer in self._writers), return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers |= {to_client, to_server}
        for pump in (self._pump(client, to_server, self._counter()), self._pump(server, to_client, None)):
            task = asyncio.ensure_future(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, count: Callable[[bytes], None] | None
    ) -> None:
        while data := await source.read(65_536):
            if count is not None:
                count(data)
            else:
                await self._open.wait()  # the server's answers wait while held
            sink.write(data)
            await sink.drain()
        sink.close()

    def _counter(self) -> Callable[[bytes], None]:
        """Counts the markers one connection sends, one split across two reads included."""
        marker, tail = self._marker, b""

        def count(data: bytes) -> None:
            nonlocal tail
            seen = (tail + data).count(marker) - tail.count(marker)
            tail = (tail + data)[-(len(marker) - 1) :]
            if seen and not self._open.is_set():
                self.held_requests += seen
                self.progress.set()

        return count


@pytest.fixture
async def slow_backend(stub: StubBackend) -> AsyncIterator[HeldRelay]:
    """The stub behind a relay; each session read (a bodiless GET) ends with one blank line."""
    relay = HeldRelay(urlsplit(stub.base_url).port or 80, b"\r\n\r\n")
    yield relay
    await relay.close()


@pytest.fixture
async def slow_redis(redis_server: RedisServer) -> AsyncIterator[HeldRelay]:
    """The limiter's Redis behind a relay; each limiter call is one EVALSHA of its script."""
    relay = HeldRelay(redis_server.port, b"EVALSHA")
    yield relay
    await relay.close()


@pytest.fixture(params=["in-process", "redis"])
async def guarded(
    request: pytest.FixtureRequest, slow_backend: HeldRelay, slow_redis: HeldRelay, start_gateway: GatewayFactory
) -> Gateway:
    """A gateway whose pre-auth guard allows BURST failures (and never refills), on either limiter."""
    settings: dict[str, object] = {
        "preauth_failure_limit": Limit(1 / 60, BURST),
        "preauth_cooldown_ms": 60_000,
        "backend_base_url": f"http://127.0.0.1:{await slow_backend.start()}",
        "backend_timeout_ms": 600_000,  # a held answer is late, not lost
    }
    if request.param == "redis":
        settings["limiter_redis_url"] = f"redis://127.0.0.1:{await slow_redis.start()}/0"
        settings["limiter_redis_timeout_ms"] = 10_000  # its largest: a held answer is late, not lost
    return await start_gateway(FakeClock(), **settings)


async def send_all(
    gateway: Gateway, requests: list[bytes], answered: Callable[[], None] = lambda: None
) -> Counter[str]:
    """Send every request at once; count the answers: ``ok``, a reason, or ``rate_limited:<budget>``."""

    async def one(channel: grpc.aio.Channel, data: bytes) -> str:
        try:
            await call(channel, data)
        except grpc.aio.AioRpcError as exc:
            err = error_from_rpc(exc)
            return f"{err.reason}:{err.metadata.get('budget')}" if err.reason == "rate_limited" else err.reason
        finally:
            answered()
        return "ok"

    target = f"127.0.0.1:{gateway.grpc_port}"
    channels = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(CONNECTIONS)]
    try:
        answers = await asyncio.gather(*(one(channels[i % CONNECTIONS], data) for i, data in enumerate(requests)))
    finally:
        for channel in channels:
            await channel.close()
    return Counter(answers)


async def send_holding(gateway: Gateway, relay: HeldRelay, requests: list[bytes]) -> Counter[str]:
    """``send_all``, with the relay's answers held until every request is answered or waiting for one."""
    answered = 0

    def one_more() -> None:
        nonlocal answered
        answered += 1
        relay.progress.set()

    relay.hold()
    sending = asyncio.ensure_future(send_all(gateway, requests, one_more))
    for _ in range(2 * len(requests) + 1):  # each turn consumes at least one answer or held request
        if answered + relay.held_requests >= len(requests):
            break
        await relay.progress.wait()
        relay.progress.clear()
    relay.release()
    return await sending


async def test_unknown_session_ids_at_once_cost_at_most_the_burst_in_backend_reads(
    guarded: Gateway, stub: StubBackend, slow_backend: HeldRelay
) -> None:
    # Concurrency alone is not suspicious: requests of one device waiting for one session fetch
    # share its charge, and a session in memory is not charged at all.
    device = await login(guarded, stub)
    assert await send_all(guarded, [device.request("user.echo") for _ in range(2 * BURST)]) == {"ok": 2 * BURST}
    reads = stub.calls["sessions.get"]
    ghosts = [Device(Signer.generate(), f"dsn_ghost_{i}", "x@example.com") for i in range(FLOOD)]
    answers = await send_holding(guarded, slow_backend, [ghost.request("user.echo") for ghost in ghosts])
    # Each lookup took a unit of the budget before asking the backend; the requests that found
    # none left were refused before any work, and the first failure found the budget spent.
    assert stub.calls["sessions.get"] - reads == BURST
    assert answers == {"session_not_found": BURST, "rate_limited:preauth": FLOOD - BURST}
    assert await metric(guarded, "edgeward_preauth_failures_total") == BURST
    assert await metric(guarded, "edgeward_preauth_refusals_total") == FLOOD - BURST
    assert await metric(guarded, "edgeward_preauth_blocks_total") == 1


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "not-cached"])
async def test_bad_signatures_at_once_cost_at_most_the_burst_in_verifications(
    guarded: Gateway, stub: StubBackend, slow_redis: HeldRelay, cached: bool
) -> None:
    device = await login(guarded, stub)
    if cached:  # else the flood's requests all wait for one session fetch, then verify
        await send_all(guarded, [device.request("user.echo")])
    forger = Device(Signer.generate(), device.device_session_id, device.email)  # the wrong key
    flood = [forger.request("user.echo") for _ in range(FLOOD)]
    checks = await metric(guarded, "edgeward_signature_verifications_total")
    if guarded.protection.backend == "redis":  # every request's block check waits for all the others
        answers = await send_holding(guarded, slow_redis, flood)
    else:
        answers = await send_all(guarded, flood)
    verified = await metric(guarded, "edgeward_signature_verifications_total") - checks
    assert 0 < verified <= BURST
    assert answers == {"invalid_signature": verified, "rate_limited:preauth": FLOOD - verified}
    assert await metric(guarded, "edgeward_preauth_failures_total") == verified
    assert await metric(guarded, "edgeward_preauth_blocks_total") == 1
