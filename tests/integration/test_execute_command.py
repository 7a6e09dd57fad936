"""ExecuteCommand end to end: a gateway and a stub backend over real sockets.

One test per rejection reason of the contract (gRPC code + ErrorInfo reason), then the
behaviours the foundation promises: signed answers, backend errors as signed responses,
single-flight session loading, revoked sessions stopped at the edge.
"""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import orjson

from edgeward._pb import gateway_pb2
from edgeward.client import verify_response
from edgeward.clock import now_ms
from edgeward.gateway.server import Gateway
from edgeward.native.crypto import Signer
from edgeward.protection.budgets import Limit
from edgeward.stub import StubBackend
from tests.integration.conftest import (
    GATEWAY_SIGNER,
    Device,
    GatewayFactory,
    call,
    login,
    rejected,
)


def mutate(data: bytes, **envelope_fields: object) -> bytes:
    msg = gateway_pb2.ExecuteCommandRequest.FromString(data)
    for name, value in envelope_fields.items():
        setattr(msg.envelope, name, value)
    return msg.SerializeToString()


async def test_echo_is_forwarded_and_the_answer_signed(channel: grpc.aio.Channel, device: Device) -> None:
    data = device.request("user.echo", b'{"hello":"world"}', trace_id="trace-7")
    request_id = gateway_pb2.ExecuteCommandRequest.FromString(data).envelope.request_id
    resp = gateway_pb2.ExecuteCommandResponse.FromString(await call(channel, data))
    result = verify_response(resp, GATEWAY_SIGNER.public_key, request_id)
    assert result.result_code == "ok" and result.trace_id == "trace-7"
    body = orjson.loads(result.payload)
    assert body["echo"] == {"hello": "world"}
    assert body["device_session_id"] == device.device_session_id and body["request_id"] == request_id
    assert body["message_type"] == "user.echo" and body["traceparent"].startswith("00-")


async def test_backend_4xx_error_is_a_signed_response_with_its_code(
    channel: grpc.aio.Channel, device: Device
) -> None:
    data = device.request("user.profile.update", b'{"display_name": 5}')
    request_id = gateway_pb2.ExecuteCommandRequest.FromString(data).envelope.request_id
    resp = gateway_pb2.ExecuteCommandResponse.FromString(await call(channel, data))
    result = verify_response(resp, GATEWAY_SIGNER.public_key, request_id)
    assert result.result_code == "invalid_profile_update"
    assert orjson.loads(result.payload)["error"]["code"] == "invalid_profile_update"


async def test_profile_round_trip(channel: grpc.aio.Channel, device: Device) -> None:
    await call(channel, device.request("user.profile.update", b'{"display_name": "Ada"}'))
    data = device.request("user.profile.get", b"{}")
    rid = gateway_pb2.ExecuteCommandRequest.FromString(data).envelope.request_id
    resp = gateway_pb2.ExecuteCommandResponse.FromString(await call(channel, data))
    assert orjson.loads(verify_response(resp, GATEWAY_SIGNER.public_key, rid).payload)["profile"][
        "display_name"
    ] == "Ada"


# ---- one test per rejection reason ----


async def test_invalid_envelope(channel: grpc.aio.Channel, device: Device) -> None:
    err = await rejected(channel, b"\x0a\x05garbage-that-is-not-protobuf")
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_envelope")
    err = await rejected(channel, mutate(device.request("user.echo"), request_id="short"))
    assert (err.reason, err.metadata.get("field")) == ("invalid_envelope", "request_id")


async def test_unsupported_protocol_version(channel: grpc.aio.Channel, device: Device) -> None:
    err = await rejected(channel, mutate(device.request("user.echo"), protocol_version=2))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "unsupported_protocol_version")


async def test_payload_too_large(channel: grpc.aio.Channel, device: Device, gateway: Gateway) -> None:
    limit = gateway.settings.max_payload_bytes
    err = await rejected(channel, device.request("user.echo", b"x" * (limit + 1)))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "payload_too_large")
    try:  # far over the limit, gRPC itself refuses the message before the gateway sees it
        await call(channel, device.request("user.echo", b"x" * (limit + 100_000)))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        raise AssertionError("an oversized message was accepted")


async def test_payload_hash_mismatch(channel: grpc.aio.Channel, device: Device) -> None:
    msg = gateway_pb2.ExecuteCommandRequest.FromString(device.request("user.echo", b'{"a":1}'))
    msg.payload_bytes = b'{"a":2}'
    err = await rejected(channel, msg.SerializeToString())
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "payload_hash_mismatch")


