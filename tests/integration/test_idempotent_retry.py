"""Idempotent retry (issue 15.1, docs/replay.md): a command resent as the very same signed request
gets its first call's signed response again, byte for byte, with ``edgeward-replayed: 1`` in the
trailers and no second backend call; while the first call runs it is told ``request_in_flight``;
any other request under the same id is ``replayed_request``. Over real gRPC, a real stub backend
and, for the Redis store, a real redis-server (alone, and sharing the budgets' round trip).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from edgeward._pb import gateway_pb2
from edgeward.client import EdgewardClient, build_signed_request, error_from_rpc
from edgeward.gateway.server import Gateway
from edgeward.protection.limiter import Limit
from edgeward.stub import StubBackend
from tests.integration.conftest import EXECUTE, GATEWAY_SIGNER, Device, GatewayFactory, call, login, rejected
from tests.support.hanging_backend import HangingBackend
from tests.support.redis_server import RedisServer

STORES = ["memory", "redis", "redis-with-budgets"]


async def start(start_gateway: GatewayFactory, store: str, redis_server: RedisServer, **overrides: Any) -> Gateway:
    if store == "redis":
        overrides["redis_url"] = redis_server.url
    elif store == "redis-with-budgets":  # the one-round-trip path: GUARDED_SCRIPT reserves
        overrides |= {"redis_url": redis_server.url, "limiter_redis_url": redis_server.url}
    gateway = await start_gateway(**overrides)
    assert getattr(gateway, "one_round_trip", False) == (store == "redis-with-budgets")
    return gateway


async def send(channel: grpc.aio.Channel, data: bytes) -> tuple[bytes, bool]:
    """The answer's bytes and whether its trailers mark it replayed."""
    unary = channel.unary_unary(EXECUTE)(data, timeout=30)
    answer: bytes = await unary
    trailers = tuple(await unary.trailing_metadata() or ())
    return answer, ("edgeward-replayed", "1") in trailers


def same_id(device: Device, data: bytes, payload: bytes) -> bytes:
    """Another payload under ``data``'s request id, properly signed."""
    env = gateway_pb2.ExecuteCommandRequest.FromString(data).envelope
    msg = build_signed_request(
        device.signer, device.device_session_id, env.message_type, payload, request_id=env.request_id
    )
    return bytes(msg.SerializeToString())


@pytest.mark.parametrize("store", STORES)
async def test_a_retry_gets_the_same_signed_bytes_and_the_backend_one_call(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, store: str
) -> None:
    gateway = await start(start_gateway, store, redis_server)
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        data = device.request("user.echo", b'{"n": 1}')
        before = stub.calls["user.echo"]
        first, first_replayed = await send(channel, data)
        for _ in range(3):
            again, replayed = await send(channel, data)
            assert again == first and replayed
        assert not first_replayed
        assert stub.calls["user.echo"] == before + 1
        # The same id under another payload, or the same payload signed again: not the same request.
        for other in (same_id(device, data, b'{"n": 2}'), device.resigned(data)):
            err = await rejected(channel, other)
            assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "replayed_request")
        again, replayed = await send(channel, data)  # and they did not spoil the kept answer
        assert again == first and replayed
        assert stub.calls["user.echo"] == before + 1
        # A backend error is a signed answer too: kept the same way.
        refused = device.request("user.profile.update", b'{"display_name": 5}')
        answer, _ = await send(channel, refused)
        assert gateway_pb2.ExecuteCommandResponse.FromString(answer).envelope.result_code != "ok"
        assert await send(channel, refused) == (answer, True)


@pytest.mark.parametrize("store", STORES)
async def test_retries_during_the_first_call_are_told_request_in_flight(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, store: str,
    hanging_backend: HangingBackend,
) -> None:
    gateway = await start(start_gateway, store, redis_server, backend_base_url=hanging_backend.base_url)
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        data = device.request("user.echo", b'{"n": 3}')
        first = asyncio.ensure_future(send(channel, data))
        await asyncio.wait_for(hanging_backend.echo_received.wait(), 30)
        errors = await asyncio.gather(*(rejected(channel, data) for _ in range(4)))
        for err in errors:
            assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "request_in_flight")
            assert err.retry_after_ms is not None and err.retry_after_ms > 0
        err = await rejected(channel, same_id(device, data, b'{"n": 4}'))
        assert err.reason == "replayed_request"
        hanging_backend.release.set()
        answer, replayed = await first
        assert not replayed
        retries = await asyncio.gather(*(send(channel, data) for _ in range(4)))
        assert retries == [(answer, True)] * 4
        assert stub.calls["user.echo"] == 1


async def test_the_client_leaving_does_not_lose_the_answer_and_the_sdk_retries(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, hanging_backend: HangingBackend
) -> None:
    """The SDK's first call runs out of its deadline while the backend holds the command; the
    gateway goes on, keeps the answer, and the SDK's resends get it (verified as usual)."""
    gateway = await start(start_gateway, "redis", redis_server, backend_base_url=hanging_backend.base_url)
    device = await login(gateway, stub)

    async def release_later() -> None:
        await hanging_backend.echo_received.wait()
        await asyncio.sleep(1.0)  # past the SDK's first deadline: an order of events, not a measure
        hanging_backend.release.set()

    releaser = asyncio.ensure_future(release_later())
    async with EdgewardClient(
        f"127.0.0.1:{gateway.grpc_port}", GATEWAY_SIGNER.public_key, device.signer, device.device_session_id
    ) as client:
        result = await client.execute("user.echo", {"n": 5}, timeout=0.3, attempts=40)
    await releaser
    assert result.replayed and result.result_code == "ok" and result.json()["echo"] == {"n": 5}
    assert stub.calls["user.echo"] == 1


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_an_answer_over_the_cap_is_not_kept(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, store: str
) -> None:
    gateway = await start(start_gateway, store, redis_server, replay_max_response_bytes=64)
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        small = device.request("user.echo", b"{}")
        answer, _ = await send(channel, small)
        assert len(answer) > 64  # envelope and signature alone pass the cap: nothing is kept
        err = await rejected(channel, small)
        assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "replayed_request")
        assert stub.calls["user.echo"] == 1


async def test_a_budget_refusal_finishes_the_request(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    """Refused at step 7 after its reservation: a resend is replayed_request, never in flight."""
    gateway = await start(start_gateway, "redis-with-budgets", redis_server, budget_session=Limit(1 / 3600, 1))
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        await call(channel, device.request("user.echo"))
        data = device.request("user.echo")
        assert (await rejected(channel, data)).reason == "rate_limited"
        for _ in range(20):  # the "finished" mark is written without being awaited: bounded wait
            err = await rejected(channel, data)
            if err.reason != "request_in_flight":
                break
            await asyncio.sleep(0.05)
        assert err.reason == "replayed_request"


async def test_redis_down_is_replay_store_unavailable_and_nothing_runs(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    gateway = await start(start_gateway, "redis", redis_server)
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        data = device.request("user.echo")
        await send(channel, data)
        redis_server.stop()
        try:
            for request in (data, device.request("user.echo")):  # a retry, and a new command
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await send(channel, request)
                err = error_from_rpc(caught.value)
                assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "replay_store_unavailable")
        finally:
            redis_server.start()
        assert stub.calls["user.echo"] == 1
