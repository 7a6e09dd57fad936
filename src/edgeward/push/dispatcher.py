"""The gateway's client of the backend's push stream (``edgeward.v1.Push/SubscribePush``, §5).

docs/push.md. One long-lived server stream per gateway; what arrives on it:

- ``ClientEvent``: published in the hub, which signs it once and queues it to the addressed streams;
- ``SessionInvalidation``: applied to the session cache first (``mark_revoked``, or
  ``mark_all_revoked_for_user`` when only ``user_id`` is set), so later requests of those sessions
  are refused at the edge without a backend call, then the matching streams end with
  ``session_revoked``.

The stream is re-established after any failure (a refused connection, the backend ending it, a
keepalive timeout, a message that cannot be applied) with capped exponential backoff and jitter,
so gateways that lost the backend together do not come back in lockstep. Each attempt uses a new
channel: gRPC's own reconnection backoff (up to two minutes) would otherwise add to ours.

Invalidations sent while the stream is down are lost: the push contract has no replay. What that
can cost is bounded twice. The session cache trusts a record for at most its TTL, so a command
from a session revoked during the gap is refused at most ``session_cache_ttl_ms`` after the
revocation. And every time the stream is established, the sessions that have open streams are
read again from the backend (``RevocableSessions.refresh``, which the session cache implements)
and the streams of those revoked meanwhile end with ``session_revoked``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from edgeward._pb import push_pb2
from edgeward.clock import now_ms
from edgeward.native.session_record import SessionRecord
from edgeward.push.hub import PushHub
from edgeward.push.resync import reread_sessions, stop_task
from edgeward.reasons import Reason

__all__ = ("Backoff", "EventRecorder", "PushDispatcher", "RevocableSessions", "default_gateway_id")

log = logging.getLogger(__name__)

_METHOD = "/edgeward.v1.Push/SubscribePush"


class RevocableSessions(Protocol):
    """What the dispatcher needs of the gateway's sessions (``SessionCache`` is one)."""

    def mark_revoked(self, device_session_id: str, revoked_at_ms: int | None = None) -> bool:
        """Remember the session as revoked, so its requests are refused without a backend call."""
        ...

    def mark_all_revoked_for_user(self, user_id: str, revoked_at_ms: int | None = None) -> int:
        """Remember every known session of ``user_id`` as revoked; how many there were."""
        ...

    async def refresh(self, device_session_id: str) -> SessionRecord | None:
        """Read the session again from its source; None when unknown. ``Rejection`` when it cannot be read."""
        ...


class EventRecorder(Protocol):
    """Where client events are recorded for resumable streams (``EventHistory`` is one; docs/push.md)."""

    def append(
        self, user_id: str, device_session_id: str, event_id: str, event_type: str,
        payload: bytes, timestamp_ms: int, trace_id: str,
    ) -> None:
        """Record the event; never waits. Called before the event is published in the hub."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnection attempts: capped exponential with "equal jitter".

    Attempt ``n`` (from 0) waits a uniformly random time in ``[cap / 2, cap]`` where
    ``cap = min(max_ms, initial_ms * 2**n)``: never less than half the nominal delay, so a dead
    backend is not hammered, and spread over the other half, so gateways do not retry together.
    A ``max_ms`` below ``initial_ms`` is taken as ``initial_ms``.
    """

    initial_ms: float
    max_ms: float
    random: Callable[[], float] = random.random

    def delay_ms(self, attempt: int) -> float:
        cap = min(max(self.max_ms, self.initial_ms), self.initial_ms * 2.0 ** min(attempt, 64))
        return cap / 2 + self.random() * cap / 2


