"""The gateway with its replay store and its command budgets on one redis-server: steps 6 and 7 in
one round trip (docs/replay.md, "One round trip with the budgets"), over real gRPC.

A replay is still answered replayed_request and charged nothing, a budget still refuses with
rate_limited, Redis down still fails closed with replay_store_unavailable whatever the limiter's
failure mode, and a limiter on another server keeps the two steps.
"""

from __future__ import annotations

import grpc
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edgeward.gateway import tracing
from edgeward.gateway.server import Gateway
from edgeward.protection.limiter import Limit
from edgeward.stub import StubBackend
from tests.integration.conftest import GatewayFactory, call, login, rejected
from tests.support.redis_server import RedisServer

HOUR_MS = 3_600_000


def channel_to(gateway: Gateway) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")


def limiter_writes(gateway: Gateway) -> int:
    redis = gateway.protection._redis  # the limiter's own connection
    assert redis is not None
    return redis.writes


async def test_one_round_trip_replay_refused_and_not_charged_then_budget_refusal(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    # The pre-auth guard off: its block check (step 2, on the limiter's connection) is a round trip
    # of its own, before any signature work, which this change leaves where it is.
    gateway = await start_gateway(
        redis_url=redis_server.url,
        limiter_redis_url=redis_server.url,
        budget_session=Limit(1 / 3600, 4),
        preauth_failure_limit=None,
    )
    assert gateway.one_round_trip
    device = await login(gateway, stub)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        async with channel_to(gateway) as channel:
            await call(channel, device.request("user.echo"))  # caches the script (NOSCRIPT, then EVAL)
            await raw.config_resetstat()
            store, limiter = gateway.replay.stats, limiter_writes(gateway)  # type: ignore[attr-defined]
            data = device.request("user.echo")
            await call(channel, data)
            after = gateway.replay.stats  # type: ignore[attr-defined]
            # The reservation's script call, then the kept answer's SET (docs/replay.md, "Idempotent retry")
            assert (after.pipelines - store.pipelines, after.commands - store.commands) == (2, 2)
            assert limiter_writes(gateway) == limiter  # nothing on the limiter's connection
            stats = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in (await raw.info("commandstats")).items()}
            assert stats["evalsha"] == 1  # and one script call in Redis, for the reservation and four budgets
            for _ in range(3):
                err = await rejected(channel, device.resigned(data))
                assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "replayed_request")
            await call(channel, device.request("user.echo"))  # the 3rd and 4th units: replays took none
            await call(channel, device.request("user.echo"))
            err = await rejected(channel, device.request("user.echo"))
            assert (err.code, err.reason, err.metadata) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited", {"budget": "session"}
            )
            assert err.retry_after_ms is not None and HOUR_MS - 60_000 < err.retry_after_ms <= HOUR_MS
    finally:
        await raw.aclose()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_down_fails_closed_with_replay_store_unavailable(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, mode: str
) -> None:
    # The guard off: with it, "closed" answers limiter_unavailable at step 2, before any of this.
    gateway = await start_gateway(
        redis_url=redis_server.url, limiter_redis_url=redis_server.url, limiter_on_redis_error=mode,
        preauth_failure_limit=None,
    )
    assert gateway.one_round_trip
    device = await login(gateway, stub)
    async with channel_to(gateway) as channel:
        await call(channel, device.request("user.echo"))
        redis_server.stop()
        try:
            err = await rejected(channel, device.request("user.echo"))
            assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "replay_store_unavailable")
        finally:
            redis_server.start()


async def test_a_limiter_on_another_server_keeps_two_steps(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    other = RedisServer()
    other.start()
    try:
        gateway = await start_gateway(
            redis_url=redis_server.url, limiter_redis_url=other.url, budget_session=Limit(1 / 3600, 1)
        )
        assert not gateway.one_round_trip
        device = await login(gateway, stub)
        async with channel_to(gateway) as channel:
            data = device.request("user.echo")
            before = limiter_writes(gateway)
            await call(channel, data)
            assert limiter_writes(gateway) > before  # the budgets went to the limiter's server
            assert (await rejected(channel, device.resigned(data))).reason == "replayed_request"
            err = await rejected(channel, device.request("user.echo"))
            assert (err.reason, err.metadata) == ("rate_limited", {"budget": "session"})
    finally:
        other.close()


async def test_spans_record_each_refusal_at_its_own_step(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    """One round trip, two steps still: replayed_request on replay_reservation, rate_limited on budgets."""
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    try:
        gateway = await start_gateway(
            redis_url=redis_server.url, limiter_redis_url=redis_server.url, budget_session=Limit(1 / 3600, 1)
        )
        assert gateway.one_round_trip
        device = await login(gateway, stub)
        async with channel_to(gateway) as channel:
            data = device.request("user.echo")
            await call(channel, data)
            replay = device.resigned(data)
            for request, reason in [(replay, "replayed_request"), (device.request("user.echo"), "rate_limited")]:
                exporter.clear()
                assert (await rejected(channel, request)).reason == reason
                steps = {
                    s.name: (s.attributes or {}).get("edgeward.outcome")
                    for s in exporter.get_finished_spans()
                    if s.parent is not None
                }
                if reason == "replayed_request":
                    assert steps == {"session_lookup": "ok", "replay_reservation": reason}
                else:
                    assert steps == {"session_lookup": "ok", "replay_reservation": "ok", "budgets": reason}
    finally:
        tracing.uninstall()
