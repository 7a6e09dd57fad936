"""Prometheus metrics of one gateway instance.

Each Gateway gets its own registry (several can run in one process, as in tests); the admin
listener serves it at /metrics. Labels are bounded: rpc names and stable reason codes only.

Push, session-cache and connection metrics are read at scrape time from plain int counters
(``watch_push``, ``watch_sessions``, ``watch_connections``), so delivering an event, filling the
cache or accepting a connection costs no metric update, and every scrape sees current values.
The registry also carries the process metrics (``process_*``: CPU seconds, RSS, open fds, start
time) and ``edgeward_build_info``. The two latency histograms of the request path, backend calls per
route and replay reservations, have their label children bound once (``backend_timers``), so an
observation is the ~1 µs ``observe`` and nothing more.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeward import __version__
from edgeward.native import loader

if TYPE_CHECKING:
    from edgeward.gateway.session_cache import SessionCache
    from edgeward.gateway.session_events import SessionEventConsumer
    from edgeward.gateway.session_source import RedisSessionSource
    from edgeward.protection.connections import ConnectionGuard
    from edgeward.push.dispatcher import PushDispatcher
    from edgeward.push.hub import PushHub

__all__ = ("GatewayMetrics",)

# Loopback backends answer in well under a millisecond; remote ones in tens; timeouts at seconds.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edgeward_requests",
            "Requests by RPC and outcome: 'ok' (a signed response) or the rejection reason code.",
            ("rpc", "outcome"),
            registry=self.registry,
        )
        self.grpc_web_requests = Counter(  # a subset of edgeward_requests: operators tell the transports apart
            "edgeward_grpc_web_requests",
            "Of edgeward_requests, those that came over gRPC-Web (docs/grpc-web.md), by RPC and outcome.",
            ("rpc", "outcome"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "edgeward_request_duration_seconds",
            "Time from request bytes to response bytes, rejections included.",
            ("rpc",),
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.backend_results = Counter(
            "edgeward_backend_results",
            "Forwarded commands by the backend's result code ('ok' or its stable error code).",
            ("result_code",),
            registry=self.registry,
        )
        self.backend_duration = Histogram(
            "edgeward_backend_request_duration_seconds",
            "Forwarded commands: time of the backend call, failures included, by route (its message type).",
            ("route",),
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.replay_duration = Histogram(
            "edgeward_replay_reservation_duration_seconds",
            "Time of one replay reservation in the replay store, refusals and failures included.",
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.native = Gauge(
            "edgeward_native_active",
            "1 when the concern runs its native (Cython) twin, 0 when its pure-Python twin.",
            ("concern",),
            registry=self.registry,
        )
        for concern, kind in loader.load_all().items():
            self.native.labels(concern).set(1 if kind == "c" else 0)
        Gauge(
            "edgeward_build_info",
            "Always 1; the labels say which edgeward, implementation and Python run.",
            ("version", "implementation", "python"),
            registry=self.registry,
        ).labels(__version__, loader.implementation(), platform.python_version()).set(1)
        ProcessCollector(registry=self.registry)

    def backend_timers(self, routes: Iterable[str]) -> dict[str, Histogram]:
        """The backend latency histogram's child per route, bound once (the label set is the route table)."""
        return {route: self.backend_duration.labels(route) for route in routes}

    def watch_sessions(self, cache: SessionCache) -> None:
        """Export the session cache's size and its fetches from the session source."""
        self.registry.register(_SessionCacheCollector(cache))

    def watch_push(self, hub: PushHub, dispatcher: PushDispatcher) -> None:
        """Export the push hub's and the dispatcher's counters."""
        self.registry.register(_PushCollector(hub, dispatcher))

    def watch_redis_sessions(self, source: RedisSessionSource, consumer: SessionEventConsumer) -> None:
        """Export the Redis session source's and its events consumer's counters (docs/sessions.md)."""
        self.registry.register(_RedisSessionsCollector(source, consumer))

    def watch_connections(self, guards: Mapping[str, ConnectionGuard]) -> None:
        """Export the HTTP listeners' connection counters, labelled by listener name."""
        self.registry.register(_ConnectionCollector(guards))


class _SessionCacheCollector(Collector):
    def __init__(self, cache: SessionCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "edgeward_session_backend_fetches",
            "Session lookups that went to the session source (cache misses after single flight).",
            value=self._cache.backend_fetches,
        )
        yield GaugeMetricFamily(
            "edgeward_sessions_cached", "Device session records held in the cache.", value=len(self._cache)
        )


