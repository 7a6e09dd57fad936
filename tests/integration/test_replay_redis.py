"""The gateway with its replay store in a real redis-server: replays refused, fail closed, recovery."""

from __future__ import annotations

import asyncio

import grpc

from edgeward.stub import StubBackend
from tests.integration.conftest import GatewayFactory, call, login, rejected
from tests.support.redis_server import RedisServer


async def test_replayed_request_with_the_redis_store(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    gateway = await start_gateway(redis_url=redis_server.url)
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        data = device.request("user.echo")
        await call(channel, data)
        err = await rejected(channel, device.resigned(data))
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "replayed_request")


async def test_two_gateways_share_the_redis_reservations(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    first = await start_gateway(redis_url=redis_server.url)
    second = await start_gateway(redis_url=redis_server.url)
    device = await login(first, stub)
    data = device.request("user.echo")
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as one,
        grpc.aio.insecure_channel(f"127.0.0.1:{second.grpc_port}") as two,
    ):
        await call(one, data)
        assert (await rejected(two, device.resigned(data))).reason == "replayed_request"


async def test_redis_down_fails_closed_then_recovers(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    gateway = await start_gateway(redis_url=redis_server.url)
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        await call(channel, device.request("user.echo"))
        redis_server.stop()
        err = await rejected(channel, device.request("user.echo"))
        assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "replay_store_unavailable")
        redis_server.start()
        for _ in range(50):  # bounded: the store reconnects by itself
            try:
                await call(channel, device.request("user.echo"))
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the gateway did not recover after Redis came back")
