"""Admin listener: liveness, readiness and Prometheus metrics.

``/healthz`` answers while the process runs and says which implementation is active
("native", "pure" or "mixed", and per concern whether its native twin is loaded);
``/readyz`` is 503 while draining or while the replay store cannot take reservations (the
gateway then rejects every request, since the replay store fails closed); it also reports, without
gating on it, the state of the backend push stream (docs/push.md says why); ``/metrics`` is the
instance's Prometheus registry. Bind it to a private address: it is not for clients.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeward import __version__
from edgeward.gateway.metrics import GatewayMetrics
from edgeward.native import loader

__all__ = ("make_admin_app",)

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]
Report = Callable[[], dict[str, Any]]


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def make_admin_app(
    metrics: GatewayMetrics, readiness: ReadinessCheck, report: Report | None = None
) -> web.Application:
    """``readiness`` gates /readyz (every check must be true); ``report`` adds informative members."""
    health = {
        "status": "ok",
        "version": __version__,
        "implementation": loader.implementation(),
        "native": {concern: kind == "c" for concern, kind in loader.load_all().items()},
    }
    body = orjson.dumps(health)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def readyz(_request: web.Request) -> web.Response:
        checks = await readiness()
        ready = all(checks.values())
        extra = report() if report is not None else {}
        return _json({"ready": ready, "checks": checks, **extra}, 200 if ready else 503)

    async def metrics_page(_request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