class _ConnectionCollector(Collector):
    def __init__(self, guards: Mapping[str, ConnectionGuard]) -> None:
        self._guards = guards

    def collect(self) -> Iterator[Metric]:
        open_now = GaugeMetricFamily(
            "edgeward_http_connections", "Open HTTP connections, by listener.", labels=("listener",)
        )
        limit = GaugeMetricFamily(
            "edgeward_http_connections_limit",
            "Most HTTP connections a listener holds at once (its cap after the fd reserve).",
            labels=("listener",),
        )
        refused = CounterMetricFamily(
            "edgeward_http_connections_refused",
            "HTTP connections refused at accept, by listener and cap ('total' or 'per_ip').",
            labels=("listener", "cap"),
        )
        timeouts = CounterMetricFamily(
            "edgeward_http_connection_timeouts",
            "HTTP connections closed by a timeout, by listener and phase ('header' or 'idle').",
            labels=("listener", "phase"),
        )
        for name, guard in sorted(self._guards.items()):
            open_now.add_metric((name,), guard.open)
            limit.add_metric((name,), guard.limits.max_connections)
            for cap in ("total", "per_ip"):
                refused.add_metric((name, cap), guard.refused[cap])
            for phase in ("header", "idle"):
                timeouts.add_metric((name, phase), guard.timeouts[phase])
        yield from (open_now, limit, refused, timeouts)


class _RedisSessionsCollector(Collector):
    def __init__(self, source: RedisSessionSource, consumer: SessionEventConsumer) -> None:
        self._source = source
        self._consumer = consumer

    def collect(self) -> Iterator[Metric]:
        consumer = self._consumer
        yield CounterMetricFamily(
            "edgeward_session_source_fallbacks", "Session keys missing in Redis, answered by backend REST.",
            value=self._source.fallbacks,
        )
        yield GaugeMetricFamily(
            "edgeward_session_events_connected", "1 while the Redis session events stream is being read.",
            value=1 if consumer.connected else 0,
        )
        yield CounterMetricFamily(
            "edgeward_session_events_applied", "Session snapshots read from the Redis stream and applied.",
            value=consumer.applied,
        )
        yield CounterMetricFamily(
            "edgeward_session_events_malformed", "Redis stream entries that were not snapshots: skipped.",
            value=consumer.malformed,
        )
        yield CounterMetricFamily(
            "edgeward_session_events_reconnects", "Reads of the Redis session events stream re-established.",
            value=consumer.reconnects,
        )


class _PushCollector(Collector):
    def __init__(self, hub: PushHub, dispatcher: PushDispatcher) -> None:
        self._hub = hub
        self._dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        stats, dispatcher = self._hub.stats, self._dispatcher
        yield GaugeMetricFamily("edgeward_streams_open", "Open SubscribeEvents streams.", value=len(self._hub))
        ended = CounterMetricFamily(
            "edgeward_streams_ended",
            "SubscribeEvents streams ended, by reason ('cancelled': by the client).",
            labels=("reason",),
        )
        # slow_consumer is exported from the start, at 0, so an alert on its rate has a series to read.
        for reason in sorted({"slow_consumer", *stats.streams_ended}):
            ended.add_metric((reason,), stats.streams_ended[reason])
        yield ended
        yield CounterMetricFamily(
            "edgeward_events_published", "Client events received from the backend push stream.",
            value=stats.events_published,
        )
        yield CounterMetricFamily(
            "edgeward_events_signed", "Client events that reached a stream (each signed once).",
            value=stats.events_signed,
        )
        yield CounterMetricFamily(
            "edgeward_events_delivered", "Events written to streams (one per stream), server_time included.",
            value=stats.events_delivered,
        )
        yield GaugeMetricFamily(
            "edgeward_push_connected", "1 while the backend push stream is established.",
            value=1 if dispatcher.connected else 0,
        )
        yield CounterMetricFamily(
            "edgeward_push_reconnects", "Backend push streams established again after a loss.",
            value=dispatcher.reconnects,
        )
        yield CounterMetricFamily(
            "edgeward_push_invalidations", "Session invalidations received and applied.",
            value=dispatcher.invalidations,
        )