def default_gateway_id() -> str:
    """What the gateway calls itself to the backend (``SubscribePushRequest.gateway_id``): host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


class PushDispatcher:
    """Follows the backend's push stream for the life of the gateway: ``start()``, then ``close()``."""

    def __init__(
        self,
        target: str,
        hub: PushHub,
        sessions: RevocableSessions,
        backoff: Backoff,
        *,
        keepalive_ms: int,
        keepalive_timeout_ms: int,
        gateway_id: str | None = None,
        history: EventRecorder | None = None,
    ) -> None:
        self._target = target
        self._history = history
        self._hub = hub
        self._sessions = sessions
        self._backoff = backoff
        self._gateway_id = gateway_id or default_gateway_id()
        self._options: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
            # The stream is often quiet: without this, gRPC stops pinging after two pings
            # without data and a dead connection goes unnoticed.
            ("grpc.http2.max_pings_without_data", 0),
        ]
        self._task: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None
        self._established_at: float | None = None  # monotonic s; None while no stream is established
        self.connected = False
        self.connects = 0  # streams established
        self.reconnects = 0  # of those, the ones after the first
        self.events_received = 0
        self.invalidations = 0
        self.resync_failures = 0  # session reads that failed during a resync (the stream is kept)
        self.last_error = ""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="edgeward-push-dispatcher")

    async def close(self) -> None:
        """Stop following the stream and wait until its task and channel are gone."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        """For /readyz: reported, never gating (docs/push.md says why)."""
        return {"connected": self.connected, "reconnects": self.reconnects, "last_error": self.last_error}

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._follow()
                self.last_error = "the backend ended the push stream"
            except grpc.aio.AioRpcError as err:
                self.last_error = f"{err.code().name}: {err.details()}"
            except Exception as exc:  # a message we could not apply: reconnect rather than go deaf
                log.exception("push stream from %s failed", self._target)
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.connected = False
                await self._stop_resync()
            # A stream that stayed up for a whole backoff cap was a working connection: start the
            # sequence again. One that drops sooner (a flapping backend) keeps backing off.
            up_since = self._established_at
            if up_since is not None and time.monotonic() - up_since >= self._backoff.max_ms / 1000:
                attempt = 0
            delay = self._backoff.delay_ms(attempt) / 1000
            attempt += 1
            log.warning("push stream from %s is down (%s); retrying in %.2fs", self._target, self.last_error, delay)
            await asyncio.sleep(delay)

    async def _follow(self) -> None:
        """One stream, until it ends."""
        self._established_at = None
        async with grpc.aio.insecure_channel(self._target, options=self._options) as channel:
            call = channel.unary_stream(
                _METHOD,
                request_serializer=push_pb2.SubscribePushRequest.SerializeToString,
                response_deserializer=push_pb2.PushEvent.FromString,
            )(push_pb2.SubscribePushRequest(gateway_id=self._gateway_id))
            try:
                await call.initial_metadata()
                if not call.done():  # a call that failed to connect also "has" (empty) headers
                    self._established()
                async for event in call:
                    self._apply(event)
            finally:
                call.cancel()

    def _established(self) -> None:
        self._established_at = time.monotonic()
        self.connected = True
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        log.info("push stream from %s established (gateway id %s)", self._target, self._gateway_id)
        if len(self._hub):
            self._resync = asyncio.get_running_loop().create_task(self._resync_streams(), name="edgeward-push-resync")

    def _apply(self, event: push_pb2.PushEvent) -> None:
        self.events_received += 1
        kind = event.WhichOneof("event")
        if kind == "client_event":
            ce = event.client_event
            if not ce.user_id:
                log.warning("push event %r has no user_id: dropped", ce.event_id)
                return
            timestamp_ms = ce.timestamp_ms or now_ms()
            if self._history is not None:  # queued on the history's connection before the local publish
                self._history.append(
                    ce.user_id, ce.device_session_id, ce.event_id, ce.event_type, ce.payload_bytes,
                    timestamp_ms, ce.trace_id,
                )
            self._hub.publish(
                ce.user_id, ce.device_session_id, ce.event_id, ce.event_type, ce.payload_bytes,
                timestamp_ms, ce.trace_id,
            )
        elif kind == "session_invalidation":
            inv = event.session_invalidation
            revoked_at = inv.revoked_at_ms or None
            self.invalidations += 1
            # The cache first: once a stream has ended, the session's commands are refused too.
            if inv.device_session_id:
                self._sessions.mark_revoked(inv.device_session_id, revoked_at)
                self._hub.end_session(inv.device_session_id, Reason.SESSION_REVOKED)
            elif inv.user_id:
                self._sessions.mark_all_revoked_for_user(inv.user_id, revoked_at)
                self._hub.end_user(inv.user_id, Reason.SESSION_REVOKED)
            else:
                log.warning("push invalidation names neither a session nor a user: ignored")

    async def _resync_streams(self) -> None:
        """Read again the sessions that have open streams; end the streams of those revoked meanwhile."""
        await reread_sessions(self._hub.session_ids(), self._sessions.refresh, self._hub, self._count_resync_failure)

    def _count_resync_failure(self) -> None:
        self.resync_failures += 1

    async def _stop_resync(self) -> None:
        task, self._resync = self._resync, None
        await stop_task(task, "session resync")
