"""The Redis session source (docs/sessions.md): keys read on a miss, the events stream applied.

A real redis-server, the real stub backend (its REST counts session reads in ``stub.calls``; it
writes no projection here, so what is in Redis is only what a test put there) and real gateways.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from edgeward._pb import gateway_pb2
from edgeward.client import verify_response
from edgeward.gateway.server import Gateway
from edgeward.gateway.session_source import EVENTS_STREAM, session_key
from edgeward.io.resp import RespConnection
from edgeward.native.crypto import Signer
from edgeward.stub import StubBackend, StubSettings
from tests.integration.conftest import (
    GATEWAY_SIGNER,
    LOOPBACK_ANY,
    Device,
    GatewayFactory,
    call,
    login,
    rejected,
    settings_for,
)
from tests.integration.streams import Stream, eventually, user_id
from tests.support.redis_server import RedisServer

SESSION_READS = "sessions.get"  # the stub's name for GET /api/v1/internal/sessions/{id}


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RespConnection]:
    connection = RespConnection(redis_server.url, socket_timeout_ms=30_000)  # generous: a healthy Redis
    yield connection
    await connection.close()


def snapshot(device: Device, user: str, status: str = "active") -> dict[str, Any]:
    """The projection of ``device``'s session as protocol §5 has it (``revoked_at_ms`` when revoked)."""
    obj: dict[str, Any] = {
        "device_session_id": device.device_session_id,
        "user_id": user,
        "client_public_key": device.signer.public_key_b64,
        "status": status,
    }
    if status == "revoked":
        obj["revoked_at_ms"] = 1_764_000_000_000
    return obj


async def project(redis: RespConnection, obj: dict[str, Any]) -> None:
    """Write the key, as the backend does."""
    assert await redis.execute("SET", session_key(obj["device_session_id"]), orjson.dumps(obj)) == b"OK"


async def publish(redis: RespConnection, *fields: str) -> None:
    """Append one entry to the events stream; all field values are strings (§5)."""
    assert isinstance(await redis.execute("XADD", EVENTS_STREAM, "*", *fields), bytes)


async def publish_snapshot(redis: RespConnection, obj: dict[str, Any]) -> None:
    await publish(redis, *(text for name, value in obj.items() for text in (name, str(value))))


async def redis_gateway(start_gateway: GatewayFactory, redis_server: RedisServer, **overrides: Any) -> Gateway:
    gateway = await start_gateway(redis_url=redis_server.url, session_source="redis", **overrides)
    assert gateway.session_events is not None
    consumer = gateway.session_events
    # Entries added before the consumer has read the stream's tail are, by design, not read.
    await eventually(lambda: consumer.connected, "the session events consumer reading the stream")
    return gateway


async def accepted(channel: grpc.aio.Channel, device: Device) -> str:
    """Send a signed user.echo; the verified result code."""
    request = device.request("user.echo", b'{"n": 1}')
    answer = gateway_pb2.ExecuteCommandResponse.FromString(await call(channel, request))
    rid = gateway_pb2.ExecuteCommandRequest.FromString(request).envelope.request_id
    return verify_response(answer, GATEWAY_SIGNER.public_key, rid).result_code


