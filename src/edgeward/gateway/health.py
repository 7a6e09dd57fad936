"""``grpc.health.v1`` on the gRPC port, following the gateway's readiness (docs/operations.md, Health).

The status of the overall service ("") and of ``edgeward.v1.EdgeGateway`` is what ``/readyz``
answers: SERVING while the gateway accepts calls and its replay store takes reservations,
NOT_SERVING otherwise. A background task polls readiness every ``poll_ms`` rather than per health
check, so a load balancer probing often costs one Redis PING per interval, not one per probe.
Draining is pushed at once (``drain``) and is final: no later poll can turn it back to SERVING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as _health_aio  # type: ignore[attr-defined]  # absent from grpc-stubs

from edgeward.gateway.grpc_service import SERVICE_NAME

__all__ = ("HEALTH_SERVICE_NAME", "GatewayHealth")

log = logging.getLogger(__name__)

HEALTH_SERVICE_NAME = "grpc.health.v1.Health"
_SERVICES = ("", SERVICE_NAME)  # "" is the whole server, as gRPC's health protocol defines it
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Readiness = Callable[[], Awaitable[dict[str, bool]]]


class GatewayHealth:
    """The health servicer of one gateway and the task that keeps it in step with readiness."""

    def __init__(self, readiness: Readiness, *, poll_ms: int) -> None:
        self._readiness = readiness
        self._poll_s = poll_ms / 1000
        self._servicer: Any = _health_aio.HealthServicer()
        self._serving: bool | None = None  # unknown until the first poll
        self._task: asyncio.Task[None] | None = None
        self._draining: asyncio.Task[None] | None = None

    async def register(self, server: grpc.aio.Server) -> None:
        """Add the health service to ``server``, NOT_SERVING until ``start`` has polled readiness."""
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        self._serving = False
        for service in _SERVICES:
            await self._servicer.set(service, _NOT_SERVING)

    async def start(self) -> None:
        """Set the first status from readiness now, then keep it current in the background."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def refresh(self) -> None:
        """Poll readiness once; a readiness check that fails counts as not ready."""
        try:
            serving = all((await self._readiness()).values())
        except Exception:
            log.exception("readiness check failed: health reports NOT_SERVING")
            serving = False
        if serving != self._serving:
            self._serving = serving
            for service in _SERVICES:
                await self._servicer.set(service, _SERVING if serving else _NOT_SERVING)

    def drain(self) -> None:
        """NOT_SERVING for good, without waiting for the next poll (the gateway begins to drain)."""
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._servicer.enter_graceful_shutdown())

    async def close(self) -> None:
        """Report NOT_SERVING for good and stop polling."""
        self.drain()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._draining is not None:
            await self._draining

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            await self.refresh()
