"""Assembles a gateway from its settings and runs it: start and stop ordering live here.

Start: backend client, replay store, the listeners (gRPC, public HTTP, gRPC-Web when
``grpc_web_addr`` is set, admin), then the backend
push dispatcher and, with the Redis session source, its events consumer (docs/sessions.md).
Each HTTP listener's connections pass a ``ConnectionGuard`` (timeouts, caps; the public
listener's total cap also leaves ``fd_reserve`` descriptors of the soft RLIMIT_NOFILE to
gRPC and the clients). A listener that cannot bind raises ``ListenError``.
The gRPC port also serves ``grpc.health.v1``, kept in step with readiness by ``GatewayHealth``
(docs/operations.md), and, with ``grpc_reflection``, server reflection.
With a certificate (``gateway/tls.py``) the gRPC, public and gRPC-Web listeners serve TLS only; SIGHUP to
``run_gateway`` re-reads it for new connections, and ``backend_ssl_context`` verifies an https backend.
Stop (docs/push.md): readiness goes false (health NOT_SERVING at once) and new calls get
``shutting_down``; the push hub closes, so every open stream ends with ``shutting_down`` rather
than holding the grace period;
the gRPC server stops with a grace period for calls in flight, and shortly before the grace ends
every command still running is answered ``shutting_down`` (it may have reached the backend);
gRPC-Web commands get the same grace and cut, gRPC-Web streams end with the hub; then the HTTP
listeners; then the clients: push dispatcher, session events consumer, session cache, Redis session
source, backend client and replay store, so nothing in flight loses its dependencies
(invalidations keep arriving while commands finish).
Under ``edgeward serve --workers N`` (docs/workers.md) the gRPC, public and gRPC-Web listeners share
their ports (``reuse_port``), and a worker retired by a rolling restart stops with ``rolling=True``:
it serves the calls that still arrive instead of refusing them, while GOAWAY moves its clients, and
its gRPC-Web listener closes with gRPC's (new connections go to the other workers).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import ssl
from collections.abc import Callable
from typing import Any

import grpc
from aiohttp import web
from grpc_reflection.v1alpha import reflection

from edgeward._pb import gateway_pb2
from edgeward.config import Address
from edgeward.gateway.admin import make_admin_app
from edgeward.gateway.backend import BackendClient
from edgeward.gateway.edge_protection import EdgeProtection
from edgeward.gateway.event_history import EventHistory
from edgeward.gateway.grpc_service import SERVICE_NAME, GatewayService
from edgeward.gateway.grpc_web import make_grpc_web_app
from edgeward.gateway.health import HEALTH_SERVICE_NAME, GatewayHealth
from edgeward.gateway.metrics import GatewayMetrics
from edgeward.gateway.pipeline import CommandExecutor, RequestVerifier, SubscriptionOpener
from edgeward.gateway.replay import RedisReplayStore, open_replay_store
from edgeward.gateway.routes import load_route_table
from edgeward.gateway.session_cache import SessionCache, SessionSource
from edgeward.gateway.session_events import DEFAULT_BLOCK_MS, SessionEventConsumer
from edgeward.gateway.session_source import RedisSessionSource
from edgeward.gateway.settings import GatewaySettings
from edgeward.gateway.tls import ListenerTls, backend_ssl_context
from edgeward.gateway.tracing import from_env as tracer_from_env
from edgeward.io.redis import connect as connect_redis
from edgeward.native.crypto import Signer
from edgeward.native.keys import load_signer
from edgeward.protection.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from edgeward.public.listener import make_public_app
from edgeward.push.dispatcher import Backoff, PushDispatcher
from edgeward.push.hub import PushHub
from edgeward.runtime import AccessLog, ListenError, raise_fd_limit

__all__ = ("Gateway", "run_gateway")

log = logging.getLogger(__name__)

# The largest envelope (ids, hash, trace id, signature, tags) is well under this; a message
# larger than payload limit + overhead is refused by gRPC itself with RESOURCE_EXHAUSTED.
_ENVELOPE_OVERHEAD_BYTES = 4096
# Commands still running this long before the shutdown grace ends are answered shutting_down, so
# the status reaches the client before gRPC cancels the call (capped at half of a short grace).
_CUT_BEFORE_GRACE_END_S = 0.5


def _grpc_options(settings: GatewaySettings, reuse_port: bool = False) -> list[tuple[str, int]]:
    """Server options; the keepalive ones keep long-lived streams alive behind load balancers.

    ``reuse_port`` only for a worker (docs/workers.md): otherwise a port in use is an error, not a shared listener.
    """
    options = [
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.max_receive_message_length", settings.max_payload_bytes + _ENVELOPE_OVERHEAD_BYTES),
        # Pings on idle connections: a load balancer or NAT sees traffic before its idle timeout,
        # and a client that vanished is noticed (its streams end, its caps are freed).
        ("grpc.keepalive_time_ms", settings.grpc_keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.grpc_keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(settings.grpc_keepalive_permit_without_calls)),
        # Quiet streams carry no data for long stretches: keep pinging them (gRPC stops after two).
        ("grpc.http2.max_pings_without_data", 0),
        # Client pings more frequent than this are "strikes"; two of them and the connection gets
        # GOAWAY too_many_pings (gRPC's default of 5 minutes would refuse mobile keepalives).
        ("grpc.http2.min_ping_interval_without_data_ms", settings.grpc_min_ping_interval_ms),
        # Connection limits: calls per connection, and connections that idle or live too long
        # get GOAWAY (a client reconnects, so load spreads again across gateways).
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        # Overload: calls the event loop has not taken yet wait in gRPC core, which sheds new ones
        # at random past this many (CANCELLED, before the gateway sees them) and all past 3x.
        # These are gRPC's own defaults (1000, 3000), made explicit and settable.
        ("grpc.server.max_pending_requests", settings.grpc_max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", 3 * settings.grpc_max_pending_calls),
        ("grpc.max_connection_idle_ms", settings.grpc_max_connection_idle_ms),
    ]
    if settings.grpc_max_connection_age_ms:  # gRPC reads 0 as "at once": leave the option out for "never"
        options += [
            ("grpc.max_connection_age_ms", settings.grpc_max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", settings.grpc_max_connection_age_grace_ms),
        ]
    return options


def _http_guards(settings: GatewaySettings) -> tuple[ConnectionGuard, ConnectionGuard, ConnectionGuard]:
    """The public, gRPC-Web and admin listeners' guards; their caps together leave ``fd_reserve`` descriptors free.

    The two browser-facing listeners take the public limits each; with gRPC-Web on they share the
    descriptors left after the admin cap, half each.
    """
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    headroom = max(1, soft_limit - settings.fd_reserve) if soft_limit != resource.RLIM_INFINITY else 1 << 30
    admin_cap = min(settings.admin_max_connections, max(1, headroom // 8))
    browser_room = (headroom - admin_cap) // 2 if settings.grpc_web_addr is not None else headroom - admin_cap
    header_s, idle_s = settings.http_header_timeout_ms / 1000, settings.http_idle_timeout_ms / 1000
    public = ConnectionLimits(
        header_s, idle_s,
        max_connections=max(1, min(settings.public_max_connections, browser_room)),
        max_per_ip=settings.public_max_connections_per_ip,
        trusted_proxies=settings.trusted_proxies,
        ipv6_prefix=settings.limit_ipv6_prefix,
    )
    admin = ConnectionLimits(header_s, idle_s, max_connections=admin_cap)
    return ConnectionGuard(public), ConnectionGuard(public), ConnectionGuard(admin)


def _signer_from(settings: GatewaySettings) -> Signer:
    if settings.signing_key_file:
        return load_signer(settings.signing_key_file)
    signer = Signer.generate()
    log.warning(
        "EDGEWARD_SIGNING_KEY_FILE is not set: signing with an ephemeral key (public key %s); "
        "clients cannot verify responses across restarts",
        signer.public_key_b64,
    )
    return signer


def _redis_session_source(settings: GatewaySettings, backend: BackendClient) -> RedisSessionSource | None:
    """The Redis session source (docs/sessions.md); None when cache misses go to backend REST."""
    if settings.session_source != "redis" or not settings.redis_url:  # the settings refuse redis without a URL
        return None
    # Session reads share one auto-pipelining client (one connection per node on a cluster).
    redis = connect_redis(settings.redis_url, socket_timeout_ms=settings.session_redis_timeout_ms)
    return RedisSessionSource(redis, backend.get_session if settings.session_source_fallback == "backend" else None)


def _session_events(settings: GatewaySettings, sessions: SessionCache, hub: PushHub) -> SessionEventConsumer | None:
    """The consumer of the Redis session events stream, with the Redis session source only."""
    if settings.session_source != "redis" or not settings.redis_url:
        return None
    # A client of its own, whose reply timeout exceeds the XREAD block time: a blocking read would
    # hold every command queued behind it on a shared connection.
    redis = connect_redis(
        settings.redis_url,
        socket_timeout_ms=DEFAULT_BLOCK_MS + settings.session_redis_timeout_ms,
        connect_timeout_ms=settings.session_redis_timeout_ms,
    )
    backoff = Backoff(settings.push_reconnect_initial_ms, settings.push_reconnect_max_ms)
    return SessionEventConsumer(redis, sessions, hub, backoff)


class Gateway:
    """One gateway instance. Ports given as 0 are bound to free ports, readable after start()."""

    def __init__(
        self,
        settings: GatewaySettings,
        signer: Signer | None = None,
        limiter_clock: Callable[[], float] | None = None,
        *,
        reuse_port: bool = False,
    ) -> None:
        """``limiter_clock`` (ms) drives every rate limit instead of the real clocks; for tests.

        ``reuse_port``: the gRPC and public HTTP listeners share their ports with the host's other
        workers (SO_REUSEPORT; docs/workers.md).
        """
        self.settings = settings
        self.reuse_port = reuse_port
        self._stopping = False
        self.signer = signer or _signer_from(settings)
        self.metrics = GatewayMetrics()
        self.routes = load_route_table(settings.routes_file)
        self.backend = BackendClient(
            settings.backend_base_url,
            settings.backend_timeout_ms,
            ssl_context=backend_ssl_context(
                settings.backend_ca_file, settings.backend_client_cert_file, settings.backend_client_key_file
            ),
        )
        self.replay = open_replay_store(
            settings.redis_url,
            settings.replay_memory_max_entries,
            max_response_bytes=settings.replay_max_response_bytes,
            memory_max_kept_bytes=settings.replay_memory_max_response_bytes,
        )
        self.session_source = _redis_session_source(settings, self.backend)
        fetch: SessionSource = self.backend.get_session if self.session_source is None else self.session_source.fetch
        self.sessions = SessionCache(
            fetch,
            max_entries=settings.session_cache_size,
            ttl_ms=settings.session_cache_ttl_ms,
            negative_ttl_ms=settings.session_negative_ttl_ms,
        )
        self.protection = EdgeProtection(settings, self.routes, limiter_clock)  # docs/edge-protection.md
        # Steps 6 and 7 in one round trip when the replay store and the budgets share one Redis node.
        self.one_round_trip = isinstance(self.replay, RedisReplayStore) and self.replay.share_round_trip(
            self.protection.budgets
        )
        self.tracer = tracer_from_env()  # None unless OTEL_* variables enable it (docs/operations.md, "Tracing")
        verifier = RequestVerifier(
            self.sessions,
            self.replay,
            self.protection.budgets,
            max_payload_bytes=settings.max_payload_bytes,
            freshness_window_ms=settings.freshness_window_ms,
            replay_timer=self.metrics.replay_duration,
            guard=self.protection.guard,
            tracer=self.tracer,
        )
        self.metrics.watch_sessions(self.sessions)
        self.protection.register_metrics(self.metrics.registry, verifier)
        self.hub = PushHub(
            self.signer,
            queue_size=settings.stream_queue_size,
            max_per_session=settings.max_streams_per_session,
            max_per_user=settings.max_streams_per_user,
        )
        self.history = (  # resumable streams (docs/push.md, "Resuming a stream")
            EventHistory(
                connect_redis(
                    settings.redis_url,
                    socket_timeout_ms=settings.event_history_timeout_ms,
                ),
                max_len=settings.event_history_max_len,
                max_age_ms=settings.event_history_max_age_ms,
            )
            if settings.redis_url and settings.event_history
            else None
        )
        self.dispatcher = PushDispatcher(
            str(settings.backend_push_addr),
            self.hub,
            self.sessions,
            Backoff(settings.push_reconnect_initial_ms, settings.push_reconnect_max_ms),
            keepalive_ms=settings.backend_push_keepalive_ms,
            keepalive_timeout_ms=settings.grpc_keepalive_timeout_ms,
            history=self.history,
        )
        self.metrics.watch_push(self.hub, self.dispatcher)
        self.session_events = _session_events(settings, self.sessions, self.hub)
        if self.session_source is not None and self.session_events is not None:
            self.metrics.watch_redis_sessions(self.session_source, self.session_events)
        self.public_guard, self.grpc_web_guard, self.admin_guard = _http_guards(settings)
        guards = {"public": self.public_guard, "admin": self.admin_guard}
        if settings.grpc_web_addr is not None:
            guards["grpc_web"] = self.grpc_web_guard
        self.metrics.watch_connections(guards)
        self.access_log = AccessLog(settings.access_log, settings.access_log_sample)  # docs/logging.md
        self.service = GatewayService(
            CommandExecutor(verifier, self.routes, self.backend, self.signer, self.metrics.backend_timers(self.routes)),
            SubscriptionOpener(verifier, self.hub, self.signer, history=self.history),
            self.metrics,
            self.access_log,
        )
        self.health = GatewayHealth(self._readiness, poll_ms=settings.health_poll_ms)
        self.tls = (  # None: plaintext listeners (docs/operations.md, TLS)
            ListenerTls(settings.tls_cert_file, settings.tls_key_file, settings.admin_tls_client_ca_file)
            if settings.tls_cert_file and settings.tls_key_file
            else None
        )
        self._grpc: grpc.aio.Server | None = None
        self._runners: list[web.AppRunner] = []
        self._grpc_web_runner: web.AppRunner | None = None  # closed with gRPC's listener when retiring
        self.grpc_port = 0
        self.public_http_port = 0
        self.grpc_web_port = 0  # 0 also when there is no gRPC-Web listener (grpc_web_addr unset)
        self.admin_http_port = 0

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        await self.backend.start()
        self._grpc = grpc.aio.server(options=_grpc_options(self.settings, self.reuse_port))
        self._grpc.add_generic_rpc_handlers((self.service.handler(),))
        await self.health.register(self._grpc)
        if self.settings.grpc_reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME),
                self._grpc,
                pool=gateway_pb2.DESCRIPTOR.pool,  # the pool the generated modules registered with
            )
        try:
            grpc_addr = str(self.settings.grpc_addr)
            if self.tls is None:
                self.grpc_port = self._grpc.add_insecure_port(grpc_addr)
            else:
                self.grpc_port = self._grpc.add_secure_port(grpc_addr, self.tls.grpc_credentials)
        except RuntimeError as exc:  # grpcio raises this when the port cannot be bound
            raise ListenError("gRPC", str(self.settings.grpc_addr), exc) from None
        if self.grpc_port == 0:
            raise ListenError("gRPC", str(self.settings.grpc_addr), OSError("the address is in use or not available"))
        await self._grpc.start()
        public = make_public_app(
            self.backend,
            max_body_bytes=self.settings.public_max_body_bytes,
            limits=self.protection.public_limits,
            trusted_proxies=self.protection.trusted_proxies,
            refused=self.protection.public_refused,
            body_timeout_s=self.settings.http_body_timeout_ms / 1000,
            access_log=self.access_log,
            cors=self.settings.cors_origins,
        )
        self.public_http_port = await self._serve_http(
            "public HTTP", public, self.settings.public_http_addr, self.public_guard, reuse_port=self.reuse_port,
            ssl_context=self.tls.http_context if self.tls is not None else None,
        )
        if self.settings.grpc_web_addr is not None:  # docs/grpc-web.md
            grpc_web = make_grpc_web_app(
                self.service,
                max_message_bytes=self.settings.max_payload_bytes + _ENVELOPE_OVERHEAD_BYTES,
                body_timeout_s=self.settings.http_body_timeout_ms / 1000,
                trusted_proxies=self.protection.trusted_proxies,
                cors=self.settings.cors_origins,
            )
            self.grpc_web_port = await self._serve_http(
                "gRPC-Web", grpc_web, self.settings.grpc_web_addr, self.grpc_web_guard, reuse_port=self.reuse_port,
                ssl_context=self.tls.http_context if self.tls is not None else None, handler_cancellation=True,
            )
            self._grpc_web_runner = self._runners[-1]
        admin = make_admin_app(self.metrics, self._readiness, self._report)
        self.admin_http_port = await self._serve_http(
            "admin HTTP", admin, self.settings.admin_http_addr, self.admin_guard,
            ssl_context=self.tls.admin_context if self.tls is not None else None,
        )
        self.dispatcher.start()
        if self.session_events is not None:
            self.session_events.start()
        await self.health.start()
        web_addr = self.settings.grpc_web_addr
        log.info(
            "gateway listening: grpc %s:%d, public http %s:%d, %sadmin http %s:%d; replay store %s",
            self.settings.grpc_addr.host, self.grpc_port,
            self.settings.public_http_addr.host, self.public_http_port,
            f"grpc-web {web_addr.host}:{self.grpc_web_port}, " if web_addr is not None else "",
            self.settings.admin_http_addr.host, self.admin_http_port,
            ("redis, with the budgets in one round trip" if self.one_round_trip else "redis")
            if self.settings.redis_url
            else "in-memory",
        )

    def begin_drain(self) -> None:
        """Report not ready and answer new calls with shutting_down; calls in flight finish."""
        self.service.accepting = False
        self.health.drain()

    async def stop(self, grace: float | None = None, *, rolling: bool = False) -> None:
        """Stop in order; ``grace`` (seconds, default the shutdown_grace_ms setting) bounds calls in flight.

        ``rolling`` is a worker's retirement in a rolling restart (docs/workers.md): readiness goes
        false, but calls that still arrive are served rather than refused with ``shutting_down``;
        the listeners close (gRPC's and gRPC-Web's as the grace begins) and gRPC's GOAWAY sends the
        clients to the other workers.
        Safe to call twice, and after a failed start.
        """
        grace_s = self.settings.shutdown_grace_ms / 1000 if grace is None else grace
        self._stopping = True
        if not rolling:
            self.begin_drain()
        await self.health.close()
        ended = self.hub.close()  # before the graceful stop (§4): streams would hold the grace period
        if ended:
            log.info("ended %d open streams with shutting_down", ended)
        web_closed: asyncio.Task[None] | None = None
        if rolling and self._grpc_web_runner in self._runners:
            # Retiring: the gRPC-Web listener closes with gRPC's, so new connections go to the other
            # workers and idle keep-alive ones close; its calls in flight get the grace below. Open
            # until the end, it would take calls that the cut then answers shutting_down.
            assert self._grpc_web_runner is not None
            self._runners.remove(self._grpc_web_runner)
            web_closed = asyncio.create_task(self._grpc_web_runner.cleanup())
        if self._grpc is not None:
            loop = asyncio.get_running_loop()
            cut_at = loop.time() + max(0.0, grace_s - min(_CUT_BEFORE_GRACE_END_S, grace_s / 2))
            cut = loop.call_at(cut_at, self.service.cut_in_flight)
            try:
                await self._grpc.stop(grace_s)
            finally:
                cut.cancel()
            self._grpc = None
            # gRPC-Web commands do not end with the gRPC server, which may stop at once: they get
            # the same grace, then those still running are answered shutting_down.
            await self.service.wait_in_flight(cut_at - loop.time())
            self.service.cut_in_flight()
        if web_closed is not None:
            await web_closed  # its handlers are done: answered, or cut just above
        await self.service.close_commands()  # before the backend and the replay store close
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.dispatcher.close()
        if self.history is not None:
            await self.history.close()
        if self.session_events is not None:
            await self.session_events.close()
        await self.sessions.close()
        if self.session_source is not None:
            await self.session_source.close()
        await self.backend.close()
        if self.tracer is not None:  # flushes the batch exporter, which may wait on its endpoint
            await asyncio.to_thread(self.tracer.close)
        await self.replay.close()
        await self.protection.close()

    async def _serve_http(
        self, listener: str, app: web.Application, addr: Address, guard: ConnectionGuard, *, reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None, handler_cancellation: bool = False,
    ) -> int:
        """Serve ``app`` on ``addr`` behind ``guard``; the bound port.

        ``handler_cancellation``: a client that disconnects cancels its handler (gRPC-Web: a stream
        must end when its client leaves, not at its next event).
        """
        app.middlewares.append(guard.middleware)
        idle_s = self.settings.http_idle_timeout_ms / 1000
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=idle_s,
            handler_cancellation=handler_cancellation,
        )
        await runner.setup()
        self._runners.append(runner)
        site = GuardedSite(runner, addr.host, addr.port, guard, reuse_port=reuse_port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(listener, str(addr), exc) from None
        return site.port

    def _report(self) -> dict[str, Any]:
        """/readyz's informative members: the feeds of session changes, which never gate readiness."""
        report: dict[str, Any] = {"push": self.dispatcher.status()}
        if self.session_events is not None:
            report["session_events"] = self.session_events.status()
        return report

    async def _readiness(self) -> dict[str, bool]:
        """/readyz and grpc.health.v1 (docs/operations.md, Health); the backend is reported by errors, not here."""
        accepting = self.service.accepting and not self._stopping
        return {"accepting": accepting, "replay_store": await self.replay.ping()}


async def run_gateway(settings: GatewaySettings) -> None:
    """Run until SIGINT or SIGTERM, then stop in order; SIGHUP re-reads the TLS certificate and key."""
    log.info("file descriptor limit: %d", raise_fd_limit())
    gateway = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload_tls, gateway)
    await gateway.start()
    try:
        await stop.wait()
    finally:
        log.info("stopping gateway: grace %d ms", settings.shutdown_grace_ms)
        await gateway.stop()
        log.info("gateway stopped")


def _reload_tls(gateway: Gateway) -> None:
    """SIGHUP: new connections get the certificate now in the files; a bad pair keeps the old one."""
    if gateway.tls is None:
        log.info("SIGHUP: no TLS certificate configured, nothing to re-read")
        return
    try:
        gateway.tls.reload()
    except (OSError, ssl.SSLError) as exc:
        log.error("SIGHUP: TLS certificate not re-read, the old one stays in use: %s", exc)
        return
    log.info("SIGHUP: TLS certificate re-read from %s", gateway.tls.cert_file)
