"""grpc.health.v1 follows readiness (Redis down and back, draining); reflection only when switched on."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edgeward.gateway.server import Gateway
from tests.integration.conftest import GatewayFactory
from tests.support.redis_server import RedisServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "edgeward.v1.EdgeGateway")


async def statuses(stub: health_pb2_grpc.HealthStub) -> set[int]:
    """The status of the whole server and of EdgeGateway, as one set (one member when they agree)."""
    answers = [await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10) for name in SERVICES]
    return {answer.status for answer in answers}


async def until(stub: health_pb2_grpc.HealthStub, status: int) -> set[int]:
    """Poll (bounded: the gateway refreshes every 20 ms, this gives it 500 rounds) until both report ``status``."""
    seen: set[int] = set()
    for _ in range(500):
        seen = await statuses(stub)
        if seen == {status}:
            break
        await asyncio.sleep(0.02)
    return seen


async def test_health_follows_redis_and_draining(start_gateway: GatewayFactory, redis_server: RedisServer) -> None:
    gateway = await start_gateway(redis_url=redis_server.url, health_poll_ms=20)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert await statuses(stub) == {SERVING}  # set before start() returned, no poll needed
        redis_server.stop()
        try:
            assert await until(stub, NOT_SERVING) == {NOT_SERVING}
        finally:
            redis_server.start()
        assert await until(stub, SERVING) == {SERVING}
        gateway.begin_drain()
        assert await statuses(stub) == {NOT_SERVING}  # at once, not at the next poll
        await gateway.health.refresh()  # a poll while Redis answers cannot undo the drain
        assert await statuses(stub) == {NOT_SERVING}


async def test_a_rolling_stop_reports_not_serving(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(health_poll_ms=60_000)  # no poll would notice in time
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING
        stopping = asyncio.ensure_future(gateway.stop(grace=5, rolling=True))
        try:
            assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
        finally:
            watch.cancel()
            await stopping


async def list_services(gateway: Gateway) -> list[str]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        names = [service.name async for answer in call for service in answer.list_services_response.service]
        symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol="edgeward.v1.EdgeGateway")
        call = stub.ServerReflectionInfo(iter([symbol]), timeout=10)
        files = [answer.file_descriptor_response async for answer in call]
        assert files and files[0].file_descriptor_proto, "no descriptor for edgeward.v1.EdgeGateway"
        return names


async def test_reflection_lists_the_services_when_switched_on(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(grpc_reflection=True)
    names = await list_services(gateway)
    assert {"edgeward.v1.EdgeGateway", "grpc.health.v1.Health"} <= set(names)


async def test_reflection_is_unimplemented_by_default(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        # No request is written: grpcio's client reports a write that races the server's
        # UNIMPLEMENTED answer as INTERNAL ("Failed execute_batch"), which is not what is tested.
        call = stub.ServerReflectionInfo(timeout=10)
        assert await call.code() == grpc.StatusCode.UNIMPLEMENTED
