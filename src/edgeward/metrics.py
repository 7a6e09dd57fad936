"""Prometheus metrics of one gateway instance.

Each Gateway gets its own registry (several can run in one process, as in tests); the admin
listener serves it at /metrics. Labels are bounded: rpc names and stable reason codes only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgeward import native

__all__ = ("GatewayMetrics",)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edgeward_requests",
            "Requests by RPC and outcome: 'ok' (a signed response) or the rejection reason code.",
            ("rpc", "outcome"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "edgeward_request_duration_seconds",
            "Time from request bytes to response bytes, rejections included.",
            ("rpc",),
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.backend_results = Counter(
            "edgeward_backend_results",
            "Forwarded commands by the backend's result code ('ok' or its stable error code).",
            ("result_code",),
            registry=self.registry,
        )
        self.session_fetches = Gauge(
            "edgeward_session_backend_fetches",
            "Session lookups that went to the backend since start (cache misses after single flight).",
            registry=self.registry,
        )
        self.native = Gauge(
            "edgeward_native_active",
            "1 when the concern runs its native (Cython) twin, 0 when its pure-Python twin.",
            ("concern",),
            registry=self.registry,
        )
        for concern, kind in native.load_all().items():
            self.native.labels(concern).set(1 if kind == "c" else 0)
        self.sessions_cached = Gauge(
            "edgeward_sessions_cached", "Device session records held in the cache.", registry=self.registry
        )
