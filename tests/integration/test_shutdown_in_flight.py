"""A command still running when the shutdown grace ends is answered shutting_down (issue 10.5).

The gateway's backend is a real HTTP server in this test that passes everything to the stub
backend except ``POST /api/v1/user/echo``, which it receives and never answers: the command is
then in flight, past the point where the backend has it, when the gateway stops. The client must
get UNAVAILABLE with the ``shutting_down`` ErrorInfo, not gRPC's bare "Cancelling all calls".
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from edgeward.client import error_from_rpc
from edgeward.stub import StubBackend
from tests.integration.conftest import EXECUTE, GatewayFactory, login
from tests.support.hanging_backend import HangingBackend


async def test_a_command_cut_at_the_grace_end_is_answered_shutting_down(
    start_gateway: GatewayFactory, stub: StubBackend, hanging_backend: HangingBackend
) -> None:
    gateway = await start_gateway(backend_base_url=hanging_backend.base_url, shutdown_grace_ms=1_000)
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        call = asyncio.ensure_future(channel.unary_unary(EXECUTE)(device.request("user.echo"), timeout=60))
        await asyncio.wait_for(hanging_backend.echo_received.wait(), 30)
        await gateway.stop()  # the shutdown grace (1 s) ends with the command still at the backend
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
    error = error_from_rpc(info.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "shutting_down")
    assert gateway.metrics.requests.labels("ExecuteCommand", "shutting_down")._value.get() == 1
