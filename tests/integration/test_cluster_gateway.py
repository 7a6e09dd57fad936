"""The gateway on a real Redis Cluster (3 masters, 3 replicas): a signed command accepted once and its
replay refused by another gateway, a budget shared through the cluster, and replay failing closed
(nothing forwarded) while the device session's master is down, until its replica takes over.
"""

from __future__ import annotations

import asyncio

import grpc

from edgeward.gateway.replay import replay_key
from edgeward.gateway.session_source import session_key
from edgeward.io.cluster import key_slot
from edgeward.io.redis import connect
from edgeward.native.crypto import Signer
from edgeward.protection.limiter import Limit
from edgeward.stub import StubBackend
from tests.integration.conftest import Device, GatewayFactory, call, login, rejected
from tests.integration.streams import eventually
from tests.integration.test_session_source import project, publish_snapshot, snapshot
from tests.support.redis_cluster import RedisCluster

FAILOVER_DEADLINE_S = 60.0


def channel_to(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}")


async def test_a_signed_command_is_accepted_once_across_gateways(
    start_gateway: GatewayFactory, stub: StubBackend, cluster: RedisCluster
) -> None:
    first = await start_gateway(redis_url=cluster.url)
    second = await start_gateway(redis_url=cluster.url)
    device = await login(first, stub)
    data = device.request("user.echo")
    async with channel_to(first.grpc_port) as one, channel_to(second.grpc_port) as two:
        await call(one, data)
        for channel in (one, two):
            err = await rejected(channel, device.resigned(data))
            assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "replayed_request")
    assert stub.calls["user.echo"] == 1


async def test_a_budget_is_shared_through_the_cluster(
    start_gateway: GatewayFactory, stub: StubBackend, cluster: RedisCluster
) -> None:
    shared = {"limiter_redis_url": cluster.url, "budget_session": Limit(1 / 3600, 3)}
    first, second = await start_gateway(**shared), await start_gateway(**shared)
    device = await login(first, stub)
    async with channel_to(first.grpc_port) as one, channel_to(second.grpc_port) as two:
        for channel in (one, one, two):
            await call(channel, device.request("user.echo"))
        err = await rejected(two, device.request("user.echo"))
        assert (err.reason, err.metadata) == ("rate_limited", {"budget": "session"})


def master_of(cluster: RedisCluster, slot: int) -> int:
    return next(
        port for port, ranges in cluster.masters().items() if any(start <= slot <= end for start, end in ranges)
    )


async def test_replay_fails_closed_while_the_sessions_master_is_down(
    start_gateway: GatewayFactory, stub: StubBackend, cluster: RedisCluster
) -> None:
    gateway = await start_gateway(redis_url=cluster.url)
    device = await login(gateway, stub)
    victim = master_of(cluster, key_slot(replay_key(device.device_session_id, "x")))
    try:
        async with channel_to(gateway.grpc_port) as channel:
            await call(channel, device.request("user.echo"))
            cluster.kill(victim)
            forwarded = stub.calls["user.echo"]
            err = await rejected(channel, device.request("user.echo"))
            assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "replay_store_unavailable")
            assert stub.calls["user.echo"] == forwarded  # nothing forwarded without a reservation
            async with asyncio.timeout(FAILOVER_DEADLINE_S):  # the replica takes over; nobody intervenes
                while True:
                    try:
                        await call(channel, device.request("user.echo"))
                        break
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.1)
            data = device.request("user.echo")
            await call(channel, data)
            assert (await rejected(channel, device.resigned(data))).reason == "replayed_request"
    finally:
        if victim not in cluster.running():
            cluster.restart(victim)


async def test_the_redis_session_source_works_on_the_cluster(
    start_gateway: GatewayFactory, stub: StubBackend, cluster: RedisCluster
) -> None:
    """Keys spread over the masters, the events stream on one of them: reads and revocations both work."""
    gateway = await start_gateway(redis_url=cluster.url, session_source="redis", session_source_fallback="none")
    consumer = gateway.session_events
    assert consumer is not None
    await eventually(lambda: consumer.connected, "the session events consumer reading the stream")
    redis = connect(cluster.url, socket_timeout_ms=30_000)
    devices = [Device(Signer.generate(), f"dsn_cluster_{i}", "nobody@example.com") for i in range(6)]
    try:
        for device in devices:
            await project(redis, snapshot(device, f"usr_{device.device_session_id}"))
        assert len({master_of(cluster, key_slot(session_key(d.device_session_id))) for d in devices}) > 1
        async with channel_to(gateway.grpc_port) as channel:
            for device in devices:
                await call(channel, device.request("user.echo"))
            revoked = devices[0]
            await publish_snapshot(redis, snapshot(revoked, f"usr_{revoked.device_session_id}", "revoked"))
            await eventually(lambda: consumer.applied >= 1, "the revoked snapshot applied")
            err = await rejected(channel, revoked.request("user.echo"))
            assert err.reason == "session_revoked"
    finally:
        await redis.close()
    assert stub.calls["sessions.get"] == 0 and stub.calls["user.echo"] == len(devices)
