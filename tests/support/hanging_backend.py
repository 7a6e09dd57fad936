"""A backend in front of the stub that holds every echo command until released: a call in flight.

Used by the tests of shutdown (a command cut at the grace end) and of idempotent retry (a retry
while the first call still runs); ``hanging_backend`` in tests/integration/conftest.py starts one.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from edgeward.stub import StubBackend

__all__ = ("HANGING_PATH", "HangingBackend")

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