async def test_a_session_only_in_redis_works_without_a_backend_read(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, redis: RespConnection
) -> None:
    gateway = await redis_gateway(start_gateway, redis_server)
    device = Device(Signer.generate(), "dsn_only_in_redis_1", "nobody@example.com")  # the stub never issued it
    await project(redis, snapshot(device, "usr_only_in_redis"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        assert await accepted(channel, device) == "ok"
    assert stub.calls[SESSION_READS] == 0
    assert stub.calls["user.echo"] == 1


async def test_a_missing_key_falls_back_to_the_backend_or_not_as_configured(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    with_fallback = await redis_gateway(start_gateway, redis_server)
    without = await redis_gateway(start_gateway, redis_server, session_source_fallback="none")
    device = await login(with_fallback, stub)  # the stub writes no projection: its key is missing
    async with grpc.aio.insecure_channel(f"127.0.0.1:{with_fallback.grpc_port}") as channel:
        assert await accepted(channel, device) == "ok"
    assert stub.calls[SESSION_READS] == 1
    async with grpc.aio.insecure_channel(f"127.0.0.1:{without.grpc_port}") as channel:
        err = await rejected(channel, device.request("user.echo"))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "session_not_found")
    assert stub.calls[SESSION_READS] == 1
    assert with_fallback.session_source is not None and without.session_source is not None
    assert (with_fallback.session_source.fallbacks, without.session_source.fallbacks) == (1, 0)


async def test_the_stub_backends_projection_is_what_the_gateway_reads(redis_server: RedisServer) -> None:
    backend = StubBackend(
        StubSettings(stub_http_addr=LOOPBACK_ANY, stub_grpc_addr=LOOPBACK_ANY, redis_url=redis_server.url)
    )
    await backend.start()
    overrides = {"redis_url": redis_server.url, "session_source": "redis", "session_source_fallback": "none"}
    gateway = Gateway(settings_for(backend, **overrides), signer=GATEWAY_SIGNER)
    try:
        await gateway.start()
        device = await login(gateway, backend)  # the stub projects the session before it answers
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            assert await accepted(channel, device) == "ok"
        assert backend.calls[SESSION_READS] == 0
    finally:
        await gateway.stop(grace=0)
        await backend.stop()


async def test_a_revoked_snapshot_ends_the_streams_and_refuses_commands_at_the_edge(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, redis: RespConnection
) -> None:
    gateway = await redis_gateway(start_gateway, redis_server, session_source_fallback="none")
    assert gateway.session_events is not None
    consumer = gateway.session_events
    device = Device(Signer.generate(), "dsn_revoked_in_redis_1", "nobody@example.com")
    active = snapshot(device, "usr_revoked_in_redis")
    await project(redis, active)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stream = Stream(channel, device)
        await stream.opened()
        for obj in (active, active, snapshot(device, active["user_id"], "revoked")):  # duplicates are normal
            await publish_snapshot(redis, obj)
        err = await stream.end()
        assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "session_revoked")
        # Its key still says active: only the stream entry can have revoked it.
        err = await rejected(channel, device.request("user.echo"))
        assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "session_revoked")
    assert (consumer.applied, consumer.malformed) == (3, 0)
    assert stub.calls[SESSION_READS] == 0 and stub.calls["user.echo"] == 0


async def test_the_consumer_survives_malformed_entries_and_a_redis_restart(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, redis: RespConnection
) -> None:
    gateway = await redis_gateway(start_gateway, redis_server)
    assert gateway.session_events is not None
    consumer = gateway.session_events
    device = await login(gateway, stub)  # no key: read from the backend through the fallback
    other = Device(Signer.generate(), "dsn_not_cached_1", "nobody@example.com")
    await project(redis, snapshot(other, "usr_not_cached"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stream = Stream(channel, device)
        await stream.opened()
        await publish(redis, "not", "a snapshot")
        await eventually(lambda: consumer.malformed == 1, "the first malformed entry counted")

        redis_server.stop()
        await eventually(lambda: not consumer.connected, "the consumer noticing Redis is gone")
        # A miss while Redis is down is backend_unavailable, not a backend read.
        reads = stub.calls[SESSION_READS]
        err = await rejected(channel, other.request("user.echo"))
        assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "backend_unavailable")
        assert stub.calls[SESSION_READS] == reads
        redis_server.start()  # same port, empty (no persistence)
        await eventually(lambda: consumer.connected and consumer.reconnects == 1, "the consumer back")

        user = await user_id(gateway, device)
        await publish(redis, "device_session_id", device.device_session_id, "status", "revoked")  # no key, no user
        await publish_snapshot(redis, snapshot(device, user, "revoked"))
        err = await stream.end()
        assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "session_revoked")
        assert (await rejected(channel, device.request("user.echo"))).reason == "session_revoked"
    assert (consumer.applied, consumer.malformed) == (1, 2)
    assert stub.calls["sessions.revoke"] == 0  # the backend never revoked it: the stream entry did
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gateway.admin_http_port}/readyz") as resp:
            report = await resp.json()
        async with http.get(f"http://127.0.0.1:{gateway.admin_http_port}/metrics") as resp:
            metrics = await resp.text()
    assert report["session_events"] | {"last_error": ""} == {
        "connected": True, "reconnects": 1, "applied": 1, "malformed": 2, "last_error": "",
    }
    assert "edgeward_session_events_malformed_total 2.0" in metrics.splitlines()
    assert "edgeward_session_events_reconnects_total 1.0" in metrics.splitlines()
    # The logged-in session has no key: its reads went to the backend (once more if the resync ran yet).
    assert re.search(r"^edgeward_session_source_fallbacks_total [1-9]", metrics, re.MULTILINE)
