"""The admin listener over real HTTP: liveness, readiness (drain, Redis down, push reported) and metrics."""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
import pytest

from edgeward.gateway.server import Gateway
from edgeward.stub import StubBackend
from tests.integration.conftest import Device, GatewayFactory, call, rejected
from tests.integration.streams import Stream, eventually, post_event, push_connected, user_id
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
    await push_connected(gateway)
    status, body = await _get(gateway, "/readyz")
    assert (status, body["ready"], body["checks"]) == (200, True, {"accepting": True, "replay_store": True})
    assert body["push"] == {"connected": True, "reconnects": 0, "last_error": ""}


async def test_push_being_down_is_reported_but_does_not_make_the_gateway_unready(
    gateway: Gateway, stub: StubBackend
) -> None:
    await push_connected(gateway)
    await stub.stop_push()
    await eventually(lambda: not gateway.dispatcher.connected, "the push stream to be lost")
    status, body = await _get(gateway, "/readyz")
    assert (status, body["ready"], body["push"]["connected"]) == (200, True, False)
    assert body["push"]["last_error"].startswith("UNAVAILABLE")


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
    await rejected(channel, device.resigned(data))
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


async def test_metrics_of_streams_and_push(
    gateway: Gateway, stub: StubBackend, channel: grpc.aio.Channel, device: Device
) -> None:
    stream = Stream(channel, device)
    await stream.opened()
    await push_connected(gateway)
    await post_event(stub, await user_id(gateway, device), {"n": 1})
    await stream.next()
    # The client can read an event before the gateway's write of it has completed.
    await eventually(lambda: gateway.hub.stats.events_delivered == 2, "the gateway to count its writes")
    text = (await _get(gateway, "/metrics"))[1]
    assert 'edgeward_requests_total{outcome="ok",rpc="SubscribeEvents"} 1.0' in text
    assert "edgeward_streams_open 1.0" in text
    assert "edgeward_events_delivered_total 2.0" in text  # server_time, then the event
    assert "edgeward_events_signed_total 1.0" in text and "edgeward_push_connected 1.0" in text
    assert 'edgeward_streams_ended_total{reason="slow_consumer"} 0.0' in text
    assert "edgeward_push_reconnects_total 0.0" in text
    stream.cancel()
    await eventually(lambda: len(gateway.hub) == 0, "the cancelled stream to be unregistered")
    text = (await _get(gateway, "/metrics"))[1]
    assert 'edgeward_streams_ended_total{reason="cancelled"} 1.0' in text and "edgeward_streams_open 0.0" in text
