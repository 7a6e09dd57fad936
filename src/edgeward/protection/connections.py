"""Connection limits of the HTTP listeners: one client must not hold a listener, or the process, hostage.

aiohttp alone keeps a connection open as long as a client trickles a request head, or sends
nothing at all, and accepts as many connections as the process has descriptors: one address
holding a thousand silent connections starved gRPC of file descriptors. Every connection of a
listener built with a ``ConnectionGuard`` (``GuardedSite``) is therefore:

- refused at accept when the listener holds ``max_connections`` already, or when its client IP
  holds ``max_per_ip`` (a trusted proxy's peer address is exempt: it carries many clients, and
  only the total cap applies to it); the refusal is a one-shot ``503 too_many_connections``
  answer and a close, so a well-behaved client learns why;
- closed when no complete request head arrived within ``header_timeout_s`` of the connection
  opening or of the first byte of a request (slowloris), and when it stayed idle for
  ``idle_timeout_s`` after an answer (keep-alive).

While a request is being handled no timer of the guard runs: its handler bounds its own body
read (the public listener's body timeout) and backend call. The guard learns that a request
started and ended through ``middleware``, which the listener's application must include.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from edgeward.protection.client_address import TrustedProxies, ip_limit_key, parse_ip

__all__ = ("ConnectionGuard", "ConnectionLimits", "GuardedSite")

_REFUSAL_BODY = orjson.dumps(
    {"error": {"code": "too_many_connections", "message": "too many connections; retry later"}}
)
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Cache-Control: no-store\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits of one listener; ``max_per_ip`` None means no per-IP cap."""

    header_timeout_s: float
    idle_timeout_s: float
    max_connections: int
    max_per_ip: int | None = None
    trusted_proxies: TrustedProxies = dataclasses.field(default_factory=TrustedProxies)
    ipv6_prefix: int = 64


class ConnectionGuard:
    """Counts, caps and times the connections of one listener (metrics read the public counters)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        self.refused: Counter[str] = Counter()  # "total" or "per_ip"
        self.timeouts: Counter[str] = Counter()  # "header" or "idle"
        self._per_ip: Counter[str] = Counter()
        self._by_transport: dict[asyncio.BaseTransport, _GuardedProtocol] = {}

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap ``inner`` (aiohttp's ``web.Server``) so every accepted connection passes the guard."""
        return lambda: _GuardedProtocol(self, inner)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks a request as being handled, so the header and idle timers leave it alone."""
        connection = self._by_transport.get(request.transport) if request.transport else None
        if connection is None:
            return await handler(request)
        connection.request_started()
        try:
            return await handler(request)
        finally:
            connection.request_ended()

    def _admit(self, transport: asyncio.Transport, protocol: _GuardedProtocol) -> str | None:
        """Register the connection; the refusal reason when it is over a cap (then not registered)."""
        if self.open >= self.limits.max_connections:
            return "total"
        key = self._ip_key(transport)
        if key is not None and self.limits.max_per_ip is not None:
            if self._per_ip[key] >= self.limits.max_per_ip:
                return "per_ip"
            self._per_ip[key] += 1
        protocol.ip_key = key
        self.open += 1
        self._by_transport[transport] = protocol
        return None

    def _release(self, transport: asyncio.BaseTransport, protocol: _GuardedProtocol) -> None:
        if self._by_transport.pop(transport, None) is None:
            return
        self.open -= 1
        key = protocol.ip_key
        if key is not None and self.limits.max_per_ip is not None:
            self._per_ip[key] -= 1
            if self._per_ip[key] <= 0:
                del self._per_ip[key]

    def _ip_key(self, transport: asyncio.Transport) -> str | None:
        """The per-IP key of the peer; None when it is a trusted proxy or has no IP address."""
        peer = transport.get_extra_info("peername")
        address = parse_ip(peer[0]) if isinstance(peer, tuple) and peer else None
        if address is None or self.limits.trusted_proxies.trusts(address):
            return None
        return ip_limit_key(str(address), self.limits.ipv6_prefix)


class _GuardedProtocol(asyncio.Protocol):
    """Sits between the transport and aiohttp's protocol: admits, times and releases one connection."""

    def __init__(self, guard: ConnectionGuard, inner_factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._inner_factory = inner_factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for_request = False  # idle after an answer: the first byte starts the header timer
        self.ip_key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is no subclass)
        refusal = self._guard._admit(transport, self)
        if refusal is not None:
            self._guard.refused[refusal] += 1
            transport.write(_REFUSAL)
            transport.close()  # after the answer is flushed; nothing of the request is read
            return
        self._transport = transport
        self._arm(self._guard.limits.header_timeout_s, "header")
        self._inner = self._inner_factory()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._waiting_for_request:
            self._waiting_for_request = False
            self._arm(self._guard.limits.header_timeout_s, "header")
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._transport is not None:
            self._guard._release(self._transport, self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def request_started(self) -> None:
        self._disarm()
        self._waiting_for_request = False

    def request_ended(self) -> None:
        self._waiting_for_request = True
        self._arm(self._guard.limits.idle_timeout_s, "idle")

    def _arm(self, delay_s: float, phase: str) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._expired, phase)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, phase: str) -> None:
        self._timer = None
        self._guard.timeouts[phase] += 1
        if self._transport is not None:
            if self._transport.get_write_buffer_size():
                # An answer the client has not read in all this time: close() would wait forever
                # to flush it to a client that never reads, holding the connection and its slot.
                self._transport.abort()
            else:
                self._transport.close()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass ``guard`` (aiohttp's ``TCPSite`` with a wrapped protocol).

    ``reuse_port`` binds with SO_REUSEPORT, so the workers of one host share the port and the kernel
    spreads their connections (docs/workers.md); off, a port already in use is an error.
    ``ssl_context`` serves TLS. The guard sees a connection only once its handshake is done, so the
    handshake gets the guard's header timeout of its own: a client that opens TCP and never
    handshakes is cut like one that never sends a request head.
    """

    __slots__ = ("_bound_port", "_guard", "_host", "_port", "_reuse_port", "_ssl_context")

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard, *, reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(runner, **kwargs)
        self._host, self._port, self._guard = host, port, guard
        self._bound_port = port
        self._reuse_port = reuse_port
        self._ssl_context = ssl_context

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self._bound_port}"

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return self._bound_port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            reuse_address=True,
            reuse_port=self._reuse_port,
            backlog=self._backlog,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._guard.limits.header_timeout_s if self._ssl_context is not None else None,
        )
        sockets = self._server.sockets
        if sockets and sockets[0].family in (socket.AF_INET, socket.AF_INET6):
            self._bound_port = int(sockets[0].getsockname()[1])