async def test_session_not_found(channel: grpc.aio.Channel) -> None:
    ghost = Device(Signer.generate(), "dsn_does_not_exist", "ghost@example.com")
    err = await rejected(channel, ghost.request("user.echo"))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "session_not_found")


async def test_invalid_signature(channel: grpc.aio.Channel, device: Device) -> None:
    forger = Device(Signer.generate(), device.device_session_id, device.email)
    err = await rejected(channel, forger.request("user.echo"))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_signature")


async def test_session_revoked_is_rejected_at_the_edge_without_a_backend_call(
    gateway: Gateway, stub: StubBackend, channel: grpc.aio.Channel
) -> None:
    device = await login(gateway, stub)
    async with aiohttp.ClientSession() as http:
        url = f"{stub.base_url}/api/v1/internal/sessions/{device.device_session_id}/revoke"
        async with http.post(url, json={"reason_code": "test", "actor": "pytest"}) as resp:
            assert resp.status == 200
    err = await rejected(channel, device.request("user.echo"))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "session_revoked")
    before = stub.calls.copy()
    for _ in range(3):
        assert (await rejected(channel, device.request("user.echo"))).reason == "session_revoked"
    assert stub.calls == before  # neither a session read nor a forwarded command


async def test_stale_request_carries_the_server_time(channel: grpc.aio.Channel, device: Device) -> None:
    err = await rejected(channel, device.request("user.echo", timestamp_ms=now_ms() - 301_000))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "stale_request")
    assert abs(int(err.metadata["server_time_ms"]) - now_ms()) < 60_000
    err = await rejected(channel, device.request("user.echo", timestamp_ms=now_ms() + 301_000))
    assert err.reason == "stale_request"


async def test_replayed_request_with_the_memory_store(channel: grpc.aio.Channel, device: Device) -> None:
    data = device.request("user.echo")
    await call(channel, data)
    err = await rejected(channel, device.resigned(data))
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "replayed_request")


async def test_rate_limited_with_retry_info(start_gateway: GatewayFactory, stub: StubBackend) -> None:
    gateway = await start_gateway(budget_session=Limit(1, 2))
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        for _ in range(2):
            await call(channel, device.request("user.echo"))
        err = await rejected(channel, device.request("user.echo"))
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
    assert err.retry_after_ms is not None and 0 < err.retry_after_ms <= 1000


async def test_unknown_message_type(channel: grpc.aio.Channel, device: Device) -> None:
    err = await rejected(channel, device.request("user.nothing.here"))
    assert (err.code, err.reason) == (grpc.StatusCode.UNIMPLEMENTED, "unknown_message_type")


async def test_backend_unavailable_when_the_backend_is_stopped(
    channel: grpc.aio.Channel, device: Device, stub: StubBackend
) -> None:
    await call(channel, device.request("user.echo"))  # the session is cached now
    await stub.stop()
    err = await rejected(channel, device.request("user.echo"))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "backend_unavailable")
    ghost = Device(Signer.generate(), "dsn_unknown_while_down", "x@example.com")
    assert (await rejected(channel, ghost.request("user.echo"))).reason == "backend_unavailable"


async def test_backend_timeout(start_gateway: GatewayFactory) -> None:
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        gateway = await start_gateway(backend_base_url=f"http://127.0.0.1:{port}", backend_timeout_ms=200)
        ghost = Device(Signer.generate(), "dsn_slow_backend", "slow@example.com")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            err = await rejected(channel, ghost.request("user.echo"))
        assert (err.code, err.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "backend_timeout")
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_shutting_down(gateway: Gateway, channel: grpc.aio.Channel, device: Device) -> None:
    gateway.begin_drain()
    err = await rejected(channel, device.request("user.echo"))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "shutting_down")


# ---- session cache behaviour through the gateway ----


async def test_concurrent_misses_make_one_backend_call(
    gateway: Gateway, stub: StubBackend, channel: grpc.aio.Channel
) -> None:
    device = await login(gateway, stub)
    before = stub.calls["sessions.get"]
    answers = await asyncio.gather(*(call(channel, device.request("user.echo")) for _ in range(20)))
    assert len(answers) == 20
    assert stub.calls["sessions.get"] - before == 1


async def test_unknown_session_ids_are_negatively_cached(channel: grpc.aio.Channel, stub: StubBackend) -> None:
    ghost = Device(Signer.generate(), "dsn_bogus_flood", "x@example.com")
    before = stub.calls["sessions.get"]
    for _ in range(5):
        assert (await rejected(channel, ghost.request("user.echo"))).reason == "session_not_found"
    assert stub.calls["sessions.get"] - before == 1

