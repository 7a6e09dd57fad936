"""Integration fixtures: a real stub backend and a real gateway on loopback, per test.

Everything listens on 127.0.0.1 with ports chosen by the OS and is stopped at the end of the
test. Requests go over real gRPC and HTTP sockets. Every async test runs twice: on asyncio's own
loop and on uvloop, which ``edgeward serve`` uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import pytest
import uvloop

from edgeward._pb import gateway_pb2
from edgeward.client import build_signed_request, error_from_rpc, login_with_stub_mailbox
from edgeward.config import Address
from edgeward.gateway.server import Gateway
from edgeward.gateway.settings import GatewaySettings
from edgeward.native.crypto import Signer
from edgeward.stub import StubBackend, StubSettings
from tests.support.hanging_backend import HangingBackend

GATEWAY_SIGNER = Signer(bytes(range(32)))
LOOPBACK_ANY = Address("127.0.0.1", 0)
EXECUTE = "/edgeward.v1.EdgeGateway/ExecuteCommand"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@dataclasses.dataclass
class Device:
    """A logged-in device: its key and its device session."""

    signer: Signer
    device_session_id: str
    email: str

    def request(self, message_type: str, payload: bytes = b"{}", **kw: Any) -> bytes:
        msg = build_signed_request(self.signer, self.device_session_id, message_type, payload, **kw)
        return bytes(msg.SerializeToString())

    def resigned(self, data: bytes, shift_ms: int = 1) -> bytes:
        """``data``'s request signed again ``shift_ms`` later: the same request id and payload, another
        signature, so a replay the gateway refuses (an identical resend gets the kept answer: docs/replay.md)."""
        env = gateway_pb2.ExecuteCommandRequest.FromString(data).envelope
        msg = build_signed_request(
            self.signer, self.device_session_id, env.message_type,
            gateway_pb2.ExecuteCommandRequest.FromString(data).payload_bytes,
            request_id=env.request_id, timestamp_ms=env.timestamp_ms + shift_ms, trace_id=env.trace_id,
        )
        return bytes(msg.SerializeToString())


@pytest.fixture
async def stub() -> AsyncIterator[StubBackend]:
    backend = StubBackend(StubSettings(stub_http_addr=LOOPBACK_ANY, stub_grpc_addr=LOOPBACK_ANY))
    await backend.start()
    yield backend
    await backend.stop()


def settings_for(stub: StubBackend, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "grpc_addr": LOOPBACK_ANY,
        "public_http_addr": LOOPBACK_ANY,
        "admin_http_addr": LOOPBACK_ANY,
        "backend_base_url": stub.base_url,
        "backend_push_addr": Address.parse(stub.push_addr),
    }
    return dataclasses.replace(GatewaySettings(), **(values | overrides))


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(stub: StubBackend) -> AsyncIterator[GatewayFactory]:
    """Start gateways with settings overrides and an optional fake limiter clock; all are stopped at the end."""
    started: list[Gateway] = []

    async def start(limiter_clock: Callable[[], float] | None = None, **overrides: Any) -> Gateway:
        gateway = Gateway(settings_for(stub, **overrides), signer=GATEWAY_SIGNER, limiter_clock=limiter_clock)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop(grace=0)


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway()


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as ch:
        yield ch


async def login(gateway: Gateway, stub: StubBackend, email: str = "ada@example.com") -> Device:
    signer = Signer.generate()
    dsid = await login_with_stub_mailbox(
        f"http://127.0.0.1:{gateway.public_http_port}", stub.base_url, email, signer
    )
    return Device(signer, dsid, email)


@pytest.fixture
async def device(gateway: Gateway, stub: StubBackend) -> Device:
    return await login(gateway, stub)


async def call(channel: grpc.aio.Channel, data: bytes) -> bytes:
    return bytes(await channel.unary_unary(EXECUTE)(data, timeout=10))


async def rejected(channel: grpc.aio.Channel, data: bytes) -> Any:
    """The GatewayError the gateway answers ``data`` with (fails if it answers normally)."""
    try:
        await call(channel, data)
    except grpc.aio.AioRpcError as err:
        return error_from_rpc(err)
    raise AssertionError("the request was accepted")


@pytest.fixture
async def hanging_backend(stub: StubBackend) -> AsyncIterator[HangingBackend]:
    """A backend that holds every echo command until the test ends (tests/support/hanging_backend.py)."""
    backend = HangingBackend(stub)
    await backend.start()
    yield backend
    await backend.stop()
