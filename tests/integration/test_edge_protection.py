"""Edge protection end to end: a gateway and the stub backend over real sockets (docs/edge-protection.md).

Command budgets trip with RetryInfo and reset on the limiter clock (a fake one, injected); the
pre-auth guard stops signature work for a flooding IP (measured with /metrics and the stub's call
counts); the public limits are wired from the settings; with the Redis limiter two gateways
share one budget, and Redis being down is met with the configured failure mode, then recovery.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from edgeward._pb import gateway_pb2
from edgeward.client import error_from_rpc
from edgeward.gateway.server import Gateway
from edgeward.native.crypto import Signer
from edgeward.protection.limiter import Limit
from edgeward.stub import StubBackend
from tests.integration.conftest import Device, GatewayFactory, call, login, rejected
from tests.support.redis_server import RedisServer

HOUR_MS = 3_600_000
OPEN = Limit(1000, 1000)  # a budget that never refuses in these tests


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def channel_to(gateway: Gateway) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")


async def metric(gateway: Gateway, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gateway.admin_http_port}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def assert_budget_refusal(channel: grpc.aio.Channel, data: bytes, budget: str, retry_ms: int) -> None:
    err = await rejected(channel, data)
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
    assert err.metadata.get("budget") == budget and err.retry_after_ms == retry_ms


# ---- command budgets ----


@pytest.mark.parametrize("budget", ["ip", "session", "user", "message_type"])
async def test_each_command_budget_trips_with_retry_info_and_resets(
    start_gateway: GatewayFactory, stub: StubBackend, budget: str
) -> None:
    clock = FakeClock()
    limits = {f"budget_{name}": OPEN for name in ("ip", "session", "user", "message_type")}
    gateway = await start_gateway(clock, **(limits | {f"budget_{budget}": Limit(1 / 3600, 2)}))
    ada = await login(gateway, stub, "ada@example.com")
    # Who shares the budget with ada's first device: the same address, session, user or (user, type).
    other = {
        "ip": await login(gateway, stub, "grace@example.com"),
        "user": await login(gateway, stub, "ada@example.com"),
    }.get(budget, ada)
    async with channel_to(gateway) as channel:
        await call(channel, ada.request("user.echo"))
        await call(channel, other.request("user.echo"))
        await assert_budget_refusal(channel, ada.request("user.echo"), budget, HOUR_MS)
        if budget == "message_type":
            await call(channel, ada.request("user.profile.get"))  # another message type
        clock.now += HOUR_MS / 2
        await assert_budget_refusal(channel, ada.request("user.echo"), budget, HOUR_MS // 2)
        clock.now += HOUR_MS / 2
        await call(channel, ada.request("user.echo"))


async def test_a_routes_file_sets_a_message_types_own_budget(
    start_gateway: GatewayFactory, stub: StubBackend, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.json"
    routes.write_bytes(
        orjson.dumps(
            {
                "include_defaults": True,
                "routes": {
                    "user.echo": {"method": "POST", "path": "/api/v1/user/echo", "budget": "1/h:1"},
                    "user.profile.get": {"method": "GET", "path": "/api/v1/user/profile", "budget": "off"},
                },
            }
        )
    )
    gateway = await start_gateway(FakeClock(), routes_file=str(routes), budget_message_type=Limit(1 / 3600, 3))
    device = await login(gateway, stub)
    async with channel_to(gateway) as channel:
        await call(channel, device.request("user.echo"))
        await assert_budget_refusal(channel, device.request("user.echo"), "message_type", HOUR_MS)
        for _ in range(5):  # "off": over the default of 3
            await call(channel, device.request("user.profile.get"))
        for _ in range(3):  # the default still applies to the others
            await call(channel, device.request("user.profile.update", b'{"display_name": "Ada"}'))
        data = device.request("user.profile.update", b"{}")
        await assert_budget_refusal(channel, data, "message_type", HOUR_MS)


# ---- the pre-auth guard ----


async def test_the_pre_auth_guard_stops_signature_work_for_a_flooding_ip(
    start_gateway: GatewayFactory, stub: StubBackend
) -> None:
    clock = FakeClock()
    gateway = await start_gateway(clock, preauth_failure_limit=Limit(1 / 60, 3), preauth_cooldown_ms=30_000)
    device = await login(gateway, stub)
    forger = Device(Signer.generate(), device.device_session_id, device.email)  # the wrong key
    async with channel_to(gateway) as channel:
        await call(channel, device.request("user.echo"))
        for _ in range(3):  # the third failure spends the budget: the IP is blocked
            assert (await rejected(channel, forger.request("user.echo"))).reason == "invalid_signature"
        checks = await metric(gateway, "edgeward_signature_verifications_total")
        fetches = stub.calls["sessions.get"]
        for i in range(20):  # a flood: forged signatures, and ids the backend is asked about
            target = forger if i % 2 else Device(forger.signer, f"dsn_forged_{i}", "x@example.com")
            err = await rejected(channel, target.request("user.echo"))
            assert (err.code, err.reason, err.metadata) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited", {"budget": "preauth"}
            )
            assert err.retry_after_ms == 30_000
        # No Ed25519 check and no session lookup happened for the flood.
        assert await metric(gateway, "edgeward_signature_verifications_total") == checks
        assert stub.calls["sessions.get"] == fetches
        assert await metric(gateway, "edgeward_preauth_refusals_total") == 20
        assert await metric(gateway, "edgeward_preauth_blocks_total") == 1
        # The address is blocked, not just the forger: a good request waits out the cool-down too.
        assert (await rejected(channel, device.request("user.echo"))).metadata == {"budget": "preauth"}
        clock.now += 30_000
        await call(channel, device.request("user.echo"))


async def test_unknown_sessions_and_bad_payload_hashes_count_as_failures(
    start_gateway: GatewayFactory, stub: StubBackend
) -> None:
    gateway = await start_gateway(FakeClock(), preauth_failure_limit=Limit(1 / 60, 3), preauth_cooldown_ms=30_000)
    device = await login(gateway, stub)
    ghost = Device(Signer.generate(), "dsn_never_issued", "x@example.com")
    async with channel_to(gateway) as channel:
        assert (await rejected(channel, ghost.request("user.echo"))).reason == "session_not_found"
        msg = gateway_pb2.ExecuteCommandRequest.FromString(device.request("user.echo"))
        msg.envelope.payload_hash = bytes(32)
        bad_hash = msg.SerializeToString()
        assert (await rejected(channel, bad_hash)).reason == "payload_hash_mismatch"
        assert (await rejected(channel, ghost.request("user.echo"))).reason == "session_not_found"
        assert (await rejected(channel, device.request("user.echo"))).metadata == {"budget": "preauth"}
    assert await metric(gateway, "edgeward_preauth_failures_total") == 3


# ---- the public listener, wired from the settings ----


async def test_public_limits_from_the_settings(start_gateway: GatewayFactory, stub: StubBackend) -> None:
    gateway = await start_gateway(
        FakeClock(), public_limit_email=Limit(1 / 3600, 2), public_limit_challenge=Limit(1 / 3600, 3)
    )
    url = f"http://127.0.0.1:{gateway.public_http_port}/api/v1/public/auth"
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: object) -> tuple[int, Any, str | None]:
            async with http.post(f"{url}/{path}", json=body) as resp:
                return resp.status, orjson.loads(await resp.read()), resp.headers.get("Retry-After")

        assert (await post("send-email-code", {"email": "not an address"}))[0] == 400
        assert stub.calls["public.send-email-code"] == 0  # never reached the backend
        challenge = (await post("send-email-code", {"email": "ada@example.com"}))[1]["challenge_id"]
        assert (await post("send-email-code", {"email": "Ada+again@example.com"}))[0] == 200
        status, body, retry = await post("send-email-code", {"email": "ada@example.com"})
        assert (status, body["error"]["code"], retry) == (429, "rate_limited", "3600")
        assert stub.calls["public.send-email-code"] == 2
        key = Signer.generate().public_key_b64
        for _ in range(3):
            wrong = {"challenge_id": challenge, "code": "00000000", "client_public_key": key}
            status, body, _ = await post("confirm-email-code", wrong)
            assert status == 400 and body["error"]["code"] != "rate_limited"  # the stub's own answer
        status, body, retry = await post("confirm-email-code", wrong)
        assert (status, body["error"]["code"], retry) == (429, "rate_limited", "3600")
        assert stub.calls["public.confirm-email-code"] == 3
    assert await metric(gateway, 'edgeward_public_rate_limited_total{limit="email"}') == 1


# ---- the Redis limiter ----


async def test_two_gateways_share_one_budget_through_redis(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    shared = {"limiter_redis_url": redis_server.url, "budget_session": Limit(1 / 3600, 3)}
    first, second = await start_gateway(**shared), await start_gateway(**shared)
    device = await login(first, stub)
    async with channel_to(first) as one, channel_to(second) as two:
        await call(one, device.request("user.echo"))
        await call(one, device.request("user.echo"))
        await call(two, device.request("user.echo"))
        for channel in (two, one):
            err = await rejected(channel, device.request("user.echo"))
            assert (err.reason, err.metadata) == ("rate_limited", {"budget": "session"})
            assert err.retry_after_ms is not None and HOUR_MS - 60_000 < err.retry_after_ms <= HOUR_MS


async def test_the_pre_auth_guard_is_shared_through_redis(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    shared = {
        "limiter_redis_url": redis_server.url,
        "preauth_failure_limit": Limit(1 / 60, 2),
        "preauth_cooldown_ms": 60_000,
    }
    first, second = await start_gateway(**shared), await start_gateway(**shared)
    ghost = Device(Signer.generate(), "dsn_never_issued", "x@example.com")
    async with channel_to(first) as one, channel_to(second) as two:
        for _ in range(2):
            assert (await rejected(one, ghost.request("user.echo"))).reason == "session_not_found"
        err = await rejected(two, ghost.request("user.echo"))  # blocked by what the first one saw
        assert (err.reason, err.metadata) == ("rate_limited", {"budget": "preauth"})


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_down_fails_as_configured_then_recovers(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, mode: str
) -> None:
    gateway = await start_gateway(
        limiter_redis_url=redis_server.url,
        limiter_on_redis_error=mode,
        limiter_redis_retry_ms=50,
        budget_session=Limit(1 / 3600, 1),
    )
    device = await login(gateway, stub)
    async with channel_to(gateway) as channel:
        await call(channel, device.request("user.echo"))  # the session's one request, counted in Redis
        await assert_budget_refusal_redis(channel, device)
        redis_server.stop()
        try:
            if mode == "open":
                for _ in range(3):  # budgets are not enforced while Redis is away
                    await call(channel, device.request("user.echo"))
            else:
                err = await rejected(channel, device.request("user.echo"))
                assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "limiter_unavailable")
        finally:
            redis_server.start()
        # Back in Redis's hands: the budget refuses again (only Redis can: the failure mode admits
        # or answers limiter_unavailable). Bounded: reconnection is lazy, after limiter_redis_retry_ms.
        for _ in range(200):
            try:
                await call(channel, device.request("user.echo"))
            except grpc.aio.AioRpcError as exc:
                err = error_from_rpc(exc)
                if err.reason == "rate_limited":
                    assert err.metadata == {"budget": "session"}
                    break
                assert (mode, err.reason) == ("closed", "limiter_unavailable")
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the gateway did not use Redis again")


async def assert_budget_refusal_redis(channel: grpc.aio.Channel, device: Device) -> None:
    err = await rejected(channel, device.request("user.echo"))
    assert (err.reason, err.metadata) == ("rate_limited", {"budget": "session"})
