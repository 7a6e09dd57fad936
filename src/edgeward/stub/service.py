"""``StubBackend``: the stub assembled from its parts, for the CLI and for in-process tests.

Start order is Redis projection, HTTP, then push, so nothing can be served before what it
depends on exists; stop runs in reverse. The push server alone can be stopped and started again
on the same port, which is how tests exercise a gateway's reconnection.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections import Counter

from aiohttp import web

from edgeward.config import Address
from edgeward.runtime import ListenError
from edgeward.stub.http_app import make_app
from edgeward.stub.profiles import ProfileStore
from edgeward.stub.projection import RedisProjection
from edgeward.stub.push import PushHub, PushServer
from edgeward.stub.settings import StubSettings
from edgeward.stub.state import StubState

__all__ = ("StubBackend", "run_stub_backend")

log = logging.getLogger(__name__)

_HTTP_SHUTDOWN_TIMEOUT_S = 2.0


def _reachable(host: str, port: int) -> Address:
    """Where a local client connects to a listener bound to ``host`` (a wildcard means loopback)."""
    return Address("127.0.0.1" if host in ("", "0.0.0.0", "::") else host, port)


class StubBackend:
    """One stub backend; ports given as 0 are bound to free ports, readable after ``start()``."""

    def __init__(self, settings: StubSettings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: the REST listener serves HTTPS with it (tests of the gateway's backend TLS)."""
        self.settings = settings
        self._ssl_context = ssl_context
        self.calls: Counter[str] = Counter()
        self.state = StubState(
            challenge_ttl_ms=settings.stub_challenge_ttl_ms,
            max_challenges=settings.stub_max_challenges,
            max_sessions=settings.stub_max_sessions,
            max_users=settings.stub_max_users,
        )
        self.profiles = ProfileStore(settings.stub_max_users)
        self.hub = PushHub(settings.stub_push_queue_size)
        self.projection = RedisProjection(settings.redis_url) if settings.redis_url else None
        self._push = PushServer(self.hub, settings.stub_grpc_addr)
        self._runner: web.AppRunner | None = None
        self.http_port = 0

    @property
    def grpc_port(self) -> int:
        return self._push.port

    @property
    def base_url(self) -> str:
        scheme = "http" if self._ssl_context is None else "https"
        return f"{scheme}://{_reachable(self.settings.stub_http_addr.host, self.http_port)}"

    @property
    def push_addr(self) -> str:
        return str(_reachable(self.settings.stub_grpc_addr.host, self.grpc_port))

    @property
    def push_streams(self) -> int:
        """Open SubscribePush streams (connected gateways)."""
        return len(self.hub)

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        if self.projection is not None:
            await self.projection.start()
        app = make_app(
            self.state, self.profiles, self.hub, self.projection, self.calls,
            max_body_bytes=self.settings.stub_max_body_bytes,
        )
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_HTTP_SHUTDOWN_TIMEOUT_S
        )
        await self._runner.setup()
        addr = self.settings.stub_http_addr
        site = web.TCPSite(self._runner, addr.host, addr.port, reuse_port=False, ssl_context=self._ssl_context)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError("stub HTTP", str(addr), exc) from None
        self.http_port = int(self._runner.addresses[0][1])
        await self._push.start()
        log.info(
            "stub backend listening: http %s, push grpc %s; redis projection %s",
            self.base_url, self.push_addr, "on" if self.projection is not None else "off",
        )

    async def stop(self) -> None:
        """Stop everything; open push streams end with UNAVAILABLE. Safe to call twice."""
        await self._push.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self.projection is not None:
            await self.projection.close()

    async def stop_push(self) -> None:
        """Stop only the push server (open streams end); ``start_push()`` reopens the same port."""
        await self._push.stop()

    async def start_push(self) -> None:
        await self._push.start()


async def run_stub_backend(settings: StubSettings) -> None:
    """Run until SIGINT or SIGTERM, then stop cleanly."""
    backend = StubBackend(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await backend.start()
    try:
        await stop.wait()
    finally:
        log.info("stopping stub backend")
        await backend.stop()
