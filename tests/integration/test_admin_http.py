"""The admin listener over real HTTP: liveness, readiness (drain, Redis down) and metrics."""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
import pytest

from edgeward.server import Gateway
from tests.integration.conftest import Device, GatewayFactory, call, rejected
from tests.support.redis_server import RedisServer


async def _get(gateway: Gateway, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gateway.admin_http_port}{path}") as resp,
    ):
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_healthz_and_readyz(gateway: Gateway) -> None:
    status, body = await _get(gateway, "/healthz")
    assert status == 200 and body["status"] == "ok"
    status, body = await _get(gateway, "/readyz")
    assert (status, body) == (200, {"ready": True, "checks": {"accepting": True, "replay_store": True}})


async def test_not_ready_while_draining(gateway: Gateway, channel: grpc.aio.Channel, device: Device) -> None:
    gateway.begin_drain()
    status, body = await _get(gateway, "/readyz")
    assert status == 503 and body["checks"]["accepting"] is False
    assert (await rejected(channel, device.request("user.echo"))).reason == "shutting_down"


async def test_not_ready_while_redis_is_down(
    start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    gateway = await start_gateway(redis_url=redis_server.url)
    assert (await _get(gateway, "/readyz"))[0] == 200
    redis_server.stop()
    status, body = await _get(gateway, "/readyz")
    assert status == 503 and body["checks"]["replay_store"] is False
    redis_server.start()
    assert (await _get(gateway, "/readyz"))[0] == 200


async def test_metrics_count_outcomes_by_reason(gateway: Gateway, channel: grpc.aio.Channel, device: Device) -> None:
    data = device.request("user.echo")
    await call(channel, data)
    await rejected(channel, data)
    status, text = await _get(gateway, "/metrics")
    assert status == 200
    assert 'edgeward_requests_total{outcome="ok",rpc="ExecuteCommand"} 1.0' in text
    assert 'edgeward_requests_total{outcome="replayed_request",rpc="ExecuteCommand"} 1.0' in text
    assert 'edgeward_backend_results_total{result_code="ok"} 1.0' in text


@pytest.mark.native
async def test_health_and_metrics_say_the_native_twins_are_active(gateway: Gateway) -> None:
    body = (await _get(gateway, "/healthz"))[1]
    assert body["implementation"] == "native"
    assert body["native"] == {"crypto": True, "envelope": True, "session_lru": True}
    assert 'edgeward_native_active{concern="envelope"} 1.0' in (await _get(gateway, "/metrics"))[1]
