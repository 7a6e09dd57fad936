"""The host's admin listener under a supervisor: one ``/metrics``, ``/readyz`` and ``/healthz`` for every worker.

Each worker serves its own admin listener on a private loopback port; this one, on
``EDGEWARD_ADMIN_HTTP_ADDR``, asks them at request time, so serving a request costs a worker
nothing more than before:

- ``/metrics``: every worker's page, parsed and summed sample by sample (counters, gauges,
  histogram buckets, sums and counts), plus the supervisor's own ``edgeward_workers{state}`` and
  ``edgeward_worker_restarts_total``. ``_created`` samples and ``process_start_time_seconds``
  are dropped: a sum of start times means nothing. The other ``process_*`` series sum to the
  host's workers (CPU seconds, RSS, open fds); ``edgeward_build_info`` counts the workers of each
  build. prometheus-client's multiprocess mode is not used: it cannot carry the
  gateway's scrape-time collectors.
- ``/readyz``: 200 when at least one worker is ready and every worker in service (not starting,
  not retiring) is; each worker's answer is in the body. A worker starting or retiring during a
  rolling restart does not make the host unready: the others serve.
- ``/healthz``: 200 while the supervisor runs, with the workers' count by state.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from edgeward import __version__
from edgeward.gateway.settings import GatewaySettings
from edgeward.protection.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from edgeward.runtime import ListenError

if TYPE_CHECKING:
    from edgeward.workers.supervisor import Supervisor

__all__ = ("AdminServer", "sum_metrics")


_START_TIMES = ("_created", "process_start_time_seconds")  # sample name endings that do not sum


def sum_metrics(pages: Iterable[str]) -> list[Metric]:
    """Sum Prometheus text pages sample by sample (same name and labels); start times dropped."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for page in pages:
        for family in text_string_to_metric_families(page):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                sums[family.name] = {}
            for sample in family.samples:
                if not sample.name.endswith(_START_TIMES):
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    sums[family.name][key] = sums[family.name].get(key, 0.0) + sample.value
    for name, metric in families.items():
        for (sample_name, labels), value in sums[name].items():
            metric.add_sample(sample_name, dict(labels), value)
    return list(families.values())


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


class AdminServer:
    """The supervisor's admin listener, guarded like a gateway's (docs/edge-protection.md §10)."""

    def __init__(self, supervisor: Supervisor, settings: GatewaySettings) -> None:
        self._supervisor = supervisor
        self._addr = settings.admin_http_addr
        self._guard = ConnectionGuard(
            ConnectionLimits(
                settings.http_header_timeout_ms / 1000,
                settings.http_idle_timeout_ms / 1000,
                max_connections=settings.admin_max_connections,
            )
        )
        self._idle_s = settings.http_idle_timeout_ms / 1000
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[self._guard.middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=self._idle_s)
        await self._runner.setup()
        site = GuardedSite(self._runner, self._addr.host, self._addr.port, self._guard)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError("admin HTTP", str(self._addr), exc) from None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _states(self) -> dict[str, int]:
        states = collections.Counter(w.state for w in self._supervisor.workers)
        return {state: states[state] for state in ("starting", "serving", "retiring")}

    async def _healthz(self, _request: web.Request) -> web.Response:
        body = {"status": "ok", "version": __version__, "workers": self._states()}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _readyz(self, _request: web.Request) -> web.Response:
        workers = list(self._supervisor.workers)
        answers = await asyncio.gather(*(self._supervisor.worker_ready(w) for w in workers))
        report: list[dict[str, Any]] = [
            {"pid": w.pid, "state": w.state, "admin_port": w.admin_port, "ready": a is not None, "readyz": a}
            for w, a in zip(workers, answers, strict=True)
        ]
        in_service = [r["ready"] for r in report if r["state"] == "serving"]
        ready = not self._supervisor.stopping and any(r["ready"] for r in report) and all(in_service)
        body = orjson.dumps({"ready": ready, "workers": report})
        return web.Response(body=body, status=200 if ready else 503, content_type="application/json")

    async def _metrics(self, _request: web.Request) -> web.Response:
        workers = list(self._supervisor.workers)
        pages = await asyncio.gather(*(self._supervisor.worker_get(w, "/metrics") for w in workers))
        metrics = sum_metrics(page.decode() for page in pages if page is not None)
        own = Metric("edgeward_workers", "Worker processes by state (starting, serving, retiring).", "gauge")
        for state, count in self._states().items():
            own.add_sample("edgeward_workers", {"state": state}, count)
        restarts = Metric("edgeward_worker_restarts", "Workers replaced after they died.", "counter")
        restarts.add_sample("edgeward_worker_restarts_total", {}, self._supervisor.restarts)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed([*metrics, own, restarts]))
        resp = web.Response(body=generate_latest(registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp
