"""A command still running when the shutdown grace ends is answered shutting_down (issue 10.5).

The gateway's backend is a real HTTP server in this test that passes everything to the stub
backend except ``POST /api/v1/user/echo``, which it receives and never answers: the command is
then in flight, past the point where the backend has it, when the gateway stops. The client must
get UNAVAILABLE with the ``shutting_down`` ErrorInfo, not gRPC's bare "Cancelling all calls".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from aiohttp import web

from edgeward.client import error_from_rpc
from edgeward.stub import StubBackend
from tests.integration.conftest import EXECUTE, GatewayFactory, login

HANGING_PATH = "/api/v1/user/echo"


class HangingBackend:
    """Forwards to the stub; holds every echo command until the test ends."""

    def __init__(self, stub: StubBackend) -> None:
        self.stub = stub
        self.echo_received = asyncio.Event()
        self.release = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "POST" and request.path == HANGING_PATH:
            self.echo_received.set()
            await self.release.wait()
        assert self.http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self.http.request(
            request.method, self.stub.base_url + request.path_qs, data=await request.read(), headers=headers
        ) as answer:
            return web.Response(status=answer.status, body=await answer.read(), content_type=answer.content_type)

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        self.release.set()
        assert self.runner is not None and self.http is not None
        await self.runner.cleanup()
        await self.http.close()


@pytest.fixture
async def hanging_backend(stub: StubBackend) -> AsyncIterator[HangingBackend]:
    backend = HangingBackend(stub)
    await backend.start()
    yield backend
    await backend.stop()


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
